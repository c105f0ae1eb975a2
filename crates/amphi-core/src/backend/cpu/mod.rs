//! The CPU backend. Tensors are candle-core tensors; the ops that carry the time (linear layers,
//! attention, layer norm) run amphi's own kernels on their values:
//!
//! - `gemm.rs`: the matrix multiply on weights packed once at load, with the bias and
//!   activation applied to each row of results once its block is done; one microkernel per
//!   target in its own file
//!   (`simd128.rs` for the wasm artifact, `x86.rs` chosen at run time, `portable.rs`);
//! - `attention.rs`: attention per (sequence, head) on the packed multiply, no transposes;
//! - `conv.rs`: depthwise convolution over NHWC rows, vectorized over channels;
//! - `math.rs`: vectorizable `exp`/`erf`/`tanh`, softmax and layer norm.
//!
//! Natively the multiply and attention spread over rayon's threads (`RAYON_NUM_THREADS`); wasm32
//! has one thread.

mod attend;
mod attention;
mod conv;
mod decoder;
mod gemm;
mod math;
// Everywhere but the artifact: x86-64 CPUs without AVX2 and other architectures.
#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
mod portable;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
mod simd128;
#[cfg(target_arch = "x86_64")]
mod x86;

use std::ops::Deref;

use candle_core::{CpuStorage, D, DType, Device, Storage, StorageRef, Tensor};

use super::{Activation, AttentionSpec, Backend, BatchShape, Conv2d, KvCache, Reduce, RopeTable};
use crate::error::{Error, Result};
use crate::interrupt;
use crate::profile::timed;
pub(crate) use decoder::CpuCache;
pub(crate) use gemm::Packed;
use gemm::{Rows, gemm};
use math::Epilogue;
pub(crate) use math::exp;

/// Runs one op, timed while profiling ([`timed`]); first asks the host whether to stop the call
/// ([`interrupt::check`]), so every CPU op is a point where a deadline can end it.
fn op<T>(name: &'static str, f: impl FnOnce() -> T) -> Result<T> {
    interrupt::check()?;
    Ok(timed(name, f))
}

/// The CPU backend. Stateless: tensors carry their own storage.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Cpu;

/// The matrix-multiply microkernel this CPU runs (`simd128 2x16`, `avx2+fma 6x16`, …).
pub(crate) fn kernel_name() -> &'static str {
    gemm::kernel().name
}

// The microbenchmarks behind `crate::probe`, per target.
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) use simd128::peak;
#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
pub(crate) fn peak_flops_per_iter() -> u64 {
    simd128::PEAK_FLOPS_PER_ITER
}

#[cfg(target_arch = "x86_64")]
pub(crate) fn peak(iters: u32) -> f32 {
    x86::peak(iters).unwrap_or_else(|| portable::peak(iters))
}
#[cfg(target_arch = "x86_64")]
pub(crate) fn peak_flops_per_iter() -> u64 {
    x86::peak_flops_per_iter().unwrap_or(portable::PEAK_FLOPS_PER_ITER)
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
pub(crate) use portable::peak;
#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
pub(crate) fn peak_flops_per_iter() -> u64 {
    portable::PEAK_FLOPS_PER_ITER
}

/// See [`crate::probe::matmul`].
pub(crate) fn matmul_probe(m: usize, n: usize, k: usize, iters: u32) -> f32 {
    let a: Vec<f32> = (0..m * k).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
    let w: Vec<f32> = (0..n * k).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
    let packed = Packed::from_weight(&w, n, k);
    let mut c = vec![0f32; m * n];
    let mut sum = 0.0;
    for _ in 0..iters {
        gemm(
            Rows {
                data: &a,
                m,
                lda: k,
            },
            &packed,
            &mut c,
            n,
            &Epilogue::NONE,
        );
        sum += c[(m * n) / 2];
    }
    sum
}

/// The values of a contiguous f32 CPU tensor, borrowed.
struct Values<'a> {
    storage: StorageRef<'a>,
    start: usize,
    end: usize,
}

