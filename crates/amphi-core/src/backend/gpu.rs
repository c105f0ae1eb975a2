//! GPU backend: each op is one or a few WGSL dispatches (`kernels/*.wgsl`) through the narrow
//! [`GpuHost`] interface, so the same kernels run natively on wgpu, in the serverless host and
//! in browsers. Weights are uploaded once; intermediate buffers come from a pool keyed by size
//! and return to it when their tensor is dropped; only [`Backend::read`] reads back. The
//! decoder's ops live in `gpu/attend.rs` (attention, key/value caches) and `gpu/ops.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use amphi_gpu::{BufferId, GpuError, GpuHost, PipelineId, Readback};

use super::{
    Activation, AttentionSpec, Backend, BatchShape, Conv2d, Fetched, Reduce, RopeTable, f32s,
};
use crate::device::Precision;
use crate::error::{Error, Result};

mod attend;
mod ops;

pub(crate) use attend::GpuCache;

/// A kernel's source: a precision prelude (`f32.wgsl` or `f16.wgsl`: the `WElem` and `Mul`
/// aliases, and `enable f16;`, which must come first), `common.wgsl`, then the kernel's file.
macro_rules! kernel {
    ($precision:literal, $file:literal) => {
        concat!(
            include_str!(concat!("kernels/", $precision, ".wgsl")),
            "\n",
            include_str!("kernels/common.wgsl"),
            "\n",
            include_str!(concat!("kernels/", $file, ".wgsl"))
        )
    };
}

/// The f32 kernels: (name, entry point, source). Each file's entry point is named like it.
const KERNELS: [(&str, &str, &str); 16] = [
    ("add", "add", kernel!("f32", "add")),
    ("depthwise", "depthwise", kernel!("f32", "depthwise")),
    ("matmul", "matmul", kernel!("f32", "matmul")),
    ("attention", "attention", kernel!("f32", "attention")),
    ("layer_norm", "layer_norm", kernel!("f32", "layer_norm")),
    ("embed", "embed", kernel!("f32", "embed")),
    ("pool", "pool", kernel!("f32", "pool")),
    (
        "l2_normalize",
        "l2_normalize",
        kernel!("f32", "l2_normalize"),
    ),
    ("attend", "attend", kernel!("f32", "attend")),
    ("copy_rows", "copy_rows", kernel!("f32", "copy_rows")),
    ("rope", "rope", kernel!("f32", "rope")),
    ("rms_norm", "rms_norm", kernel!("f32", "rms_norm")),
    ("gated", "gated", kernel!("f32", "gated")),
    ("mul", "mul", kernel!("f32", "mul")),
    ("scale", "scale", kernel!("f32", "scale")),
    ("gather", "gather", kernel!("f32", "gather")),
];

/// The kernels that read f16 weights, compiled only on adapters with `shader-f16`.
const F16_KERNELS: [(&str, &str, &str); 3] = [
    ("matmul_f16", "matmul", kernel!("f16", "matmul")),
    ("embed_f16", "embed", kernel!("f16", "embed")),
    ("gather_f16", "gather", kernel!("f16", "gather")),
];

/// Longest sequence the attention kernel holds in workgroup memory.
const MAX_SEQ: usize = 512;

impl From<GpuError> for Error {
    fn from(e: GpuError) -> Self {
        match e {
            GpuError::Unavailable(reason) => Error::DeviceUnavailable {
                device: "gpu".to_owned(),
                reason,
            },
            other => Error::Backend {
                message: other.to_string(),
            },
        }
    }
}

/// Buffers of dropped tensors, by size, ready for reuse.
struct Pool {
    host: Arc<dyn GpuHost>,
    free: Mutex<HashMap<u64, Vec<BufferId>>>,
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Ok(free) = self.free.get_mut() {
            for id in free.drain().flat_map(|(_, ids)| ids) {
                self.host.destroy_buffer(id);
            }
        }
    }
}

/// A buffer that goes back to the pool when the last tensor using it is dropped.
struct Buffer {
    id: BufferId,
    bytes: u64,
    pool: Arc<Pool>,
}

impl Drop for Buffer {
    fn drop(&mut self) {
        match self.pool.free.lock() {
            Ok(mut free) => free.entry(self.bytes).or_default().push(self.id),
            Err(_) => self.pool.host.destroy_buffer(self.id),
        }
    }
}

