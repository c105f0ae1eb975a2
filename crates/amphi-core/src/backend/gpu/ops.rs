//! The decoder's smaller ops: rotary embeddings, RMSNorm, the gated MLP's gate, element-wise
//! products and row gathers, one WGSL dispatch each.

use super::{Gpu, GpuTensor, act_code, dim, elementwise_groups, row_groups};
use crate::backend::{Activation, RopeTable};
use crate::error::{Error, Result};

fn invalid(message: String) -> Error {
    Error::Backend { message }
}

impl Gpu {
    /// [`crate::backend::Backend::rope`].
    pub(super) fn rope_op(
        &self,
        x: &GpuTensor,
        table: &RopeTable,
        heads: usize,
    ) -> Result<GpuTensor> {
        if x.f16 || heads == 0 || !x.cols.is_multiple_of(heads) {
            return Err(invalid(format!(
                "rope: [{}, {}] in {heads} heads",
                x.rows, x.cols
            )));
        }
        let (d, rot) = (x.cols / heads, table.rotary_dim);
        if table.rows != x.rows
            || rot % 2 != 0
            || rot > d
            || table.cos_sin.len() != table.rows * rot
        {
            return Err(invalid(format!(
                "rope: a table of {} rows rotating {rot} of {} values for [{}, {}] in heads of {d}",
                table.rows,
                table.cos_sin.len(),
                x.rows,
                x.cols
            )));
        }
        let n = x.rows * x.cols;
        let out = self.alloc(x.rows, x.cols)?;
        let cos_sin = if table.cos_sin.is_empty() {
            None
        } else {
            Some(self.upload_bytes(bytemuck::cast_slice(&table.cos_sin), 1, table.cos_sin.len())?)
        };
        self.run(
            "rope",
            &[dim(n)?, dim(x.cols)?, dim(d)?, dim(rot)?],
            // Without a table (nothing rotated), `x` stands in for the unused binding.
            &[x.id(), cos_sin.as_ref().unwrap_or(x).id(), out.id()],
            elementwise_groups(n)?,
        )?;
        Ok(out)
    }

    /// [`crate::backend::Backend::rms_norm`].
    pub(super) fn rms_norm_op(
        &self,
        x: &GpuTensor,
        gamma: &GpuTensor,
        eps: f64,
    ) -> Result<GpuTensor> {
        let size = gamma.rows * gamma.cols;
        if size == 0 || !x.cols.is_multiple_of(size) || x.f16 || gamma.f16 {
            return Err(invalid(format!(
                "rms_norm: a gamma of {size} over [{}, {}]",
                x.rows, x.cols
            )));
        }
        let groups = x.rows * x.cols / size;
        dim(x.rows * x.cols)?;
        let out = self.alloc(x.rows, x.cols)?;
        if groups > 0 {
            self.run(
                "rms_norm",
                &[dim(groups)?, dim(size)?, (eps as f32).to_bits(), 0],
                &[x.id(), gamma.id(), out.id()],
                row_groups(groups, 1)?,
            )?;
        }
        Ok(out)
    }

    /// [`crate::backend::Backend::gated`].
    pub(super) fn gated_op(&self, x: &GpuTensor, act: Activation) -> Result<GpuTensor> {
        if !x.cols.is_multiple_of(2) || x.f16 {
            return Err(invalid(format!(
                "gated: [{}, {}] is not a gate and an up projection",
                x.rows, x.cols
            )));
        }
        let width = x.cols / 2;
        let n = x.rows * width;
        dim(x.rows * x.cols)?;
        let out = self.alloc(x.rows, width)?;
        self.run(
            "gated",
            &[dim(n)?, dim(width)?, act_code(act), 0],
            &[x.id(), out.id()],
            elementwise_groups(n)?,
        )?;
        Ok(out)
    }

    /// [`crate::backend::Backend::mul`].
    pub(super) fn mul_op(&self, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
        if (a.rows, a.cols) != (b.rows, b.cols) || a.f16 || b.f16 {
            return Err(invalid(format!(
                "mul: [{}, {}] and [{}, {}]",
                a.rows, a.cols, b.rows, b.cols
            )));
        }
        let n = a.rows * a.cols;
        let out = self.alloc(a.rows, a.cols)?;
        self.run(
            "mul",
            &[dim(n)?, 0],
            &[a.id(), b.id(), out.id()],
            elementwise_groups(n)?,
        )?;
        Ok(out)
    }

    /// [`crate::backend::Backend::scale`].
    pub(super) fn scale_op(&self, x: &GpuTensor, s: f32) -> Result<GpuTensor> {
        if x.f16 {
            return Err(invalid("scale: f16 activations".to_owned()));
        }
        let n = x.rows * x.cols;
        let out = self.alloc(x.rows, x.cols)?;
        self.run(
            "scale",
            &[dim(n)?, s.to_bits()],
            &[x.id(), out.id()],
            elementwise_groups(n)?,
        )?;
        Ok(out)
    }

    /// [`crate::backend::Backend::gather`]: f32 tables with `gather`, f16 ones (weights of an
    /// f16 model) with `gather_f16`.
    pub(super) fn gather_op(&self, table: &GpuTensor, ids: &[u32]) -> Result<GpuTensor> {
        if ids.iter().any(|&i| i as usize >= table.rows) {
            return Err(Error::invalid_input(
                "a row index is outside the gathered table",
            ));
        }
        let cols = table.cols;
        let n = ids.len() * cols;
        dim(table.rows * cols)?;
        let out = self.alloc(ids.len(), cols)?;
        if n == 0 {
            return Ok(out);
        }
        let ids = self.upload_bytes(bytemuck::cast_slice(ids), 1, ids.len())?;
        self.run(
            if table.f16 { "gather_f16" } else { "gather" },
            &[dim(n)?, dim(cols)?],
            &[ids.id(), table.id(), out.id()],
            elementwise_groups(n)?,
        )?;
        Ok(out)
    }
}