fn values(t: &Tensor) -> Result<Values<'_>> {
    let (storage, layout) = t.storage_and_layout();
    match (&*storage, layout.contiguous_offsets()) {
        (Storage::Cpu(CpuStorage::F32(_)), Some((start, end))) => Ok(Values {
            storage,
            start,
            end,
        }),
        _ => Err(Error::Backend {
            message: format!("CPU kernels take contiguous f32 tensors, not {t:?}"),
        }),
    }
}

impl Deref for Values<'_> {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        match &*self.storage {
            Storage::Cpu(CpuStorage::F32(v)) => &v[self.start..self.end],
            _ => &[],
        }
    }
}

fn dims2(what: &str, t: &Tensor) -> Result<(usize, usize)> {
    match *t.dims() {
        [r, c] => Ok((r, c)),
        [c] => Ok((1, c)),
        ref d => Err(Error::Backend {
            message: format!("{what}: a matrix, not shape {d:?}"),
        }),
    }
}

fn matrix(data: Vec<f32>, rows: usize, cols: usize) -> Result<Tensor> {
    Ok(Tensor::from_vec(data, (rows, cols), &Device::Cpu)?)
}

impl Backend for Cpu {
    type Tensor = Tensor;
    type Cache = CpuCache;
    type Weight = Packed;

    fn upload(&self, data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
    }

    /// Packed for the matrix multiply; the unpacked values are dropped.
    fn upload_weight(&self, data: Vec<f32>, out: usize, inp: usize) -> Result<Packed> {
        if data.len() != out * inp {
            return Err(Error::Backend {
                message: format!("weight: {} values for [{out}, {inp}]", data.len()),
            });
        }
        Ok(Packed::from_weight(&data, out, inp))
    }

    fn activations(&self, data: Vec<f32>, rows: usize, cols: usize) -> Result<Tensor> {
        if data.len() != rows * cols {
            return Err(Error::Backend {
                message: format!("activations: {} values for [{rows}, {cols}]", data.len()),
            });
        }
        matrix(data, rows, cols)
    }

    fn add(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        Ok(op("add", || a.add(b))??)
    }

    fn embed(
        &self,
        [word, position, token_type]: [&Tensor; 3],
        ids: &[u32],
        positions: &[u32],
        type_ids: &[u32],
        shape: BatchShape,
    ) -> Result<Tensor> {
        let n = shape.tokens();
        if ids.len() != n || type_ids.len() != n || positions.len() != n {
            return Err(Error::Backend {
                message: format!("embed: {} ids for {n} positions", ids.len()),
            });
        }
        let (vocab, hidden) = dims2("embed", word)?;
        let (position_rows, position_width) = dims2("embed", position)?;
        let (types, type_width) = dims2("embed", token_type)?;
        if position_width != hidden || type_width != hidden {
            return Err(Error::Backend {
                message: format!(
                    "embed: tables of widths {hidden}, {position_width} and {type_width}"
                ),
            });
        }
        if ids.iter().any(|&i| i as usize >= vocab)
            || type_ids.iter().any(|&i| i as usize >= types)
            || positions.iter().any(|&i| i as usize >= position_rows)
        {
            return Err(Error::invalid_input(
                "a token id is outside the embedding table",
            ));
        }
        let (word, position, token_type) = (values(word)?, values(position)?, values(token_type)?);
        // Row by row, in candle's order of the sums before ((word + type) + position); candle's
        // broadcast add of the positions over a batch took 5 % of a 32×128 embedding.
        let mut out = Vec::with_capacity(n * hidden);
        op("embed", || {
            fn row(table: &[f32], i: usize, hidden: usize) -> &[f32] {
                &table[i * hidden..][..hidden]
            }
            for ((&id, &ty), &at) in ids.iter().zip(type_ids).zip(positions) {
                let (w, y) = (
                    row(&word, id as usize, hidden),
                    row(&token_type, ty as usize, hidden),
                );
                let p = row(&position, at as usize, hidden);
                out.extend(w.iter().zip(y).zip(p).map(|((w, y), p)| (w + y) + p));
            }
        })?;
        matrix(out, n, hidden)
    }

