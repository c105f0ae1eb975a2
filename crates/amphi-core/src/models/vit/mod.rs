//! The Vision Transformer (`ViTForImageClassification`), written once against [`Backend`] with
//! the text encoder's ops: the patch embedding is a linear layer over patches cut on the host
//! (a convolution with stride = kernel is exactly that), the CLS token enters as an all-zero
//! patch whose token-type row is `cls − patch bias`, so `embed` adds it and the position
//! embeddings in one op, and the pre-norm encoder uses `layer_norm`, `attention` and `add`.

mod config;

pub use config::Config;

use super::layers::{LayerNorm, Linear};
use crate::backend::{Activation, Backend, BatchShape, Reduce};
use crate::error::{Error, Result};
use crate::weights::{WEIGHTS_FILE, Weights};

struct Layer<B: Backend> {
    norm_before: LayerNorm<B>,
    qkv: Linear<B>,
    attention_out: Linear<B>,
    norm_after: LayerNorm<B>,
    intermediate: Linear<B>,
    output: Linear<B>,
}

/// A ViT image classifier.
pub(crate) struct Vit<B: Backend> {
    cfg: Config,
    act: Activation,
    /// `[hidden, channels·patch·patch]`: the convolution's weight, flattened.
    patch: Linear<B>,
    /// `[tokens, hidden]`.
    position: B::Tensor,
    /// `[2, hidden]`: row 0 zeros (patches), row 1 `cls − patch bias` (the CLS token).
    cls: B::Tensor,
    layers: Vec<Layer<B>>,
    norm: LayerNorm<B>,
    classifier: Linear<B>,
    labels: Vec<String>,
}

