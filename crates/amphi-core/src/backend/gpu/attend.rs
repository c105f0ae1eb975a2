//! Attention with separate projections, over fresh keys and values or a key/value cache: one
//! flash-style kernel for both (`kernels/attend.wgsl`), which reads sequence `b`'s key `j` at
//! row `b·stride + j` so that a cache's spare capacity is skipped. The cache grows by a
//! strided row copy (`kernels/copy_rows.wgsl`).

use super::{Gpu, GpuTensor, dim, elementwise_groups, row_groups};
use crate::backend::{AttentionSpec, KvCache};
use crate::error::{Error, Result};

/// Largest head the attention kernel holds in workgroup memory (`MAX_HEAD_DIM` in
/// `attend.wgsl`).
const MAX_HEAD_DIM: usize = 512;

/// One layer's key/value cache (see [`KvCache`]): keys and values of `batch` sequences in two
/// buffers of `batch × capacity × width` f32, sequence `b`'s position `j` at row
/// `b·capacity + j`; positions past `len` hold whatever the pooled buffers held. The buffers go
/// back to the pool when the cache is dropped.
pub(crate) struct GpuCache {
    k: GpuTensor,
    v: GpuTensor,
    batch: usize,
    width: usize,
    len: usize,
    capacity: usize,
}

impl KvCache for GpuCache {
    fn len(&self) -> usize {
        self.len
    }

    fn bytes(&self) -> usize {
        (self.k.buffer.bytes + self.v.buffer.bytes) as usize
    }
}

/// A strided copy of `rows` rows of `width` values in each of `seqs` sequences: from row
/// `s·src_stride + src_offset + r` to row `s·dst_stride + dst_offset + r`.
struct RowCopy {
    seqs: usize,
    rows: usize,
    width: usize,
    src_stride: usize,
    src_offset: usize,
    dst_stride: usize,
    dst_offset: usize,
}

fn invalid(message: String) -> Error {
    Error::Backend { message }
}

impl Gpu {
    /// [`crate::backend::Backend::attend`]: `k` and `v` hold `spec.keys` rows per sequence.
    pub(super) fn attend_fresh(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        key_mask: Option<&GpuTensor>,
        spec: &AttentionSpec,
    ) -> Result<GpuTensor> {
        let (rows, cols) = (spec.batch * spec.keys, spec.kv_width());
        if (k.rows, k.cols) != (rows, cols) || (v.rows, v.cols) != (rows, cols) {
            return Err(invalid(format!(
                "attend: keys [{}, {}] and values [{}, {}], expected [{rows}, {cols}] for {spec:?}",
                k.rows, k.cols, v.rows, v.cols
            )));
        }
        self.attend_rows(q, k, v, spec.keys, key_mask, spec)
    }

    /// [`crate::backend::Backend::attend_cached`].
    pub(super) fn attend_cache(
        &self,
        q: &GpuTensor,
        cache: &GpuCache,
        key_mask: Option<&GpuTensor>,
        spec: &AttentionSpec,
    ) -> Result<GpuTensor> {
        if spec.keys != cache.len || spec.batch != cache.batch || spec.kv_width() != cache.width {
            return Err(invalid(format!(
                "attend_cached: a cache of {} sequences of {} positions {} wide for {spec:?}",
                cache.batch, cache.len, cache.width
            )));
        }
        self.attend_rows(q, &cache.k, &cache.v, cache.capacity, key_mask, spec)
    }

    /// The attention kernel over keys and values of `stride` rows per sequence (`spec.keys`
    /// of them used); checks everything but the key and value shapes.
    fn attend_rows(
        &self,
        q: &GpuTensor,
        k: &GpuTensor,
        v: &GpuTensor,
        stride: usize,
        key_mask: Option<&GpuTensor>,
        spec: &AttentionSpec,
    ) -> Result<GpuTensor> {
        if !spec.is_valid() {
            return Err(invalid(format!("attend: {spec:?}")));
        }
        if spec.head_dim > MAX_HEAD_DIM {
            return Err(invalid(format!(
                "attend: heads of {} values; the GPU attention kernel takes at most {MAX_HEAD_DIM}",
                spec.head_dim
            )));
        }
        let rows = spec.batch * spec.queries;
        if (q.rows, q.cols) != (rows, spec.q_width()) {
            return Err(invalid(format!(
                "attend: queries [{}, {}], expected [{rows}, {}] for {spec:?}",
                q.rows,
                q.cols,
                spec.q_width()
            )));
        }
        if let Some(m) = key_mask
            && ((m.rows, m.cols) != (spec.batch, spec.keys) || m.f16)
        {
            return Err(invalid(format!(
                "attend: a key mask [{}, {}], expected [{}, {}]",
                m.rows, m.cols, spec.batch, spec.keys
            )));
        }
        if q.f16 || k.f16 || v.f16 {
            return Err(invalid("attend: f16 activations".to_owned()));
        }
        // Indices the kernel computes stay within u32.
        dim(spec.batch * stride * spec.kv_width())?;
        dim(rows * spec.q_width())?;
        let end = dim(spec.offset + spec.queries)?;
        // A window at least as long as every query's position restricts nothing.
        let window = spec.window.map_or(0, |w| w.min(end as usize));
        let out = self.alloc(rows, spec.q_width())?;
        self.run(
            "attend",
            &[
                dim(rows)?,
                dim(spec.queries)?,
                dim(spec.keys)?,
                dim(stride)?,
                dim(spec.heads)?,
                dim(spec.kv_heads)?,
                dim(spec.head_dim)?,
                spec.scale.to_bits(),
                u32::from(spec.causal),
                dim(spec.offset)?,
                dim(window)?,
                u32::from(key_mask.is_some()),
            ],
            // Without a mask, the queries stand in for the unused binding.
            &[q.id(), k.id(), v.id(), key_mask.unwrap_or(q).id(), out.id()],
            row_groups(rows, dim(spec.heads)?)?,
        )?;
        Ok(out)
    }