/// A row-major `[rows, cols]` tensor in a GPU buffer: f32, or f16 for weight matrices of an
/// f16 model.
#[derive(Clone)]
pub(crate) struct GpuTensor {
    buffer: Arc<Buffer>,
    rows: usize,
    cols: usize,
    f16: bool,
}

impl GpuTensor {
    fn id(&self) -> BufferId {
        self.buffer.id
    }
}

/// The GPU backend over a host's GPU interface.
#[derive(Clone)]
pub(crate) struct Gpu {
    pool: Arc<Pool>,
    pipelines: HashMap<&'static str, PipelineId>,
    /// Weight matrices are stored as f16.
    f16: bool,
}

impl std::fmt::Debug for Gpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gpu")
            .field("adapter", &self.pool.host.info().name)
            .finish_non_exhaustive()
    }
}

/// Packs kernel parameters (u32 and f32 fields, 4 bytes each) for the uniform at binding 0.
fn params(fields: &[u32]) -> Vec<u8> {
    fields.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn dim(n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| Error::Backend {
        message: format!("dimension {n} is too large for the GPU"),
    })
}

fn groups(n: usize, size: usize) -> Result<u32> {
    dim(n.div_ceil(size))
}

impl Gpu {
    /// Compiles the kernels on `host`; f16 weights when asked for and the adapter has
    /// `shader-f16`.
    pub(crate) fn new(host: Arc<dyn GpuHost>, precision: Precision) -> Result<Self> {
        let f16 = precision == Precision::F16 && host.info().shader_f16;
        let mut pipelines = HashMap::new();
        let f16_kernels = if f16 { &F16_KERNELS[..] } else { &[] };
        for &(name, entry, source) in KERNELS.iter().chain(f16_kernels) {
            pipelines.insert(name, host.create_pipeline(source, entry)?);
        }
        Ok(Self {
            pool: Arc::new(Pool {
                host,
                free: Mutex::default(),
            }),
            pipelines,
            f16,
        })
    }

    /// The precision weight matrices are stored in.
    pub(crate) fn precision(&self) -> Precision {
        if self.f16 {
            Precision::F16
        } else {
            Precision::F32
        }
    }

    /// The adapter's name.
    pub(crate) fn adapter(&self) -> &str {
        &self.pool.host.info().name
    }

    fn host(&self) -> &dyn GpuHost {
        &*self.pool.host
    }

    fn alloc(&self, rows: usize, cols: usize) -> Result<GpuTensor> {
        self.alloc_typed(rows, cols, false)
    }

    fn alloc_typed(&self, rows: usize, cols: usize, f16: bool) -> Result<GpuTensor> {
        let size = if f16 { 2 } else { 4 };
        let bytes = (rows * cols * size).next_multiple_of(4).max(4) as u64;
        let reused = self
            .pool
            .free
            .lock()
            .ok()
            .and_then(|mut free| free.get_mut(&bytes).and_then(Vec::pop));
        let id = match reused {
            Some(id) => id,
            None => self.host().create_buffer(bytes)?,
        };
        Ok(GpuTensor {
            buffer: Arc::new(Buffer {
                id,
                bytes,
                pool: self.pool.clone(),
            }),
            rows,
            cols,
            f16,
        })
    }

    fn upload_bytes(&self, bytes: &[u8], rows: usize, cols: usize) -> Result<GpuTensor> {
        let t = self.alloc(rows, cols)?;
        self.host().write_buffer(t.id(), 0, bytes)?;
        Ok(t)
    }

    /// Uploads a weight matrix as f16 (padded with a zero to whole 4-byte words).
    fn upload_f16(&self, data: &[f32], rows: usize, cols: usize) -> Result<GpuTensor> {
        let mut bytes: Vec<u8> = data
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        bytes.resize(bytes.len().next_multiple_of(4), 0);
        let t = self.alloc_typed(rows, cols, true)?;
        self.host().write_buffer(t.id(), 0, &bytes)?;
        Ok(t)
    }

    fn run(
        &self,
        kernel: &str,
        fields: &[u32],
        buffers: &[BufferId],
        workgroups: [u32; 3],
    ) -> Result<()> {
        let pipeline = self.pipelines.get(kernel).ok_or_else(|| Error::Backend {
            message: format!("no kernel {kernel}"),
        })?;
        Ok(self
            .host()
            .dispatch(*pipeline, &params(fields), buffers, workgroups)?)
    }
}

/// The code of an activation in `activate()` (`kernels/common.wgsl`).
fn act_code(act: Activation) -> u32 {
    match act {
        Activation::None => 0,
        Activation::GeluErf => 1,
        Activation::GeluTanh => 2,
        Activation::Relu => 3,
        Activation::Tanh => 4,
        Activation::Relu6 => 5,
        Activation::Silu => 6,
    }
}

