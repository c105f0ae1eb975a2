//! Multi-head attention over the fused QKV activations, one (sequence, head) at a time:
//! `scores = Q·Kᵀ/√d` through the packed matrix multiply (the head's keys packed into a reused
//! buffer), the masked softmax in place, then `context = P·V` into the head's columns of the
//! output. Nothing is transposed; on one thread nothing is copied beyond the packing of K and V.
//!
//! Natively with several threads, the (sequence, head) pairs run in parallel, each multiply on
//! one thread, and each head's context is copied once into its columns. Splitting each head's
//! small products across threads instead, as the linear layers are split, cost more in
//! synchronisation than the products: MiniLM at 1×128 on 2 cores spent 4.8 ms in attention,
//! against 2.2 ms on one thread, and the embedding took 14.0 ms; with heads in parallel it takes
//! 11.9–12.0 ms.

use super::gemm::{Packed, Rows, gemm_serial};
use super::math::{Epilogue, masked_softmax_row};

/// `qkv` is `[batch*seq, 3*hidden]`, `mask` `[batch*seq]` (1 = attend), `out` `[batch*seq,
/// hidden]`.
pub(crate) fn attention(
    qkv: &[f32],
    mask: &[f32],
    (batch, seq): (usize, usize),
    heads: usize,
    out: &mut [f32],
) {
    let hidden = out.len() / (batch * seq).max(1);
    let shape = Shape {
        batch,
        seq,
        heads,
        hidden,
        d: hidden / heads.max(1),
    };
    each_head(qkv, mask, shape, out);
}

#[derive(Debug, Clone, Copy)]
struct Shape {
    batch: usize,
    seq: usize,
    heads: usize,
    hidden: usize,
    d: usize,
}

impl Shape {
    /// Heads of all sequences: head `t` is head `t % heads` of sequence `t / heads`.
    fn count(self) -> usize {
        self.batch * self.heads
    }

    /// Where row `i` of head `t`'s context starts in the output.
    fn at(self, t: usize, i: usize) -> usize {
        let (b, h) = (t / self.heads, t % self.heads);
        (b * self.seq + i) * self.hidden + h * self.d
    }
}

/// What one head's products reuse from one head to the next.
struct Scratch {
    keys: Packed,
    values: Packed,
    scores: Vec<f32>,
}

impl Scratch {
    fn new() -> Self {
        Self {
            keys: Packed::new(),
            values: Packed::new(),
            scores: Vec::new(),
        }
    }
}

/// Head `t`: its `seq × d` context into `context`, rows `ldc` apart.
fn head(
    qkv: &[f32],
    mask: &[f32],
    shape: Shape,
    t: usize,
    scratch: &mut Scratch,
    context: &mut [f32],
    ldc: usize,
) {
    let Shape { seq, hidden, d, .. } = shape;
    let (b, h) = (t / shape.heads, t % shape.heads);
    let ld = 3 * hidden;
    let rows = &qkv[b * seq * ld..][..seq * ld];
    let mask = &mask[b * seq..][..seq];
    let (q, k, v) = (
        &rows[h * d..],
        &rows[hidden + h * d..],
        &rows[2 * hidden + h * d..],
    );
    let Scratch {
        keys,
        values,
        scores,
    } = scratch;
    // Kᵀ: B[c, j] = k[j*ld + c]; V: B[j, c] = v[j*ld + c].
    keys.pack(k, d, seq, 1, ld);
    values.pack(v, seq, d, ld, 1);
    scores.resize(seq * seq, 0.0);
    let ep = Epilogue {
        alpha: 1.0 / (d as f32).sqrt(),
        ..Epilogue::NONE
    };
    let queries = Rows {
        data: q,
        m: seq,
        lda: ld,
    };
    gemm_serial(queries, keys, scores, seq, &ep);
    for row in scores.chunks_exact_mut(seq) {
        masked_softmax_row(row, mask);
    }
    let probs = Rows {
        data: scores,
        m: seq,
        lda: seq,
    };
    gemm_serial(probs, values, context, ldc, &Epilogue::NONE);
}

/// Every head in order on this thread, each straight into its columns of `out`.
fn each_head_here(qkv: &[f32], mask: &[f32], shape: Shape, out: &mut [f32]) {
    let mut scratch = Scratch::new();
    for t in 0..shape.count() {
        let context = &mut out[shape.at(t, 0)..];
        head(qkv, mask, shape, t, &mut scratch, context, shape.hidden);
    }
}

/// Multiply-adds per head from which heads run in parallel natively.
#[cfg(not(target_arch = "wasm32"))]
const PARALLEL_WORK: usize = 1 << 18;

