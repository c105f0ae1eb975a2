//! The decoder ops of the CPU backend on slices: a layer's key/value cache, rotary
//! embeddings, RMSNorm, the gated MLP's gate, gathers. Written as plain loops over rows that
//! the compiler vectorizes (SIMD128 in the artifact).

use super::math;
use crate::backend::{Activation, KvCache, RopeTable};
use crate::error::{Error, Result};

/// One layer's keys and values: sequence `b`'s position `j` is row `b·capacity + j` of `k`
/// and `v` (`width` values each).
#[derive(Debug)]
pub(crate) struct CpuCache {
    pub(super) k: Vec<f32>,
    pub(super) v: Vec<f32>,
    pub(super) batch: usize,
    pub(super) width: usize,
    pub(super) capacity: usize,
    len: usize,
}

impl KvCache for CpuCache {
    fn len(&self) -> usize {
        self.len
    }

    fn bytes(&self) -> usize {
        4 * (self.k.capacity() + self.v.capacity())
    }
}

impl CpuCache {
    pub(super) fn new(batch: usize, width: usize, capacity: usize) -> Result<Self> {
        let capacity = capacity.max(1);
        let n = batch
            .checked_mul(width)
            .and_then(|n| n.checked_mul(capacity))
            .filter(|_| batch > 0 && width > 0)
            .ok_or_else(|| Error::Backend {
                message: format!("kv cache of {batch} sequences × {capacity} × {width}"),
            })?;
        Ok(Self {
            k: vec![0.0; n],
            v: vec![0.0; n],
            batch,
            width,
            capacity,
            len: 0,
        })
    }

    /// Appends `n` rows per sequence (`k` and `v` are `[batch·n, width]`), growing to at least
    /// twice the capacity when they do not fit.
    pub(super) fn append(&mut self, k: &[f32], v: &[f32], n: usize) {
        let width = self.width;
        if self.len + n > self.capacity {
            let capacity = (2 * self.capacity).max(self.len + n);
            for data in [&mut self.k, &mut self.v] {
                let mut grown = vec![0f32; self.batch * capacity * width];
                for (b, old) in data.chunks_exact(self.capacity * width).enumerate() {
                    grown[b * capacity * width..][..self.len * width]
                        .copy_from_slice(&old[..self.len * width]);
                }
                *data = grown;
            }
            self.capacity = capacity;
        }
        for (data, new) in [(&mut self.k, k), (&mut self.v, v)] {
            for (b, rows) in new.chunks_exact(n * width).enumerate() {
                data[(b * self.capacity + self.len) * width..][..n * width].copy_from_slice(rows);
            }
        }
        self.len += n;
    }
}

/// Rotates the first `table.rotary_dim` values of each head of each row (`x` is `[rows,
/// heads·d]`) in place.
pub(super) fn rope(x: &mut [f32], table: &RopeTable, heads: usize) {
    let rot = table.rotary_dim;
    let half = rot / 2;
    let cols = x.len() / table.rows.max(1);
    let d = cols / heads.max(1);
    for (row, cs) in x
        .chunks_exact_mut(cols)
        .zip(table.cos_sin.chunks_exact(rot))
    {
        let (cos, sin) = cs.split_at(half);
        for head in row.chunks_exact_mut(d) {
            let (x1, rest) = head.split_at_mut(half);
            let x2 = &mut rest[..half];
            for (((a, b), &c), &s) in x1.iter_mut().zip(x2.iter_mut()).zip(cos).zip(sin) {
                let (p, q) = (*a, *b);
                *a = p * c - q * s;
                *b = q * c + p * s;
            }
        }
    }
}

/// RMSNorm over each group of `gamma.len()` values.
pub(super) fn rms_norm(x: &[f32], gamma: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    for (xs, o) in x
        .chunks_exact(gamma.len())
        .zip(out.chunks_exact_mut(gamma.len()))
    {
        math::rms_norm_group(xs, gamma, eps, o);
    }
    out
}

/// `act(gate) · up` for rows of `[gate | up]`, each `2n` wide.
pub(super) fn gated(x: &[f32], n: usize, act: Activation) -> Vec<f32> {
    let mut out = vec![0f32; x.len() / 2];
    for (row, o) in x.chunks_exact(2 * n).zip(out.chunks_exact_mut(n)) {
        let (gate, up) = row.split_at(n);
        o.copy_from_slice(gate);
        math::activate(o, act);
        for (o, &u) in o.iter_mut().zip(up) {
            *o *= u;
        }
    }
    out
}

/// Rows of `table` (`cols` wide) by index; ids are checked by the caller.
pub(super) fn gather(table: &[f32], cols: usize, ids: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(ids.len() * cols);
    for &i in ids {
        out.extend_from_slice(&table[i as usize * cols..][..cols]);
    }
    out
}