/// Rows of 65,535 workgroups of 256 invocations for `n` invocations (the element-wise kernels).
fn elementwise_groups(n: usize) -> Result<[u32; 3]> {
    let wgs = n.div_ceil(256).max(1);
    Ok([dim(wgs.min(65_535))?, dim(wgs.div_ceil(65_535))?, 1])
}

/// `workgroups` workgroups (one per row or group) in rows of at most 65,535, `z` deep: the
/// kernel's index is `wid.x + wid.y * num_workgroups.x`.
fn row_groups(workgroups: usize, z: u32) -> Result<[u32; 3]> {
    let n = workgroups.max(1);
    Ok([dim(n.min(65_535))?, dim(n.div_ceil(65_535))?, z])
}

fn check_cols(what: &str, t: &GpuTensor, cols: usize) -> Result<()> {
    if t.cols != cols {
        return Err(Error::Backend {
            message: format!("{what}: {} columns, expected {cols}", t.cols),
        });
    }
    Ok(())
}

impl Backend for Gpu {
    type Tensor = GpuTensor;
    type Cache = GpuCache;
    type Weight = GpuTensor;

    /// Weight matrices (2-D: linear weights and embedding tables) of an f16 model are stored
    /// as f16; vectors (biases, norms) stay f32.
    fn upload(&self, data: Vec<f32>, shape: &[usize]) -> Result<GpuTensor> {
        let (rows, cols) = match *shape {
            [n] => (1, n),
            [r, c] if self.f16 => return self.upload_f16(&data, r, c),
            [r, c] => (r, c),
            _ => {
                return Err(Error::Backend {
                    message: format!("GPU tensors are 1-D or 2-D, not {shape:?}"),
                });
            }
        };
        self.upload_bytes(bytemuck::cast_slice(&data), rows, cols)
    }

    fn upload_weight(&self, data: Vec<f32>, out: usize, inp: usize) -> Result<GpuTensor> {
        self.upload(data, &[out, inp])
    }

    fn activations(&self, data: Vec<f32>, rows: usize, cols: usize) -> Result<GpuTensor> {
        if data.len() != rows * cols {
            return Err(Error::Backend {
                message: format!("activations: {} values for [{rows}, {cols}]", data.len()),
            });
        }
        self.upload_bytes(bytemuck::cast_slice(&data), rows, cols)
    }

    fn add(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        if (a.rows, a.cols) != (b.rows, b.cols) || a.f16 || b.f16 {
            return Err(Error::Backend {
                message: format!("add: [{}, {}] and [{}, {}]", a.rows, a.cols, b.rows, b.cols),
            });
        }
        let n = a.rows * a.cols;
        let out = self.alloc(a.rows, a.cols)?;
        let wgs = n.div_ceil(256).max(1);
        let (x, y) = (wgs.min(65_535), wgs.div_ceil(65_535));
        self.run(
            "add",
            &[dim(n)?, 0],
            &[a.id(), b.id(), out.id()],
            [dim(x)?, dim(y)?, 1],
        )?;
        Ok(out)
    }

    fn embed(
        &self,
        [word, position, token_type]: [&GpuTensor; 3],
        ids: &[u32],
        positions: &[u32],
        type_ids: &[u32],
        shape: BatchShape,
    ) -> Result<GpuTensor> {
        let n = shape.tokens();
        if ids.len() != n || type_ids.len() != n || positions.len() != n {
            return Err(Error::Backend {
                message: format!("embed: {} ids for {n} positions", ids.len()),
            });
        }
        if ids.iter().any(|&i| i as usize >= word.rows)
            || type_ids.iter().any(|&i| i as usize >= token_type.rows)
            || positions.iter().any(|&i| i as usize >= position.rows)
        {
            return Err(Error::invalid_input(
                "a token id is outside the embedding table",
            ));
        }
        let hidden = word.cols;
        let kernel = match (word.f16, position.f16, token_type.f16) {
            (false, false, false) => "embed",
            (true, true, true) => "embed_f16",
            _ => {
                return Err(Error::Backend {
                    message: "embed: tables of different precisions".to_owned(),
                });
            }
        };
        let ids = self.upload_bytes(bytemuck::cast_slice(ids), 1, n)?;
        let type_ids = self.upload_bytes(bytemuck::cast_slice(type_ids), 1, n)?;
        let positions = self.upload_bytes(bytemuck::cast_slice(positions), 1, n)?;
        let out = self.alloc(n, hidden)?;
        self.run(
            kernel,
            &[dim(n)?, dim(hidden)?],
            &[
                ids.id(),
                positions.id(),
                type_ids.id(),
                word.id(),
                position.id(),
                token_type.id(),
                out.id(),
            ],
            [groups(hidden, 64)?, dim(n)?, 1],
        )?;
        Ok(out)
    }

