//! The decoder ops of [`Backend`] against an f64 reference written out here, on ragged shapes:
//! one test body, run on every backend and host — the CPU backend's unit tests (native),
//! the GPU backend's (WGSL on Mesa lavapipe), and inside WebAssembly with the SIMD128 kernels
//! (`tests/wasm-harness`, under Node).
//!
//! Tolerance: `|got − want| ≤ tol · max(1, |want|)`, `tol` given by the caller (f32 arithmetic
//! in another summation order, and the kernels' `exp`/`erf` approximations, against f64).

use super::{Activation, AttentionSpec, Backend, BatchShape, KvCache, RopeTable};

/// What a run checked and what failed.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub checked: usize,
    pub failures: Vec<String>,
}

impl Report {
    fn compare(&mut self, what: &str, got: crate::Result<Vec<f32>>, want: &[f64], tol: f64) {
        self.checked += 1;
        let got = match got {
            Ok(g) => g,
            Err(e) => return self.failures.push(format!("{what}: {e}")),
        };
        if got.len() != want.len() {
            return self.failures.push(format!(
                "{what}: {} values, expected {}",
                got.len(),
                want.len()
            ));
        }
        let worst = got
            .iter()
            .zip(want)
            .enumerate()
            .map(|(i, (&g, &w))| (i, (f64::from(g) - w).abs() / w.abs().max(1.0)))
            .fold(
                (0, 0.0),
                |a, b| if b.1 > a.1 || b.1.is_nan() { b } else { a },
            );
        if worst.1.is_nan() || worst.1 > tol {
            let i = worst.0;
            self.failures.push(format!(
                "{what}: [{i}] = {} against {} (error {:e} > {tol:e})",
                got[i], want[i], worst.1
            ));
        }
    }

    fn expect_err<T>(&mut self, what: &str, r: crate::Result<T>) {
        self.checked += 1;
        if r.is_ok() {
            self.failures.push(format!("{what}: accepted"));
        }
    }
}

/// Deterministic values in `[-amp, amp)`.
fn random(n: usize, seed: u64, amp: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
        })
        .collect()
}

fn wide(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// Runs every check on `be`.
pub(crate) fn run<B: Backend>(be: &B, tol: f64) -> Report {
    let mut r = Report::default();
    attention(be, tol, &mut r);
    kv_cache(be, tol, &mut r);
    rope(be, tol, &mut r);
    rms_norm(be, tol, &mut r);
    elementwise(be, tol, &mut r);
    gather(be, tol, &mut r);
    r
}

/// Attention in f64: softmax over the keys query `i` may attend, zeros if none.
fn reference_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    mask: Option<&[u32]>,
    s: &AttentionSpec,
) -> Vec<f64> {
    let (d, qw, kw) = (s.head_dim, s.q_width(), s.kv_width());
    let group = s.heads / s.kv_heads;
    let mut out = vec![0f64; s.batch * s.queries * qw];
    for b in 0..s.batch {
        for h in 0..s.heads {
            let g = h / group;
            for i in 0..s.queries {
                let qi = &q[(b * s.queries + i) * qw + h * d..][..d];
                let keys: Vec<usize> = (0..s.keys)
                    .filter(|&j| s.allows(i, j) && mask.is_none_or(|m| m[b * s.keys + j] != 0))
                    .collect();
                if keys.is_empty() {
                    continue;
                }
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        let kj = &k[(b * s.keys + j) * kw + g * d..][..d];
                        let dot: f64 = qi
                            .iter()
                            .zip(kj)
                            .map(|(&a, &b)| f64::from(a) * f64::from(b))
                            .sum();
                        dot * f64::from(s.scale)
                    })
                    .collect();
                let top = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let w: Vec<f64> = scores.iter().map(|x| (x - top).exp()).collect();
                let total: f64 = w.iter().sum();
                let o = &mut out[(b * s.queries + i) * qw + h * d..][..d];
                for (&j, wj) in keys.iter().zip(&w) {
                    let vj = &v[(b * s.keys + j) * kw + g * d..][..d];
                    for (o, &x) in o.iter_mut().zip(vj) {
                        *o += wj / total * f64::from(x);
                    }
                }
            }
        }
    }
    out
}

