//! CPU backend on candle-core. On wasm32 built with `+simd128`, candle's matrix multiply (the
//! `gemm` crate) and its unary kernels use SIMD128.

use candle_core::{D, DType, Device, Tensor};

use super::{Activation, Backend, BatchShape, Reduce};
use crate::error::{Error, Result};
use crate::profile::timed;

/// The CPU backend. Stateless: tensors carry their own storage.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Cpu;

fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?;
    let e = x.broadcast_sub(&max)?.exp()?;
    let sum = e.sum_keepdim(D::Minus1)?;
    e.broadcast_div(&sum)
}

impl Backend for Cpu {
    type Tensor = Tensor;

    fn upload(&self, data: Vec<f32>, shape: &[usize]) -> Result<Tensor> {
        Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
    }

    fn embed(
        &self,
        [word, position, token_type]: [&Tensor; 3],
        ids: &[u32],
        type_ids: &[u32],
        shape: BatchShape,
    ) -> Result<Tensor> {
        let n = shape.tokens();
        if ids.len() != n || type_ids.len() != n {
            return Err(Error::Backend {
                message: format!("embed: {} ids for {n} positions", ids.len()),
            });
        }
        let ids = Tensor::from_slice(ids, n, &Device::Cpu)?;
        let type_ids = Tensor::from_slice(type_ids, n, &Device::Cpu)?;
        let hidden = word.dim(1)?;
        timed("embed", || -> Result<Tensor> {
            let positions = position
                .narrow(0, 0, shape.seq)?
                .unsqueeze(0)?
                .broadcast_as((shape.batch, shape.seq, hidden))?
                .reshape((n, hidden))?;
            let x = word
                .index_select(&ids, 0)?
                .add(&token_type.index_select(&type_ids, 0)?)?
                .add(&positions)?;
            Ok(x)
        })
    }

    fn linear(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: Option<&Tensor>,
        act: Activation,
    ) -> Result<Tensor> {
        let mut y = timed("matmul", || x.matmul(&w.t()?))?;
        if let Some(b) = b {
            y = timed("bias", || y.broadcast_add(b))?;
        }
        let y = timed("activation", || match act {
            Activation::None => Ok(y),
            Activation::GeluErf => y.gelu_erf(),
            Activation::GeluTanh => y.gelu(),
            Activation::Relu => y.relu(),
            Activation::Tanh => y.tanh(),
        })?;
        Ok(y)
    }

    fn layer_norm(
        &self,
        x: &Tensor,
        residual: Option<&Tensor>,
        gamma: &Tensor,
        beta: &Tensor,
        eps: f64,
    ) -> Result<Tensor> {
        timed("layer_norm", || -> Result<Tensor> {
            let x = match residual {
                Some(r) => x.add(r)?,
                None => x.clone(),
            };
            let mean = x.mean_keepdim(D::Minus1)?;
            let centered = x.broadcast_sub(&mean)?;
            let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
            let inv_std = var.affine(1.0, eps)?.sqrt()?.recip()?;
            Ok(centered
                .broadcast_mul(&inv_std)?
                .broadcast_mul(gamma)?
                .broadcast_add(beta)?)
        })
    }

    fn key_mask(&self, mask: &[u32], shape: BatchShape) -> Result<Tensor> {
        let data: Vec<f32> = mask
            .iter()
            .map(|&m| if m != 0 { 1.0 } else { 0.0 })
            .collect();
        Ok(Tensor::from_vec(
            data,
            (shape.batch, shape.seq),
            &Device::Cpu,
        )?)
    }

    fn attention(
        &self,
        qkv: &Tensor,
        key_mask: &Tensor,
        shape: BatchShape,
        heads: usize,
    ) -> Result<Tensor> {
        timed("attention", || -> Result<Tensor> {
            let BatchShape { batch, seq } = shape;
            let hidden = qkv.dim(1)? / 3;
            let head_dim = hidden / heads;
            // [b, s, 3, heads, d] -> three [b, heads, s, d]
            let qkv = qkv.reshape((batch, seq, 3, heads, head_dim))?;
            let part = |i: usize| -> candle_core::Result<Tensor> {
                qkv.narrow(2, i, 1)?
                    .squeeze(2)?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (part(0)?, part(1)?, part(2)?);
            let scale = 1.0 / (head_dim as f64).sqrt();
            // Additive bias: 0 for attended keys, f32::MIN for masked ones (as Hugging Face does).
            let bias = key_mask
                .affine(f32::MAX as f64, -(f32::MAX as f64))?
                .reshape((batch, 1, 1, seq))?;
            let scores = q
                .matmul(&k.t()?)?
                .affine(scale, 0.0)?
                .broadcast_add(&bias)?;
            let probs = softmax_last_dim(&scores)?;
            let out = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch * seq, hidden))?;
            Ok(out)
        })
    }

    fn reduce(
        &self,
        x: &Tensor,
        key_mask: &Tensor,
        shape: BatchShape,
        how: Reduce,
    ) -> Result<Tensor> {
        timed("pool", || -> Result<Tensor> {
            let hidden = x.dim(1)?;
            let x = x.reshape((shape.batch, shape.seq, hidden))?;
            let pooled = match how {
                Reduce::First => x.narrow(1, 0, 1)?.squeeze(1)?,
                Reduce::MaskedMean => {
                    let mask = key_mask.unsqueeze(2)?;
                    let sum = x.broadcast_mul(&mask)?.sum(1)?;
                    let count = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?;
                    sum.broadcast_div(&count)?
                }
            };
            Ok(pooled)
        })
    }

    fn l2_normalize(&self, x: &Tensor) -> Result<Tensor> {
        let norm = x
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .clamp(1e-12f32, f32::MAX)?;
        Ok(x.broadcast_div(&norm)?)
    }

    fn read(&self, x: &Tensor) -> Result<Vec<f32>> {
        Ok(x.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
    }
}