/// Natively, on rayon's threads when there are several and more than one head: each head into
/// its own block of a head-major buffer (so that every thread writes memory of its own), then
/// those blocks into their columns of `out`.
#[cfg(not(target_arch = "wasm32"))]
fn each_head(qkv: &[f32], mask: &[f32], shape: Shape, out: &mut [f32]) {
    use rayon::prelude::*;
    let Shape { seq, d, .. } = shape;
    // A head's two products, in multiply-adds: below this a thread's wake-up costs more than
    // the head (MiniLM at 1×8: 0.5 ms of attention on 2 threads, 0.04 ms on one).
    let work = 2 * seq * seq * d;
    if rayon::current_num_threads() <= 1 || shape.count() <= 1 || work < PARALLEL_WORK {
        return each_head_here(qkv, mask, shape, out);
    }
    let mut contexts = vec![0f32; shape.count() * seq * d];
    contexts
        .par_chunks_mut(seq * d)
        .enumerate()
        .for_each_init(Scratch::new, |scratch, (t, context)| {
            head(qkv, mask, shape, t, scratch, context, d)
        });
    for (t, context) in contexts.chunks_exact(seq * d).enumerate() {
        for (i, row) in context.chunks_exact(d).enumerate() {
            out[shape.at(t, i)..][..d].copy_from_slice(row);
        }
    }
}

#[cfg(target_arch = "wasm32")]
fn each_head(qkv: &[f32], mask: &[f32], shape: Shape, out: &mut [f32]) {
    each_head_here(qkv, mask, shape, out)
}

#[cfg(test)]
mod tests {
    use super::attention;

    /// Softmax(q·kᵀ/√d over the attended keys)·v per (sequence, head), in f64.
    fn plain(qkv: &[f32], mask: &[f32], (batch, seq): (usize, usize), heads: usize) -> Vec<f64> {
        let hidden = qkv.len() / (3 * batch * seq);
        let d = hidden / heads;
        let at = |b: usize, i: usize, part: usize, h: usize, c: usize| {
            f64::from(qkv[(b * seq + i) * 3 * hidden + part * hidden + h * d + c])
        };
        let mut out = vec![0f64; batch * seq * hidden];
        for b in 0..batch {
            for h in 0..heads {
                for i in 0..seq {
                    let scores: Vec<f64> = (0..seq)
                        .map(|j| {
                            (0..d)
                                .map(|c| at(b, i, 0, h, c) * at(b, j, 1, h, c))
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let attended = |j: usize| mask[b * seq + j] != 0.0;
                    let top = (0..seq)
                        .filter(|&j| attended(j))
                        .map(|j| scores[j])
                        .fold(f64::NEG_INFINITY, f64::max);
                    let w: Vec<f64> = (0..seq)
                        .map(|j| {
                            if attended(j) {
                                (scores[j] - top).exp()
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    let total: f64 = w.iter().sum();
                    for c in 0..d {
                        out[(b * seq + i) * hidden + h * d + c] =
                            (0..seq).map(|j| w[j] * at(b, j, 2, h, c)).sum::<f64>() / total;
                    }
                }
            }
        }
        out
    }

    /// Against [`plain`], on one thread (each head straight into the output) and on three
    /// (heads in parallel through a head-major buffer, for shapes whose heads are large enough):
    /// absolute error ≤ 2e-6 on outputs of magnitude ≤ 1 (weighted means of values in [-1, 1]).
    #[test]
    fn matches_a_plain_f64_attention_on_one_and_several_threads() {
        // (batch, seq, heads, head_dim): tiny, odd, and two whose heads run in parallel
        // (2·seq²·d ≥ 2¹⁸), one with padded sequences and a head dimension that is not a panel's.
        for &(batch, seq, heads, d) in
            &[(1, 1, 1, 4), (2, 7, 2, 5), (1, 70, 3, 32), (3, 130, 2, 20)]
        {
            let hidden = heads * d;
            let qkv: Vec<f32> = (0..batch * seq * 3 * hidden)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            // Sequence b has its last b tokens padded.
            let mask: Vec<f32> = (0..batch * seq)
                .map(|t| f32::from(u8::from(t % seq < seq - (t / seq).min(seq - 1))))
                .collect();
            let want = plain(&qkv, &mask, (batch, seq), heads);
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a thread pool");
                let mut out = vec![f32::NAN; batch * seq * hidden];
                pool.install(|| attention(&qkv, &mask, (batch, seq), heads, &mut out));
                let worst = out
                    .iter()
                    .zip(&want)
                    .map(|(&o, &w)| (f64::from(o) - w).abs())
                    .fold(0.0, f64::max);
                assert!(
                    worst <= 2e-6,
                    "b{batch} s{seq} h{heads} d{d} on {threads} threads: error {worst:e}"
                );
            }
        }
    }
}
