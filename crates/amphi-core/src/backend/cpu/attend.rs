//! Attention with separate Q, K and V (decoders, cross attention, a KV cache), one (sequence,
//! key head) group at a time: the group's keys and values are packed once for all the query
//! heads that share them (grouped-query attention), then per query head `scores = Q·Kᵀ·scale`
//! through the packed multiply, the softmax over the keys each query may attend (key mask,
//! causal limit, sliding window), and `context = P·V`.
//!
//! Only the keys some query of the call can attend are packed: a decode step with a sliding
//! window reads `window` keys, not the whole cache. No limit on the number of keys.

use super::gemm::{Packed, Rows, gemm_serial};
use super::math::{Epilogue, masked_softmax_row};
use crate::backend::AttentionSpec;

/// Keys and values: sequence `b`'s position `j` is row `b·stride + j` of `k` and `v`, each
/// row `kv_heads·head_dim` wide (`stride` is a cache's capacity, or `keys`).
#[derive(Clone, Copy)]
pub(crate) struct Kv<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub stride: usize,
}

/// `q` is `[batch·queries, heads·head_dim]`, `mask` (1 = attend) `[batch·keys]`; `out`
/// `[batch·queries, heads·head_dim]`. Shapes are checked by the caller.
pub(crate) fn attend(
    q: &[f32],
    kv: Kv<'_>,
    mask: Option<&[f32]>,
    s: &AttentionSpec,
    out: &mut [f32],
) {
    let groups = s.batch * s.kv_heads;
    let per_group = (s.heads / s.kv_heads) * s.queries * s.head_dim;
    each_group(groups, per_group, s, out, |t, scratch, context| {
        group(q, kv, mask, s, t, scratch, context)
    });
}

/// What one group's products reuse from one group to the next.
struct Scratch {
    keys: Packed,
    values: Packed,
    scores: Vec<f32>,
    allowed: Vec<f32>,
}

impl Scratch {
    fn new() -> Self {
        Self {
            keys: Packed::new(),
            values: Packed::new(),
            scores: Vec::new(),
            allowed: Vec::new(),
        }
    }
}

/// The keys `j0..j1` some query of the call may attend.
fn key_range(s: &AttentionSpec) -> (usize, usize) {
    let j1 = if s.causal {
        s.keys.min(s.offset + s.queries)
    } else {
        s.keys
    };
    let j0 = s
        .window
        .map_or(0, |w| (s.offset + 1).saturating_sub(w))
        .min(j1);
    (j0, j1)
}

/// Group `t` (sequence `t / kv_heads`, key head `t % kv_heads`): the contexts of its query
/// heads, head-major (`[heads per group][queries][head_dim]`), into `context`.
fn group(
    q: &[f32],
    kv: Kv<'_>,
    mask: Option<&[f32]>,
    s: &AttentionSpec,
    t: usize,
    scratch: &mut Scratch,
    context: &mut [f32],
) {
    let (b, g) = (t / s.kv_heads, t % s.kv_heads);
    let (d, qw, kw) = (s.head_dim, s.q_width(), s.kv_width());
    let (j0, j1) = key_range(s);
    let n = j1 - j0;
    context.fill(0.0);
    if n == 0 {
        return;
    }
    let Scratch {
        keys,
        values,
        scores,
        allowed,
    } = scratch;
    let first = (b * kv.stride + j0) * kw + g * d;
    // Kᵀ: B[c, j] = k[first + j·kw + c]; V: B[j, c] = v[first + j·kw + c].
    keys.pack(&kv.k[first..], d, n, 1, kw);
    values.pack(&kv.v[first..], n, d, kw, 1);
    scores.resize(s.queries * n, 0.0);
    allowed.resize(n, 0.0);
    let ep = Epilogue {
        alpha: s.scale,
        ..Epilogue::NONE
    };
    let group = s.heads / s.kv_heads;
    for (hg, context) in context.chunks_exact_mut(s.queries * d).enumerate() {
        let h = g * group + hg;
        let queries = Rows {
            data: &q[b * s.queries * qw + h * d..],
            m: s.queries,
            lda: qw,
        };
        gemm_serial(queries, keys, scores, n, &ep);
        let mut any = false;
        for (i, row) in scores.chunks_exact_mut(n).enumerate() {
            let mut row_any = false;
            for (jj, a) in allowed.iter_mut().enumerate() {
                let j = j0 + jj;
                let ok = s.allows(i, j) && mask.is_none_or(|m| m[b * s.keys + j] != 0.0);
                *a = f32::from(u8::from(ok));
                row_any |= ok;
            }
            if row_any {
                masked_softmax_row(row, allowed);
            } else {
                // No key for this query: its context is zeros.
                row.fill(0.0);
            }
            any |= row_any;
        }
        if any {
            let probs = Rows {
                data: scores,
                m: s.queries,
                lda: n,
            };
            gemm_serial(probs, values, context, d, &Epilogue::NONE);
        }
    }
}

/// Copies group `t`'s head-major contexts into their columns of `out`.
fn scatter(s: &AttentionSpec, t: usize, context: &[f32], out: &mut [f32]) {
    let (b, g) = (t / s.kv_heads, t % s.kv_heads);
    let (d, qw) = (s.head_dim, s.q_width());
    let group = s.heads / s.kv_heads;
    for (hg, head) in context.chunks_exact(s.queries * d).enumerate() {
        let h = g * group + hg;
        for (i, row) in head.chunks_exact(d).enumerate() {
            out[(b * s.queries + i) * qw + h * d..][..d].copy_from_slice(row);
        }
    }
}

/// Natively, groups run on rayon's threads when there are several and the work is large
/// enough to pay for waking them (the same threshold as the fused attention's).
#[cfg(not(target_arch = "wasm32"))]
fn each_group(
    groups: usize,
    per_group: usize,
    s: &AttentionSpec,
    out: &mut [f32],
    f: impl Fn(usize, &mut Scratch, &mut [f32]) + Sync,
) {
    use rayon::prelude::*;
    let (j0, j1) = key_range(s);
    let work = 2 * per_group * (j1 - j0);
    let mut contexts = vec![0f32; groups * per_group];
    if rayon::current_num_threads() <= 1 || groups <= 1 || work < (1 << 18) {
        let mut scratch = Scratch::new();
        for (t, c) in contexts.chunks_exact_mut(per_group).enumerate() {
            f(t, &mut scratch, c);
        }
    } else {
        contexts
            .par_chunks_mut(per_group)
            .enumerate()
            .for_each_init(Scratch::new, |scratch, (t, c)| f(t, scratch, c));
    }
    for (t, c) in contexts.chunks_exact(per_group).enumerate() {
        scatter(s, t, c, out);
    }
}

#[cfg(target_arch = "wasm32")]
fn each_group(
    groups: usize,
    per_group: usize,
    s: &AttentionSpec,
    out: &mut [f32],
    f: impl Fn(usize, &mut Scratch, &mut [f32]),
) {
    let mut scratch = Scratch::new();
    let mut context = vec![0f32; per_group];
    for t in 0..groups {
        f(t, &mut scratch, &mut context);
        scatter(s, t, &context, out);
    }
}