struct Case {
    batch: usize,
    queries: usize,
    keys: usize,
    heads: usize,
    kv_heads: usize,
    d: usize,
    causal: bool,
    window: Option<usize>,
    /// Sequence `b` has its first `b · pad` keys masked (left padding).
    pad: usize,
}

fn attention<B: Backend>(be: &B, tol: f64, r: &mut Report) {
    let case = |batch, queries, keys, heads, kv_heads, d, causal, window, pad| Case {
        batch,
        queries,
        keys,
        heads,
        kv_heads,
        d,
        causal,
        window,
        pad,
    };
    let cases = [
        // An encoder's self-attention, multi-head, padded.
        case(2, 7, 7, 2, 2, 5, false, None, 2),
        // A causal prefill with grouped heads (4 per key head), odd head size.
        case(1, 13, 13, 8, 2, 12, true, None, 0),
        // Multi-query, causal, padded batch, Gemma 3's head size.
        case(3, 6, 6, 4, 1, 256, true, None, 1),
        // Decode steps past a cache: one and three new rows over 600+ keys (past the old 512).
        case(1, 1, 700, 4, 2, 16, true, None, 0),
        case(2, 3, 530, 2, 1, 8, true, None, 5),
        // Sliding windows, in a prefill and a decode step.
        case(1, 19, 19, 2, 2, 16, true, Some(4), 0),
        case(2, 2, 41, 4, 2, 8, true, Some(8), 3),
        // Cross attention: 5 queries over another sequence of 9 keys.
        case(2, 5, 9, 3, 3, 7, false, None, 4),
        // A sequence whose every key is masked: its rows are zeros.
        case(2, 3, 3, 1, 1, 4, false, None, 3),
    ];
    for (n, c) in cases.iter().enumerate() {
        let spec = AttentionSpec {
            batch: c.batch,
            queries: c.queries,
            keys: c.keys,
            heads: c.heads,
            kv_heads: c.kv_heads,
            head_dim: c.d,
            scale: 1.0 / (c.d as f32).sqrt(),
            causal: c.causal,
            offset: if c.causal { c.keys - c.queries } else { 0 },
            window: c.window,
        };
        let seed = 10 * n as u64;
        // Scores of a few units: softmax far from uniform, and no overflow.
        let q = random(c.batch * c.queries * spec.q_width(), seed, 2.0);
        let k = random(c.batch * c.keys * spec.kv_width(), seed + 1, 2.0);
        let v = random(c.batch * c.keys * spec.kv_width(), seed + 2, 1.0);
        let mask: Vec<u32> = (0..c.batch * c.keys)
            .map(|t| u32::from(t % c.keys >= (t / c.keys) * c.pad))
            .collect();
        let masked = c.pad > 0;
        let want = reference_attention(&q, &k, &v, masked.then_some(&mask[..]), &spec);
        let what = format!(
            "attend b{} q{} k{} h{}/{} d{} causal {} window {:?}",
            c.batch, c.queries, c.keys, c.heads, c.kv_heads, c.d, c.causal, c.window
        );
        let got = (|| {
            let qt = be.activations(q.clone(), c.batch * c.queries, spec.q_width())?;
            let kt = be.activations(k.clone(), c.batch * c.keys, spec.kv_width())?;
            let vt = be.activations(v.clone(), c.batch * c.keys, spec.kv_width())?;
            let shape = BatchShape {
                batch: c.batch,
                seq: c.keys,
            };
            let mask = if masked {
                Some(be.key_mask(&mask, shape)?)
            } else {
                None
            };
            be.read(&be.attend(&qt, &kt, &vt, mask.as_ref(), &spec)?)
        })();
        r.compare(&what, got, &want, tol);
    }
    // Shapes that do not agree are refused.
    let spec = AttentionSpec {
        batch: 1,
        queries: 2,
        keys: 3,
        heads: 3,
        kv_heads: 2,
        head_dim: 4,
        scale: 0.5,
        causal: false,
        offset: 0,
        window: None,
    };
    let bad = (|| {
        let q = be.activations(vec![0.0; 24], 2, 12)?;
        let kv = be.activations(vec![0.0; 24], 3, 8)?;
        be.attend(&q, &kv, &kv, None, &spec)
    })();
    r.expect_err("attend with 3 query heads over 2 key heads", bad);
}