    fn linear(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        b: Option<&GpuTensor>,
        act: Activation,
    ) -> Result<GpuTensor> {
        check_cols("linear", x, w.cols)?;
        if x.f16 || b.is_some_and(|b| b.f16) {
            return Err(Error::Backend {
                message: "linear: f16 activations or bias".to_owned(),
            });
        }
        let (m, n, k) = (x.rows, w.rows, x.cols);
        let out = self.alloc(m, n)?;
        let act = act_code(act);
        // Without a bias, the weights stand in for the unused binding.
        let bias = b.unwrap_or(w);
        self.run(
            if w.f16 { "matmul_f16" } else { "matmul" },
            &[dim(m)?, dim(n)?, dim(k)?, act, u32::from(b.is_some())],
            &[x.id(), w.id(), bias.id(), out.id()],
            [groups(n, 64)?, groups(m, 64)?, 1],
        )?;
        Ok(out)
    }

    fn layer_norm(
        &self,
        x: &GpuTensor,
        residual: Option<&GpuTensor>,
        gamma: &GpuTensor,
        beta: &GpuTensor,
        eps: f64,
    ) -> Result<GpuTensor> {
        check_cols("layer_norm gamma", gamma, x.cols)?;
        if let Some(r) = residual {
            check_cols("layer_norm residual", r, x.cols)?;
        }
        let out = self.alloc(x.rows, x.cols)?;
        self.run(
            "layer_norm",
            &[
                dim(x.rows)?,
                dim(x.cols)?,
                (eps as f32).to_bits(),
                u32::from(residual.is_some()),
            ],
            &[
                x.id(),
                residual.unwrap_or(x).id(),
                gamma.id(),
                beta.id(),
                out.id(),
            ],
            [dim(x.rows)?, 1, 1],
        )?;
        Ok(out)
    }

    fn key_mask(&self, mask: &[u32], shape: BatchShape) -> Result<GpuTensor> {
        let data: Vec<f32> = mask
            .iter()
            .map(|&m| if m != 0 { 1.0 } else { 0.0 })
            .collect();
        self.upload_bytes(bytemuck::cast_slice(&data), shape.batch, shape.seq)
    }

    fn attention(
        &self,
        qkv: &GpuTensor,
        key_mask: &GpuTensor,
        shape: BatchShape,
        heads: usize,
    ) -> Result<GpuTensor> {
        let BatchShape { batch, seq } = shape;
        if seq > MAX_SEQ {
            return Err(Error::InputTooLarge {
                message: format!("{seq} tokens; the GPU attention kernel takes at most {MAX_SEQ}"),
            });
        }
        let hidden = qkv.cols / 3;
        let head_dim = hidden / heads;
        let out = self.alloc(batch * seq, hidden)?;
        let scale = 1.0 / (head_dim as f32).sqrt();
        self.run(
            "attention",
            &[
                dim(batch)?,
                dim(seq)?,
                dim(heads)?,
                dim(head_dim)?,
                scale.to_bits(),
            ],
            &[qkv.id(), key_mask.id(), out.id()],
            [dim(seq)?, dim(heads)?, dim(batch)?],
        )?;
        Ok(out)
    }

    fn attend(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        key_mask: Option<&GpuTensor>,
        spec: &AttentionSpec,
    ) -> Result<GpuTensor> {
        self.attend_fresh(q, k, v, key_mask, spec)
    }

    fn kv_cache(&self, batch: usize, width: usize, capacity: usize) -> Result<GpuCache> {
        self.new_cache(batch, width, capacity)
    }

    fn kv_append(&self, cache: &mut GpuCache, k: &GpuTensor, v: &GpuTensor) -> Result<()> {
        self.append(cache, k, v)
    }

    fn attend_cached(
        &self,
        q: &GpuTensor,
        cache: &GpuCache,
        key_mask: Option<&GpuTensor>,
        spec: &AttentionSpec,
    ) -> Result<GpuTensor> {
        self.attend_cache(q, cache, key_mask, spec)
    }

