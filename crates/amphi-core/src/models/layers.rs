//! Building blocks shared by the architectures: a linear layer and a layer norm, loaded from
//! Hugging Face tensor names.

use crate::backend::{Activation, Backend};
use crate::error::Result;
use crate::weights::Weights;

pub(crate) struct Linear<B: Backend> {
    pub w: B::Weight,
    pub b: B::Tensor,
}

impl<B: Backend> Linear<B> {
    pub fn load(be: &B, w: &Weights, name: &str, out: usize, inp: usize) -> Result<Self> {
        Ok(Self {
            w: w.get_weight(be, &format!("{name}.weight"), out, inp)?,
            b: w.get(be, &format!("{name}.bias"), &[out])?,
        })
    }

    pub fn forward(&self, be: &B, x: &B::Tensor, act: Activation) -> Result<B::Tensor> {
        be.linear(x, &self.w, Some(&self.b), act)
    }
}

pub(crate) struct LayerNorm<B: Backend> {
    pub gamma: B::Tensor,
    pub beta: B::Tensor,
}

impl<B: Backend> LayerNorm<B> {
    pub fn load(be: &B, w: &Weights, name: &str, size: usize) -> Result<Self> {
        Ok(Self {
            gamma: w.get(be, &format!("{name}.weight"), &[size])?,
            beta: w.get(be, &format!("{name}.bias"), &[size])?,
        })
    }

    /// `LayerNorm(x + residual)`.
    pub fn forward(
        &self,
        be: &B,
        x: &B::Tensor,
        residual: Option<&B::Tensor>,
        eps: f64,
    ) -> Result<B::Tensor> {
        be.layer_norm(x, residual, &self.gamma, &self.beta, eps)
    }
}