/// A cache that starts with room for 3 positions and grows past it, appended 5, 1, 1 and 4
/// rows at a time; after each append a causal step over it against the reference over all
/// the keys so far.
fn kv_cache<B: Backend>(be: &B, tol: f64, r: &mut Report) {
    let (batch, heads, kv_heads, d) = (2, 4, 2, 6);
    let kw = kv_heads * d;
    let mut cache = match be.kv_cache(batch, kw, 3) {
        Ok(c) => c,
        Err(e) => return r.failures.push(format!("kv_cache: {e}")),
    };
    // Keys and values of every position so far, per sequence.
    let (mut ks, mut vs) = (vec![Vec::new(); batch], vec![Vec::new(); batch]);
    let mut len = 0;
    for (step, n) in [5usize, 1, 1, 4].into_iter().enumerate() {
        let seed = 500 + 10 * step as u64;
        let k = random(batch * n * kw, seed, 2.0);
        let v = random(batch * n * kw, seed + 1, 1.0);
        let q = random(batch * n * heads * d, seed + 2, 2.0);
        for b in 0..batch {
            ks[b].extend_from_slice(&k[b * n * kw..][..n * kw]);
            vs[b].extend_from_slice(&v[b * n * kw..][..n * kw]);
        }
        let spec = AttentionSpec {
            batch,
            queries: n,
            keys: len + n,
            heads,
            kv_heads,
            head_dim: d,
            scale: 0.4,
            causal: true,
            offset: len,
            window: None,
        };
        let want = reference_attention(&q, &ks.concat(), &vs.concat(), None, &spec);
        let got = (|| {
            let kt = be.activations(k, batch * n, kw)?;
            let vt = be.activations(v, batch * n, kw)?;
            be.kv_append(&mut cache, &kt, &vt)?;
            let qt = be.activations(q, batch * n, heads * d)?;
            be.read(&be.attend_cached(&qt, &cache, None, &spec)?)
        })();
        len += n;
        r.compare(
            &format!("attend_cached after {len} positions"),
            got,
            &want,
            tol,
        );
        r.checked += 1;
        if cache.len() != len || cache.bytes() < 2 * 4 * batch * len * kw {
            r.failures.push(format!(
                "kv cache: {} positions in {} bytes after appending {len}",
                cache.len(),
                cache.bytes()
            ));
        }
    }
    let bad = (|| {
        let k = be.activations(vec![0.0; 3 * kw], 3, kw)?;
        be.kv_append(&mut cache, &k, &k)
    })();
    r.expect_err("kv_append of 3 rows to a cache of 2 sequences", bad);
}

/// A table as [`super::rope::Rope::table`] builds it, from angles given here.
fn table(positions: &[u32], rotary_dim: usize, factor: f64) -> RopeTable {
    let half = rotary_dim / 2;
    let mut cos_sin = Vec::new();
    for &p in positions {
        let angles: Vec<f64> = (0..half)
            .map(|i| f64::from(p) / 10_000f64.powf(2.0 * i as f64 / rotary_dim as f64))
            .collect();
        cos_sin.extend(angles.iter().map(|a| (a.cos() * factor) as f32));
        cos_sin.extend(angles.iter().map(|a| (a.sin() * factor) as f32));
    }
    RopeTable {
        rows: positions.len(),
        rotary_dim,
        cos_sin,
    }
}