    fn linear(
        &self,
        x: &Tensor,
        w: &Packed,
        b: Option<&Tensor>,
        act: Activation,
    ) -> Result<Tensor> {
        let (m, k) = dims2("linear", x)?;
        let n = w.n();
        if k != w.k() || b.is_some_and(|b| b.elem_count() != n) {
            return Err(Error::Backend {
                message: format!("linear: [{m}, {k}] by a [{n}, {}] weight", w.k()),
            });
        }
        // A view (the pooler's first token) is copied; everything else is already dense.
        let x = x.contiguous()?;
        let xs = values(&x)?;
        let bias = b.map(values).transpose()?;
        let mut out = vec![0f32; m * n];
        op("matmul", || {
            let ep = Epilogue {
                alpha: 1.0,
                bias: bias.as_deref(),
                act,
            };
            gemm(
                Rows {
                    data: &xs,
                    m,
                    lda: k,
                },
                w,
                &mut out,
                n,
                &ep,
            )
        })?;
        matrix(out, m, n)
    }

    fn layer_norm(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        let (rows, cols) = dims2("layer_norm", x)?;
        let shapes_agree = residual.is_none_or(|r| r.elem_count() == rows * cols)
            && gamma.elem_count() == cols
            && beta.elem_count() == cols;
        if !shapes_agree {
            return Err(Error::Backend {
                message: format!("layer_norm: [{rows}, {cols}] with mismatched operands"),
            });
        }
        let (xs, gamma, beta) = (values(x)?, values(gamma)?, values(beta)?);
        let residual = residual.map(values).transpose()?;
        let mut out = vec![0f32; rows * cols];
        op("layer_norm", || {
            for (i, o) in out.chunks_exact_mut(cols).enumerate() {
                let r = residual.as_deref().map(|r| &r[i * cols..][..cols]);
                math::layer_norm_row(&xs[i * cols..][..cols], r, &gamma, &beta, eps as f32, o);
            }
        })?;
        matrix(out, rows, cols)
    }

    fn key_mask(&self, mask: &[u32], shape: BatchShape) -> Result<Tensor> {
        let data: Vec<f32> = mask
            .iter()
            .map(|&m| if m != 0 { 1.0 } else { 0.0 })
            .collect();
        Ok(Tensor::from_vec(
            data,
            (shape.batch, shape.seq),
            &Device::Cpu,
        )?)
    }

    fn attention(
        &self,
        qkv: &Tensor,
        key_mask: &Tensor,
        shape: BatchShape,
        heads: usize,
    ) -> Result<Tensor> {
        let BatchShape { batch, seq } = shape;
        let (rows, cols) = dims2("attention", qkv)?;
        let hidden = cols / 3;
        if rows != batch * seq
            || cols % 3 != 0
            || heads == 0
            || hidden % heads != 0
            || key_mask.elem_count() != rows
        {
            return Err(Error::Backend {
                message: format!("attention: [{rows}, {cols}] for {batch}x{seq}, {heads} heads"),
            });
        }
        let (qkv, mask) = (values(qkv)?, values(key_mask)?);
        let mut out = vec![0f32; rows * hidden];
        op("attention", || {
            attention::attention(&qkv, &mask, (batch, seq), heads, &mut out)
        })?;
        matrix(out, rows, hidden)
    }

    fn attend(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        key_mask: Option<&Tensor>,
        spec: &AttentionSpec,
    ) -> Result<Tensor> {
        let rows = spec.batch * spec.keys;
        for (what, t) in [("keys", k), ("values", v)] {
            if dims2("attend", t)? != (rows, spec.kv_width()) {
                return Err(Error::Backend {
                    message: format!("attend: {what} {:?} for {spec:?}", t.dims()),
                });
            }
        }
        let (k, v) = (values(k)?, values(v)?);
        let kv = attend::Kv {
            k: &k,
            v: &v,
            stride: spec.keys,
        };
        attend_over(q, kv, key_mask, spec)
    }

    fn kv_cache(&self, batch: usize, width: usize, capacity: usize) -> Result<CpuCache> {
        CpuCache::new(batch, width, capacity)
    }

    fn kv_append(&self, cache: &mut CpuCache, k: &Tensor, v: &Tensor) -> Result<()> {
        let (rows, width) = dims2("kv_append", k)?;
        if dims2("kv_append", v)? != (rows, width)
            || width != cache.width
            || rows % cache.batch != 0
        {
            return Err(Error::Backend {
                message: format!(
                    "kv_append: [{rows}, {width}] to a cache of {} sequences × {}",
                    cache.batch, cache.width
                ),
            });
        }
        let (k, v) = (values(k)?, values(v)?);
        op("kv_append", || cache.append(&k, &v, rows / cache.batch))
    }

