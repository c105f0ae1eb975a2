//! Multi-head attention over the fused QKV activations, one (sequence, head) at a time:
//! `scores = Q·Kᵀ/√d` through the packed matrix multiply (the head's keys packed into a reused
//! buffer), the masked softmax in place, then `context = P·V` written straight into the head's
//! columns of the output. Nothing is transposed or copied beyond the packing of K and V.

use super::gemm::{Packed, Rows, gemm};
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
    let d = hidden / heads;
    let ld = 3 * hidden;
    let scale = 1.0 / (d as f32).sqrt();
    each_sequence(out, seq * hidden, &|b, out| {
        let (mut keys, mut values) = (Packed::new(), Packed::new());
        let mut scores = vec![0f32; seq * seq];
        let rows = &qkv[b * seq * ld..][..seq * ld];
        let mask = &mask[b * seq..][..seq];
        for h in 0..heads {
            let (q, k, v) = (
                &rows[h * d..],
                &rows[hidden + h * d..],
                &rows[2 * hidden + h * d..],
            );
            // Kᵀ: B[c, j] = k[j*ld + c]; V: B[j, c] = v[j*ld + c].
            keys.pack(k, d, seq, 1, ld);
            values.pack(v, seq, d, ld, 1);
            let ep = Epilogue {
                alpha: scale,
                ..Epilogue::NONE
            };
            gemm(
                Rows {
                    data: q,
                    m: seq,
                    lda: ld,
                },
                &keys,
                &mut scores,
                seq,
                &ep,
            );
            for row in scores.chunks_exact_mut(seq) {
                masked_softmax_row(row, mask);
            }
            let probs = Rows {
                data: &scores,
                m: seq,
                lda: seq,
            };
            gemm(probs, &values, &mut out[h * d..], hidden, &Epilogue::NONE);
        }
    });
}

type SeqFn<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// Runs `f(b, out_rows_of_b)` for every sequence, in parallel natively.
#[cfg(not(target_arch = "wasm32"))]
fn each_sequence(out: &mut [f32], per: usize, f: &SeqFn<'_>) {
    use rayon::prelude::*;
    out.par_chunks_mut(per.max(1))
        .enumerate()
        .for_each(|(b, o)| f(b, o));
}

#[cfg(target_arch = "wasm32")]
fn each_sequence(out: &mut [f32], per: usize, f: &SeqFn<'_>) {
    for (b, o) in out.chunks_mut(per.max(1)).enumerate() {
        f(b, o)
    }
}