fn rope<B: Backend>(be: &B, tol: f64, r: &mut Report) {
    // (rows, heads, head_dim, rotary_dim)
    for (n, &(rows, heads, d, rot)) in [
        (1, 1, 2, 2),
        (7, 3, 16, 16),
        (5, 2, 10, 4),
        (33, 4, 256, 256),
    ]
    .iter()
    .enumerate()
    {
        let x = random(rows * heads * d, 900 + n as u64, 3.0);
        let positions: Vec<u32> = (0..rows as u32).map(|i| (i * 977 + 3) % 6000).collect();
        let t = table(&positions, rot, 1.0 + n as f64 * 0.1);
        let half = rot / 2;
        let mut want = wide(&x);
        for row in 0..rows {
            let (c, s) = (
                &t.cos_sin[row * rot..][..half],
                &t.cos_sin[row * rot + half..][..half],
            );
            for h in 0..heads {
                let base = (row * heads + h) * d;
                for i in 0..half {
                    let (x1, x2) = (f64::from(x[base + i]), f64::from(x[base + half + i]));
                    let (c, s) = (f64::from(c[i]), f64::from(s[i]));
                    want[base + i] = x1 * c - x2 * s;
                    want[base + half + i] = x2 * c + x1 * s;
                }
            }
        }
        let got = (|| be.read(&be.rope(&be.activations(x, rows, heads * d)?, &t, heads)?))();
        r.compare(
            &format!("rope {rows}x{heads}x{d} rotating {rot}"),
            got,
            &want,
            tol,
        );
    }
    let bad = (|| {
        let x = be.activations(vec![0.0; 12], 2, 6)?;
        be.rope(&x, &table(&[0, 1, 2], 6, 1.0), 1)
    })();
    r.expect_err("rope with a table of 3 rows for 2", bad);
}

fn rms_norm<B: Backend>(be: &B, tol: f64, r: &mut Report) {
    // (rows, cols, group): a row, odd widths, per-head groups.
    for (n, &(rows, cols, group)) in [
        (1, 1, 1),
        (5, 67, 67),
        (3, 384, 384),
        (9, 48, 16),
        (2, 1536, 256),
    ]
    .iter()
    .enumerate()
    {
        let x = random(rows * cols, 1300 + n as u64, 4.0);
        let gamma = random(group, 1400 + n as u64, 1.5);
        let eps = 1e-6;
        let mut want = vec![0f64; rows * cols];
        for (xs, o) in x.chunks_exact(group).zip(want.chunks_exact_mut(group)) {
            let ms = xs.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / group as f64;
            let inv = 1.0 / (ms + eps).sqrt();
            for ((o, &v), &g) in o.iter_mut().zip(xs).zip(&gamma) {
                *o = f64::from(v) * inv * f64::from(g);
            }
        }
        let got = (|| {
            let g = be.upload(gamma, &[group])?;
            be.read(&be.rms_norm(&be.activations(x, rows, cols)?, &g, eps)?)
        })();
        r.compare(
            &format!("rms_norm {rows}x{cols} in groups of {group}"),
            got,
            &want,
            tol,
        );
    }
    let bad = (|| {
        let g = be.upload(vec![1.0; 5], &[5])?;
        be.rms_norm(&be.activations(vec![1.0; 12], 2, 6)?, &g, 1e-6)
    })();
    r.expect_err("rms_norm with a gamma of 5 over rows of 6", bad);
}

fn act64(x: f64, act: Activation) -> f64 {
    match act {
        Activation::Silu => x / (1.0 + (-x).exp()),
        Activation::GeluTanh => {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x.powi(3))).tanh())
        }
        Activation::GeluErf => 0.5 * x * (1.0 + erf64(x / std::f64::consts::SQRT_2)),
        Activation::Relu => x.max(0.0),
        Activation::Tanh => x.tanh(),
        Activation::Relu6 => x.clamp(0.0, 6.0),
        Activation::None => x,
    }
}

/// erf by its Taylor series (|x| ≤ 3) or the continued fraction of erfc.
fn erf64(x: f64) -> f64 {
    let a = x.abs();
    let v = if a <= 3.0 {
        let (mut term, mut total, mut k) = (a, a, 0.0);
        while term.abs() > 1e-17 {
            k += 1.0;
            term *= -a * a / k;
            total += term / (2.0 * k + 1.0);
        }
        total * 2.0 / std::f64::consts::PI.sqrt()
    } else {
        let mut f = 0.0;
        for k in (1..60).rev() {
            f = f64::from(k) / 2.0 / (a + f);
        }
        1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
    };
    v.copysign(x)
}