    fn attend_cached(
        &self,
        q: &Tensor,
        cache: &CpuCache,
        key_mask: Option<&Tensor>,
        spec: &AttentionSpec,
    ) -> Result<Tensor> {
        if spec.keys != cache.len() || spec.batch != cache.batch || spec.kv_width() != cache.width {
            return Err(Error::Backend {
                message: format!(
                    "attend_cached: {spec:?} over {} positions of {} sequences × {}",
                    cache.len(),
                    cache.batch,
                    cache.width
                ),
            });
        }
        let kv = attend::Kv {
            k: &cache.k,
            v: &cache.v,
            stride: cache.capacity,
        };
        attend_over(q, kv, key_mask, spec)
    }

    fn rope(&self, x: &Tensor, table: &RopeTable, heads: usize) -> Result<Tensor> {
        let (rows, cols) = dims2("rope", x)?;
        let rot = table.rotary_dim;
        if heads == 0
            || cols % heads != 0
            || !rot.is_multiple_of(2)
            || rot > cols / heads
            || table.rows != rows
            || table.cos_sin.len() != rows * rot
        {
            return Err(Error::Backend {
                message: format!(
                    "rope: [{rows}, {cols}] in {heads} heads by a table of {} rows × {rot}",
                    table.rows
                ),
            });
        }
        let mut out = values(x)?.to_vec();
        op("rope", || decoder::rope(&mut out, table, heads))?;
        matrix(out, rows, cols)
    }

    fn rms_norm(&self, x: &Tensor, gamma: &Tensor, eps: f64) -> Result<Tensor> {
        let (rows, cols) = dims2("rms_norm", x)?;
        let group = gamma.elem_count();
        if group == 0 || cols % group != 0 {
            return Err(Error::Backend {
                message: format!("rms_norm: [{rows}, {cols}] in groups of {group}"),
            });
        }
        let (xs, gamma) = (values(x)?, values(gamma)?);
        let out = op("rms_norm", || decoder::rms_norm(&xs, &gamma, eps as f32))?;
        matrix(out, rows, cols)
    }

    fn gated(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        let (rows, cols) = dims2("gated", x)?;
        if cols % 2 != 0 {
            return Err(Error::Backend {
                message: format!("gated: [{rows}, {cols}] is not a gate and an up projection"),
            });
        }
        let xs = values(x)?;
        let out = op("gated", || decoder::gated(&xs, cols / 2, act))?;
        matrix(out, rows, cols / 2)
    }

    fn mul(&self, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        if a.dims() != b.dims() {
            return Err(Error::Backend {
                message: format!("mul: {:?} and {:?}", a.dims(), b.dims()),
            });
        }
        Ok(op("mul", || a.mul(b))??)
    }

    fn scale(&self, x: &Tensor, s: f32) -> Result<Tensor> {
        Ok(op("scale", || x.affine(f64::from(s), 0.0))??)
    }

    fn gather(&self, table: &Tensor, ids: &[u32]) -> Result<Tensor> {
        let (rows, cols) = dims2("gather", table)?;
        if ids.iter().any(|&i| i as usize >= rows) {
            return Err(Error::invalid_input(
                "a token id is outside the embedding table",
            ));
        }
        let t = values(table)?;
        let out = op("gather", || decoder::gather(&t, cols, ids))?;
        matrix(out, ids.len(), cols)
    }

    fn depthwise(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        conv: Conv2d,
        act: Activation,
    ) -> Result<Tensor> {
        let (rows, c) = dims2("depthwise", x)?;
        let k = conv.kernel;
        if !conv.is_valid()
            || rows != conv.input.pixels()
            || w.elem_count() != k * k * c
            || b.elem_count() != c
        {
            return Err(Error::Backend {
                message: format!(
                    "depthwise: [{rows}, {c}] as {:?}, {k}x{k} weight of {} values, bias of {}",
                    conv.input,
                    w.elem_count(),
                    b.elem_count()
                ),
            });
        }
        let (xs, ws, bs) = (values(x)?, values(w)?, values(b)?);
        let out_rows = conv.output().pixels();
        let mut out = vec![0f32; out_rows * c];
        op("depthwise", || {
            conv::depthwise(&xs, &ws, &bs, conv, act, &mut out)
        })?;
        matrix(out, out_rows, c)
    }

