//! Building blocks shared by the architectures: a linear layer and a layer norm, loaded from
//! Hugging Face tensor names.

use std::collections::BTreeMap;

use crate::backend::{Activation, Backend};
use crate::error::Result;
use crate::weights::Weights;

/// The activation a config's `hidden_act` names, if the engine has it.
pub(crate) fn activation(hidden_act: &str) -> Option<Activation> {
    match hidden_act {
        "gelu" => Some(Activation::GeluErf),
        "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Some(Activation::GeluTanh),
        "relu" => Some(Activation::Relu),
        "silu" | "swish" => Some(Activation::Silu),
        _ => None,
    }
}

/// Label names in id order from a config's `id2label`, or `LABEL_i` when it has none; the
/// first missing id otherwise.
pub(crate) fn labels(
    id2label: &BTreeMap<String, String>,
    num_labels: usize,
) -> std::result::Result<Vec<String>, usize> {
    (0..num_labels)
        .map(|i| match id2label.get(&i.to_string()) {
            Some(label) => Ok(label.clone()),
            None if id2label.is_empty() => Ok(format!("LABEL_{i}")),
            None => Err(i),
        })
        .collect()
}

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

    /// The query, key and value projections of one attention block as one `[3·h, h]` layer;
    /// `name(m)` is the tensor prefix of projection `m` (`query`, `key`, `value`).
    pub fn load_qkv(be: &B, w: &Weights, name: impl Fn(&str) -> String, h: usize) -> Result<Self> {
        let names = |suffix: &str| -> Vec<String> {
            ["query", "key", "value"]
                .iter()
                .map(|m| format!("{}.{suffix}", name(m)))
                .collect()
        };
        Ok(Self {
            w: be.upload_weight(w.read_stacked(&names("weight"), &[h, h])?, 3 * h, h)?,
            b: be.upload(w.read_stacked(&names("bias"), &[h])?, &[3 * h])?,
        })
    }

    pub fn forward(&self, be: &B, x: &B::Tensor, act: Activation) -> Result<B::Tensor> {
        be.linear(x, &self.w, Some(&self.b), act)
    }
}

/// BERT's pooler: `tanh(dense(hidden[:, 0]))`, `[batch, hidden]` (`None` without one).
pub(crate) fn pool_first<B: Backend>(
    be: &B,
    pooler: Option<&Linear<B>>,
    enc: &crate::models::Encoded<B>,
) -> Result<Option<B::Tensor>> {
    let Some(pooler) = pooler else {
        return Ok(None);
    };
    let first = be.reduce(
        &enc.hidden,
        &enc.key_mask,
        enc.shape,
        crate::backend::Reduce::First,
    )?;
    pooler.forward(be, &first, Activation::Tanh).map(Some)
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