fn elementwise<B: Backend>(be: &B, tol: f64, r: &mut Report) {
    for (n, &(rows, width)) in [(1, 1), (3, 37), (17, 352), (2, 1000)].iter().enumerate() {
        let seed = 1700 + 10 * n as u64;
        // Gates up to ±12: SiLU's and GELU's tails.
        let x = random(rows * 2 * width, seed, 12.0);
        for act in [Activation::Silu, Activation::GeluTanh, Activation::GeluErf] {
            let want: Vec<f64> = x
                .chunks_exact(2 * width)
                .flat_map(|row| {
                    let (gate, up) = row.split_at(width);
                    gate.iter()
                        .zip(up)
                        .map(|(&g, &u)| act64(f64::from(g), act) * f64::from(u))
                        .collect::<Vec<_>>()
                })
                .collect();
            let got = (|| be.read(&be.gated(&be.activations(x.clone(), rows, 2 * width)?, act)?))();
            r.compare(&format!("gated {act:?} {rows}x{width}"), got, &want, tol);
        }
        let a = random(rows * width, seed + 1, 3.0);
        let b = random(rows * width, seed + 2, 3.0);
        let want: Vec<f64> = a
            .iter()
            .zip(&b)
            .map(|(&a, &b)| f64::from(a) * f64::from(b))
            .collect();
        let got = (|| {
            let (a, b) = (
                be.activations(a.clone(), rows, width)?,
                be.activations(b, rows, width)?,
            );
            be.read(&be.mul(&a, &b)?)
        })();
        r.compare(&format!("mul {rows}x{width}"), got, &want, tol);
        let want: Vec<f64> = a
            .iter()
            .map(|&a| f64::from(a) * f64::from(8f32.sqrt()))
            .collect();
        let got = (|| be.read(&be.scale(&be.activations(a, rows, width)?, 8f32.sqrt())?))();
        r.compare(&format!("scale {rows}x{width}"), got, &want, tol);
    }
    let bad = (|| {
        let (a, b) = (
            be.activations(vec![0.0; 6], 2, 3)?,
            be.activations(vec![0.0; 6], 3, 2)?,
        );
        be.mul(&a, &b)
    })();
    r.expect_err("mul of [2, 3] and [3, 2]", bad);
    let bad = (|| be.gated(&be.activations(vec![0.0; 6], 2, 3)?, Activation::Silu))();
    r.expect_err("gated over an odd width", bad);
}

fn gather<B: Backend>(be: &B, tol: f64, r: &mut Report) {
    let (n, cols) = (50, 37);
    let table = random(n * cols, 2100, 1.0);
    let ids = [0u32, 49, 7, 7, 23, 1];
    let want: Vec<f64> = ids
        .iter()
        .flat_map(|&i| wide(&table[i as usize * cols..][..cols]))
        .collect();
    let got = (|| be.read(&be.gather(&be.activations(table.clone(), n, cols)?, &ids)?))();
    r.compare("gather rows of activations", got, &want, tol);
    // A table uploaded as weights is stored as the backend stores weights (f16 on a GPU in
    // f16): compare at f16's precision there.
    let got = (|| be.read(&be.gather(&be.upload(table.clone(), &[n, cols])?, &ids)?))();
    r.compare("gather rows of a table", got, &want, tol.max(1e-3));
    let bad = (|| be.gather(&be.activations(table, n, cols)?, &[3, 50]))();
    r.expect_err("gather of an id past the table", bad);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The CPU backend natively (the SIMD128 build runs the same body in the wasm harness).
    #[test]
    fn cpu_ops_match_an_f64_reference() {
        let report = run(&crate::backend::cpu::Cpu, 2e-5);
        assert!(report.checked > 40, "{} checks", report.checked);
        assert!(report.failures.is_empty(), "{:#?}", report.failures);
    }
}