    fn reduce(
        &self,
        x: &Tensor,
        key_mask: &Tensor,
        shape: BatchShape,
        how: Reduce,
    ) -> Result<Tensor> {
        op("pool", || -> Result<Tensor> {
            let hidden = x.dim(1)?;
            let x = x.reshape((shape.batch, shape.seq, hidden))?;
            let pooled = match how {
                Reduce::First => x.narrow(1, 0, 1)?.squeeze(1)?,
                Reduce::MaskedMean => {
                    let mask = key_mask.unsqueeze(2)?;
                    let sum = x.broadcast_mul(&mask)?.sum(1)?;
                    let count = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                    sum.broadcast_div(&count)?
                }
            };
            Ok(pooled)
        })?
    }

    fn l2_normalize(&self, x: &Tensor) -> Result<Tensor> {
        let norm = x
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        Ok(x.broadcast_div(&norm)?)
    }

    fn read(&self, x: &Tensor) -> Result<Vec<f32>> {
        Ok(x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }
}

/// [`Backend::attend`] over keys and values in `kv`, after checking the queries and mask.
fn attend_over(
    q: &Tensor,
    kv: attend::Kv<'_>,
    key_mask: Option<&Tensor>,
    spec: &AttentionSpec,
) -> Result<Tensor> {
    let rows = spec.batch * spec.queries;
    let shapes_agree = spec.is_valid()
        && dims2("attend", q)? == (rows, spec.q_width())
        && key_mask.is_none_or(|m| m.elem_count() == spec.batch * spec.keys);
    if !shapes_agree {
        return Err(Error::Backend {
            message: format!("attend: queries {:?} for {spec:?}", q.dims()),
        });
    }
    let qs = values(q)?;
    let mask = key_mask.map(values).transpose()?;
    let mut out = vec![0f32; rows * spec.q_width()];
    op("attention", || {
        attend::attend(&qs, kv, mask.as_deref(), spec, &mut out)
    })?;
    matrix(out, rows, spec.q_width())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::tests::random;

    /// Ids outside the embedding tables are refused, as the GPU backend refuses them.
    #[test]
    fn embed_refuses_ids_outside_its_tables() {
        let (vocab, positions, types, hidden) = (50, 20, 2, 70);
        let table = |rows: usize, seed| {
            Cpu.upload(random(rows * hidden, seed), &[rows, hidden])
                .expect("table")
        };
        let (word, pos, tt) = (table(vocab, 1), table(positions, 2), table(types, 3));
        let shape = BatchShape { batch: 3, seq: 11 };
        let ids: Vec<u32> = (0..shape.tokens() as u32)
            .map(|i| (i * 7) % vocab as u32)
            .collect();
        let type_ids: Vec<u32> = (0..shape.tokens() as u32).map(|i| i % 2).collect();
        assert!(
            Cpu.embed(
                [&word, &pos, &tt],
                &ids,
                &shape.positions(),
                &type_ids,
                shape
            )
            .is_ok(),
            "ids inside the tables are embedded"
        );
        assert!(
            Cpu.embed(
                [&word, &pos, &tt],
                &[vocab as u32; 33],
                &shape.positions(),
                &type_ids,
                shape
            )
            .is_err(),
            "an id outside the table is refused on the CPU"
        );
        assert!(
            Cpu.embed(
                [&word, &pos, &tt],
                &ids,
                &shape.positions(),
                &[types as u32; 33],
                shape
            )
            .is_err(),
            "a token type outside the table is refused on the CPU"
        );
        let long = BatchShape {
            batch: 1,
            seq: positions + 1,
        };
        assert!(
            Cpu.embed(
                [&word, &pos, &tt],
                &[0; 21],
                &long.positions(),
                &[0; 21],
                long
            )
            .is_err(),
            "a sequence longer than the position table is refused on the CPU"
        );
    }
}