    fn rope(&self, x: &GpuTensor, table: &RopeTable, heads: usize) -> Result<GpuTensor> {
        self.rope_op(x, table, heads)
    }

    fn rms_norm(&self, x: &GpuTensor, gamma: &GpuTensor, eps: f64) -> Result<GpuTensor> {
        self.rms_norm_op(x, gamma, eps)
    }

    fn gated(&self, x: &GpuTensor, act: Activation) -> Result<GpuTensor> {
        self.gated_op(x, act)
    }

    fn mul(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        self.mul_op(a, b)
    }

    fn scale(&self, x: &GpuTensor, s: f32) -> Result<GpuTensor> {
        self.scale_op(x, s)
    }

    fn gather(&self, table: &GpuTensor, ids: &[u32]) -> Result<GpuTensor> {
        self.gather_op(table, ids)
    }

    fn depthwise(
        &self,
        x: &GpuTensor,
        w: &GpuTensor,
        b: &GpuTensor,
        conv: Conv2d,
        act: Activation,
    ) -> Result<GpuTensor> {
        let (rows, c, k) = (x.rows, x.cols, conv.kernel);
        if !conv.is_valid()
            || rows != conv.input.pixels()
            || w.rows * w.cols != k * k * c
            || b.rows * b.cols != c
            || x.f16
            || w.f16
            || b.f16
        {
            return Err(Error::Backend {
                message: format!(
                    "depthwise: [{rows}, {c}] as {:?}, {k}x{k} weight [{}, {}], bias [{}, {}]",
                    conv.input, w.rows, w.cols, b.rows, b.cols
                ),
            });
        }
        let (input, output) = (conv.input, conv.output());
        let (top, left) = conv.pad_top_left();
        let n = output.pixels() * c;
        let out = self.alloc(output.pixels(), c)?;
        self.run(
            "depthwise",
            &[
                dim(n)?,
                dim(input.height)?,
                dim(input.width)?,
                dim(c)?,
                dim(output.height)?,
                dim(output.width)?,
                dim(k)?,
                dim(conv.stride)?,
                dim(top)?,
                dim(left)?,
                act_code(act),
                0,
            ],
            &[x.id(), w.id(), b.id(), out.id()],
            elementwise_groups(n)?,
        )?;
        Ok(out)
    }

    fn reduce(
        &self,
        x: &GpuTensor,
        key_mask: &GpuTensor,
        shape: BatchShape,
        how: Reduce,
    ) -> Result<GpuTensor> {
        let hidden = x.cols;
        let out = self.alloc(shape.batch, hidden)?;
        let how = match how {
            Reduce::First => 0,
            Reduce::MaskedMean => 1,
        };
        self.run(
            "pool",
            &[dim(shape.batch)?, dim(shape.seq)?, dim(hidden)?, how],
            &[x.id(), key_mask.id(), out.id()],
            [groups(hidden, 64)?, dim(shape.batch)?, 1],
        )?;
        Ok(out)
    }

    fn l2_normalize(&self, x: &GpuTensor) -> Result<GpuTensor> {
        let out = self.alloc(x.rows, x.cols)?;
        self.run(
            "l2_normalize",
            &[dim(x.rows)?, dim(x.cols)?],
            &[x.id(), out.id()],
            [dim(x.rows)?, 1, 1],
        )?;
        Ok(out)
    }

    fn read(&self, x: &GpuTensor) -> Result<Vec<f32>> {
        match self.read_start(x)? {
            Fetched::Ready(data) => Ok(data),
            Fetched::Pending(_) => Err(Error::Backend {
                message: "this host reads GPU buffers asynchronously".to_owned(),
            }),
        }
    }

    fn read_start(&self, x: &GpuTensor) -> Result<Fetched> {
        Ok(
            match self
                .host()
                .read_buffer(x.id(), 0, (x.rows * x.cols * 4) as u64)?
            {
                Readback::Ready(bytes) => Fetched::Ready(f32s(&bytes)),
                Readback::Pending(id) => Fetched::Pending(id),
            },
        )
    }
}

/// Each kernel against the CPU backend on random data, on shapes that are not multiples of the
/// tile sizes. Tolerance: |gpu − cpu| ≤ 1e-4 · max(1, |cpu|) (different summation order; the
/// GELU uses an erf approximation with error below 1.5e-7). These tests need a GPU adapter —
/// Mesa lavapipe in CI — and fail without one.
#[cfg(test)]
#[path = "gpu_tests.rs"]
mod tests;