impl<B: Backend> Vit<B> {
    pub fn load(be: &B, w: &Weights, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let (h, i, p) = (cfg.hidden_size, cfg.intermediate_size, cfg.patch_size);
        let k = cfg.num_channels * p * p;
        let e = "vit.embeddings";
        let patch_w = w.read(
            &format!("{e}.patch_embeddings.projection.weight"),
            &[h, cfg.num_channels, p, p],
        )?;
        let patch_b = w.read(&format!("{e}.patch_embeddings.projection.bias"), &[h])?;
        let cls = w.read(&format!("{e}.cls_token"), &[1, 1, h])?;
        let mut table = vec![0f32; 2 * h];
        for ((t, c), b) in table[h..].iter_mut().zip(&cls).zip(&patch_b) {
            *t = c - b;
        }
        let tokens = cfg.tokens();
        let position = w.read(&format!("{e}.position_embeddings"), &[1, tokens, h])?;

        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let n = format!("vit.encoder.layer.{l}");
            layers.push(Layer {
                norm_before: LayerNorm::load(be, w, &format!("{n}.layernorm_before"), h)?,
                qkv: Linear::load_qkv(be, w, |m| format!("{n}.attention.attention.{m}"), h)?,
                attention_out: Linear::load(be, w, &format!("{n}.attention.output.dense"), h, h)?,
                norm_after: LayerNorm::load(be, w, &format!("{n}.layernorm_after"), h)?,
                intermediate: Linear::load(be, w, &format!("{n}.intermediate.dense"), i, h)?,
                output: Linear::load(be, w, &format!("{n}.output.dense"), h, i)?,
            });
        }
        let num_labels = match w.shape("classifier.weight").as_deref() {
            Some(&[n, _]) if n > 0 => n,
            _ => {
                return Err(Error::MissingTensor {
                    file: WEIGHTS_FILE.to_owned(),
                    tensor: "classifier.weight".to_owned(),
                });
            }
        };
        Ok(Self {
            cfg: cfg.clone(),
            act: cfg.activation()?,
            patch: Linear {
                w: be.upload_weight(patch_w, h, k)?,
                b: be.upload(patch_b, &[h])?,
            },
            position: be.activations(position, tokens, h)?,
            cls: be.activations(table, 2, h)?,
            layers,
            norm: LayerNorm::load(be, w, "vit.layernorm", h)?,
            classifier: Linear::load(be, w, "classifier", num_labels, h)?,
            labels: cfg.labels(num_labels)?,
        })
    }

    /// Label names of the classifier, in id order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Classification logits `[batch, labels]` of preprocessed images, `pixels` being
    /// `[batch, channels, size, size]` (NCHW, as `pixel_values`).
    pub fn logits(&self, be: &B, pixels: &[f32], batch: usize) -> Result<B::Tensor> {
        let cfg = &self.cfg;
        let (c, s, p, g) = (cfg.num_channels, cfg.image_size, cfg.patch_size, cfg.grid());
        if batch == 0 || pixels.len() != batch * c * s * s {
            return Err(Error::invalid_input(format!(
                "{} pixel values for {batch} images of {c}×{s}×{s}",
                pixels.len()
            )));
        }
        let seq = cfg.tokens();
        let shape = BatchShape { batch, seq };
        // One row per token: the CLS token's is zeros, patch (gy, gx)'s holds its pixels in
        // the convolution weight's (channel, y, x) order.
        let k = c * p * p;
        let mut rows = vec![0f32; batch * seq * k];
        for (b, image) in rows.chunks_exact_mut(seq * k).enumerate() {
            for (t, row) in image.chunks_exact_mut(k).skip(1).enumerate() {
                let (gy, gx) = (t / g, t % g);
                for (r, dst) in row.chunks_exact_mut(p).enumerate() {
                    let (ch, ky) = (r / p, r % p);
                    let src = ((b * c + ch) * s + gy * p + ky) * s + gx * p;
                    dst.copy_from_slice(&pixels[src..src + p]);
                }
            }
        }
        let x = be.activations(rows, batch * seq, k)?;
        let x = self.patch.forward(be, &x, Activation::None)?;
        let ids: Vec<u32> = (0..(batch * seq) as u32).collect();
        let types: Vec<u32> = (0..batch * seq).map(|t| u32::from(t % seq == 0)).collect();
        let mut x = be.embed(
            [&x, &self.position, &self.cls],
            &ids,
            &shape.positions(),
            &types,
            shape,
        )?;
        let mask = be.key_mask(&vec![1; batch * seq], shape)?;
        let (heads, eps) = (cfg.num_attention_heads, cfg.layer_norm_eps);
        for layer in &self.layers {
            let a = layer.norm_before.forward(be, &x, None, eps)?;
            let qkv = layer.qkv.forward(be, &a, Activation::None)?;
            let context = be.attention(&qkv, &mask, shape, heads)?;
            let attended = layer
                .attention_out
                .forward(be, &context, Activation::None)?;
            let h = be.add(&attended, &x)?;
            let a = layer.norm_after.forward(be, &h, None, eps)?;
            let inner = layer.intermediate.forward(be, &a, self.act)?;
            let out = layer.output.forward(be, &inner, Activation::None)?;
            x = be.add(&out, &h)?;
        }
        let x = self.norm.forward(be, &x, None, eps)?;
        let cls = be.reduce(&x, &mask, shape, Reduce::First)?;
        self.classifier.forward(be, &cls, Activation::None)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::Precision;
    use crate::backend::cpu::Cpu;
    use crate::backend::gpu::Gpu;
    use crate::test_support::fixtures;

    fn values(v: &serde_json::Value) -> Vec<f32> {
        v["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|x| x.as_f64().expect("number") as f32)
            .collect()
    }

    /// The tiny ViT from the stored `pixel_values` (each image, and both as a batch) against
    /// PyTorch's logits, abs 1e-4 (the fixtures' suggested tolerance), on the CPU and the GPU.
    fn tiny_vit_logits<B: Backend>(be: &B) {
        let dir = fixtures().join("models/tiny-vit");
        let cfg: Config =
            serde_json::from_slice(&std::fs::read(dir.join("config.json")).expect("config"))
                .expect("config.json");
        let bytes = std::fs::read(dir.join("model.safetensors")).expect("weights");
        let vit = Vit::load(be, &Weights::parse(&bytes).expect("parse"), &cfg).expect("load");
        assert_eq!(vit.labels(), ["cat", "dog", "espresso"]);
        let golden: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fixtures().join("golden/tiny-vit.json")).expect("golden"),
        )
        .expect("json");
        let cases = golden["cases"].as_array().expect("cases");
        let mut all_pixels = Vec::new();
        for case in cases
            .iter()
            .filter(|c| c.get("pixel_values").is_some_and(|p| p.is_object()))
        {
            let pixels = values(&case["pixel_values"]);
            let got = be
                .read(&vit.logits(be, &pixels, 1).expect("logits"))
                .expect("read");
            check(
                case["name"].as_str().unwrap_or("?"),
                &got,
                &values(&case["logits"]),
            );
            all_pixels.extend(pixels);
        }
        let batch = cases
            .iter()
            .find(|c| c["name"] == "batch")
            .expect("batch case");
        let got = be
            .read(&vit.logits(be, &all_pixels, 2).expect("logits"))
            .expect("read");
        check("batch", &got, &values(&batch["logits"]));
        assert!(
            vit.logits(be, &all_pixels[1..], 2).is_err(),
            "short input is refused"
        );
    }

    fn check(what: &str, got: &[f32], want: &[f32]) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-4, "{what}: {got:?} vs {want:?}");
        }
    }

    #[test]
    fn tiny_vit_on_the_cpu() {
        tiny_vit_logits(&Cpu);
    }

    #[test]
    fn tiny_vit_on_the_gpu() {
        let host = amphi_gpu::WgpuHost::new()
            .unwrap_or_else(|e| panic!("GPU tests need a GPU adapter (in CI: Mesa lavapipe): {e}"));
        tiny_vit_logits(&Gpu::new(Arc::new(host), Precision::F32).expect("kernels"));
    }
}