    /// [`crate::backend::Backend::kv_cache`].
    pub(super) fn new_cache(
        &self,
        batch: usize,
        width: usize,
        capacity: usize,
    ) -> Result<GpuCache> {
        if batch == 0 || width == 0 {
            return Err(invalid(format!(
                "kv_cache: {batch} sequences of {width}-wide rows"
            )));
        }
        dim(batch * capacity * width)?;
        Ok(GpuCache {
            k: self.alloc(batch * capacity, width)?,
            v: self.alloc(batch * capacity, width)?,
            batch,
            width,
            len: 0,
            capacity,
        })
    }

    /// [`crate::backend::Backend::kv_append`]: grows the cache to at least twice its capacity
    /// when the new rows do not fit.
    pub(super) fn append(&self, cache: &mut GpuCache, k: &GpuTensor, v: &GpuTensor) -> Result<()> {
        let (batch, width) = (cache.batch, cache.width);
        if (k.rows, k.cols) != (v.rows, v.cols)
            || k.cols != width
            || !k.rows.is_multiple_of(batch)
            || k.f16
            || v.f16
        {
            return Err(invalid(format!(
                "kv_append: keys [{}, {}] and values [{}, {}] to {batch} sequences of {width}",
                k.rows, k.cols, v.rows, v.cols
            )));
        }
        let n = k.rows / batch;
        if n == 0 {
            return Ok(());
        }
        let len = cache.len + n;
        if len > cache.capacity {
            self.grow(cache, len.max(2 * cache.capacity))?;
        }
        for (src, dst) in [(k, &cache.k), (v, &cache.v)] {
            self.copy_rows(
                src,
                dst,
                &RowCopy {
                    seqs: batch,
                    rows: n,
                    width,
                    src_stride: n,
                    src_offset: 0,
                    dst_stride: cache.capacity,
                    dst_offset: cache.len,
                },
            )?;
        }
        cache.len = len;
        Ok(())
    }

    /// Moves the cache to new buffers with room for `capacity` positions.
    fn grow(&self, cache: &mut GpuCache, capacity: usize) -> Result<()> {
        let (batch, width) = (cache.batch, cache.width);
        dim(batch * capacity * width)?;
        let k = self.alloc(batch * capacity, width)?;
        let v = self.alloc(batch * capacity, width)?;
        if cache.len > 0 {
            for (src, dst) in [(&cache.k, &k), (&cache.v, &v)] {
                self.copy_rows(
                    src,
                    dst,
                    &RowCopy {
                        seqs: batch,
                        rows: cache.len,
                        width,
                        src_stride: cache.capacity,
                        src_offset: 0,
                        dst_stride: capacity,
                        dst_offset: 0,
                    },
                )?;
            }
        }
        // The old buffers go back to the pool; a later write to them is ordered after the
        // copies above.
        cache.k = k;
        cache.v = v;
        cache.capacity = capacity;
        Ok(())
    }

    fn copy_rows(&self, src: &GpuTensor, dst: &GpuTensor, c: &RowCopy) -> Result<()> {
        let n = c.seqs * c.rows * c.width;
        self.run(
            "copy_rows",
            &[
                dim(n)?,
                dim(c.rows)?,
                dim(c.width)?,
                dim(c.src_stride)?,
                dim(c.src_offset)?,
                dim(c.dst_stride)?,
                dim(c.dst_offset)?,
                0,
            ],
            &[src.id(), dst.id()],
            elementwise_groups(n)?,
        )
    }
}
