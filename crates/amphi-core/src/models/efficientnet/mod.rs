//! EfficientNet-Lite (`EfficientNetLiteForImageClassification`, the PyTorch port of the
//! TensorFlow Lite models), written once against [`Backend`].
//!
//! Activations stay NHWC as `[batch·h·w, channels]` matrices, so a 1×1 convolution is a
//! [`Backend::linear`]. Every BatchNorm is folded into the convolution before it at load
//! (`w' = w·γ/√(var+ε)`, `b' = β − mean·γ/√(var+ε)`, computed in f64), so each convolution is
//! one op with its bias and ReLU6: the stem is a linear layer over 3×3 patches cut on the host
//! (TF "SAME" padding), each MBConv block is expand (1×1) → [`Backend::depthwise`] → project
//! (1×1) with [`Backend::add`] for the residual, and the head's global average pool is
//! [`Backend::reduce`] with an all-ones mask over the `h·w` positions.

mod config;

pub use config::Config;

use super::layers::Linear;
use crate::backend::{Activation, Backend, BatchShape, Conv2d, ImageShape, Reduce, same_padding};
use crate::error::{Error, Result};
use crate::weights::{WEIGHTS_FILE, Weights};

/// Sees a named intermediate activation and its image shape (tests compare them with PyTorch's).
type Tap<'a, T> = dyn FnMut(&str, &T, ImageShape) -> Result<()> + 'a;

/// One MBConv block with its BatchNorms folded in.
struct Block<B: Backend> {
    spec: config::Block,
    /// 1×1 expansion `[hidden, in]`; absent when the expansion ratio is 1.
    expand: Option<Linear<B>>,
    /// Depthwise filters `[k·k, hidden]` and bias `[hidden]`.
    depthwise: (B::Tensor, B::Tensor),
    /// 1×1 projection `[out, hidden]`.
    project: Linear<B>,
}

/// An EfficientNet-Lite image classifier.
pub(crate) struct EfficientNet<B: Backend> {
    cfg: Config,
    /// The 3×3 stride-2 stem as `[stem, channels·3·3]` over (channel, ky, kx) patches.
    stem: Linear<B>,
    blocks: Vec<Block<B>>,
    /// 1×1 head convolution `[hidden_dim, last out]`.
    head: Linear<B>,
    classifier: Linear<B>,
    labels: Vec<String>,
}

/// A convolution's weight `[out, rest…]` and the BatchNorm after it, folded: the weight scaled
/// per output channel (rows of `rest` values) and the bias.
fn folded(
    w: &Weights,
    conv: &str,
    bn: &str,
    shape: &[usize],
    eps: f64,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let out = shape[0];
    let weight = w.read(&format!("{conv}.weight"), shape)?;
    let read = |what: &str| w.read(&format!("{bn}.{what}"), &[out]);
    let (gamma, beta) = (read("weight")?, read("bias")?);
    let (mean, var) = (read("running_mean")?, read("running_var")?);
    let per = weight.len() / out.max(1);
    let mut wf = Vec::with_capacity(weight.len());
    let mut bias = Vec::with_capacity(out);
    for o in 0..out {
        let scale = f64::from(gamma[o]) / (f64::from(var[o]) + eps).sqrt();
        wf.extend(
            weight[o * per..][..per]
                .iter()
                .map(|&v| (f64::from(v) * scale) as f32),
        );
        bias.push((f64::from(beta[o]) - f64::from(mean[o]) * scale) as f32);
    }
    Ok((wf, bias))
}

/// A 1×1 convolution and its BatchNorm as a linear layer `[out, inp]`.
fn pointwise<B: Backend>(
    be: &B,
    w: &Weights,
    conv: &str,
    bn: &str,
    (out, inp): (usize, usize),
    eps: f64,
) -> Result<Linear<B>> {
    let (wf, bias) = folded(w, conv, bn, &[out, inp, 1, 1], eps)?;
    Ok(Linear {
        w: be.upload_weight(wf, out, inp)?,
        b: be.upload(bias, &[out])?,
    })
}

impl<B: Backend> EfficientNet<B> {
    pub fn load(be: &B, w: &Weights, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let eps = cfg.batch_norm_eps;
        let (c, stem_c) = (cfg.num_channels, cfg.stem_channels);
        let (stem_w, stem_b) = folded(w, "_conv_stem", "_bn0", &[stem_c, c, 3, 3], eps)?;
        let stem = Linear {
            w: be.upload_weight(stem_w, stem_c, c * 9)?,
            b: be.upload(stem_b, &[stem_c])?,
        };
        let mut blocks = Vec::new();
        for (i, spec) in cfg.blocks().into_iter().enumerate() {
            let n = format!("_blocks.{i}");
            let hidden = spec.hidden();
            let expand = if spec.expand == 1 {
                None
            } else {
                Some(pointwise(
                    be,
                    w,
                    &format!("{n}._expand_conv"),
                    &format!("{n}._bn0"),
                    (hidden, spec.inp),
                    eps,
                )?)
            };
            let k = spec.kernel;
            let (dw, dw_b) = folded(
                w,
                &format!("{n}._depthwise_conv"),
                &format!("{n}._bn1"),
                &[hidden, 1, k, k],
                eps,
            )?;
            // [hidden, k·k] → [k·k, hidden]: channels contiguous, like the activations.
            let mut taps = vec![0f32; k * k * hidden];
            for (ch, filter) in dw.chunks_exact(k * k).enumerate() {
                for (t, &v) in filter.iter().enumerate() {
                    taps[t * hidden + ch] = v;
                }
            }
            blocks.push(Block {
                spec,
                expand,
                depthwise: (
                    be.activations(taps, k * k, hidden)?,
                    be.upload(dw_b, &[hidden])?,
                ),
                project: pointwise(
                    be,
                    w,
                    &format!("{n}._project_conv"),
                    &format!("{n}._bn2"),
                    (spec.out, hidden),
                    eps,
                )?,
            });
        }
        let last = cfg.out_channels.last().copied().unwrap_or_default();
        let head = pointwise(be, w, "_conv_head", "_bn1", (cfg.hidden_dim, last), eps)?;
        let num_labels = match w.shape("_fc.weight").as_deref() {
            Some(&[n, _]) if n > 0 => n,
            _ => {
                return Err(Error::MissingTensor {
                    file: WEIGHTS_FILE.to_owned(),
                    tensor: "_fc.weight".to_owned(),
                });
            }
        };
        Ok(Self {
            cfg: cfg.clone(),
            stem,
            blocks,
            head,
            classifier: Linear::load(be, w, "_fc", num_labels, cfg.hidden_dim)?,
            labels: cfg.labels(num_labels)?,
        })
    }

    /// Label names of the classifier, in id order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Classification logits `[batch, labels]` of preprocessed images, `pixels` being
    /// `[batch, channels, size, size]` (NCHW, `(u8 − 127) / 128`).
    pub fn logits(&self, be: &B, pixels: &[f32], batch: usize) -> Result<B::Tensor> {
        self.forward(be, pixels, batch, &mut |_, _, _| Ok(()))
    }

    /// [`EfficientNet::logits`], showing `tap` the activations after the stem (`stem`), after
    /// each stage (`stage1`…), after the head's convolution (`head`) and once pooled
    /// (`pooled`), with their image shape.
    fn forward(
        &self,
        be: &B,
        pixels: &[f32],
        batch: usize,
        tap: &mut Tap<'_, B::Tensor>,
    ) -> Result<B::Tensor> {
        let (c, s) = (self.cfg.num_channels, self.cfg.image_size);
        if batch == 0 || pixels.len() != batch * c * s * s {
            return Err(Error::invalid_input(format!(
                "{} pixel values for {batch} images of {c}×{s}×{s}",
                pixels.len()
            )));
        }
        let input = ImageShape {
            batch,
            height: s,
            width: s,
        };
        let (patches, mut shape) = stem_patches(pixels, input, c);
        let x = be.activations(patches, shape.pixels(), c * 9)?;
        let mut x = self.stem.forward(be, &x, Activation::Relu6)?;
        tap("stem", &x, shape)?;
        let mut stage_ends = Vec::new();
        let mut end = 0;
        for &r in &self.cfg.num_block_repeats {
            end += r;
            stage_ends.push(end - 1);
        }
        for (i, block) in self.blocks.iter().enumerate() {
            let spec = block.spec;
            let h = match &block.expand {
                Some(expand) => expand.forward(be, &x, Activation::Relu6)?,
                None => x.clone(),
            };
            let conv = Conv2d {
                input: shape,
                kernel: spec.kernel,
                stride: spec.stride,
            };
            let (dw, dw_b) = &block.depthwise;
            let h = be.depthwise(&h, dw, dw_b, conv, Activation::Relu6)?;
            let h = block.project.forward(be, &h, Activation::None)?;
            x = if spec.residual() { be.add(&h, &x)? } else { h };
            shape = conv.output();
            if let Some(stage) = stage_ends.iter().position(|&e| e == i) {
                tap(&format!("stage{}", stage + 1), &x, shape)?;
            }
        }
        let x = self.head.forward(be, &x, Activation::Relu6)?;
        tap("head", &x, shape)?;
        let positions = BatchShape {
            batch,
            seq: shape.height * shape.width,
        };
        let mask = be.key_mask(&vec![1; positions.tokens()], positions)?;
        let pooled = be.reduce(&x, &mask, positions, Reduce::MaskedMean)?;
        tap(
            "pooled",
            &pooled,
            ImageShape {
                batch,
                height: 1,
                width: 1,
            },
        )?;
        self.classifier.forward(be, &pooled, Activation::None)
    }
}

/// The stem's 3×3 stride-2 patches with TF "SAME" zero padding: one row per output position
/// `(n, oy, ox)`, columns in the convolution weight's `(channel, ky, kx)` order.
fn stem_patches(pixels: &[f32], input: ImageShape, channels: usize) -> (Vec<f32>, ImageShape) {
    let (k, stride) = (3, 2);
    let (h, w) = (input.height, input.width);
    let (oh, top) = same_padding(h, k, stride);
    let (ow, left) = same_padding(w, k, stride);
    let cols = channels * k * k;
    let out = ImageShape {
        batch: input.batch,
        height: oh,
        width: ow,
    };
    let mut rows = vec![0f32; out.pixels() * cols];
    for (r, row) in rows.chunks_exact_mut(cols).enumerate() {
        let (n, oy, ox) = (r / (oh * ow), (r / ow) % oh, r % ow);
        for ch in 0..channels {
            let plane = &pixels[(n * channels + ch) * h * w..][..h * w];
            for ky in 0..k {
                let Some(iy) = (oy * stride + ky).checked_sub(top).filter(|&y| y < h) else {
                    continue;
                };
                for kx in 0..k {
                    if let Some(ix) = (ox * stride + kx).checked_sub(left).filter(|&x| x < w) {
                        row[(ch * k + ky) * k + kx] = plane[iy * w + ix];
                    }
                }
            }
        }
    }
    (rows, out)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use super::*;
    use crate::Precision;
    use crate::backend::cpu::Cpu;
    use crate::backend::gpu::Gpu;
    use crate::test_support::{fixtures, numbers};

    /// The converted model: `AMPHI_EFFICIENTNET_DIR`, else the amphi cache, as
    /// `cargo xtask fetch-efficientnet` puts it.
    fn model_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("AMPHI_EFFICIENTNET_DIR") {
            return PathBuf::from(dir);
        }
        let cache = std::env::var_os("AMPHI_CACHE_DIR").map_or_else(
            || {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into()))
                    .join(".cache/amphi")
            },
            PathBuf::from,
        );
        cache.join("models/efficientnet-lite0")
    }

    /// Compares a tapped activation with the golden's `debug_activations` entry: the first 16
    /// values in NCHW order (abs 1e-3, like the logits), the mean (1e-4 of the root mean square)
    /// and the L2 norm (relative 1e-4).
    fn check_activation(
        name: &str,
        got: &[f32],
        shape: ImageShape,
        golden: &serde_json::Value,
    ) -> f64 {
        let want = &golden[name];
        let dims: Vec<usize> = numbers(&want["shape"])
            .iter()
            .map(|&d| d as usize)
            .collect();
        let hw = shape.height * shape.width;
        let channels = got.len() / (shape.batch * hw);
        let expected_dims = if name == "pooled" {
            vec![shape.batch, channels]
        } else {
            vec![shape.batch, channels, shape.height, shape.width]
        };
        assert_eq!(dims, expected_dims, "{name}: shape");
        // NHWC rows → the first 16 values of channel 0, 1, … in NCHW order.
        let nchw = |i: usize| {
            let (ch, p) = (i / hw, i % hw);
            got[p * channels + ch]
        };
        let mut worst = 0f64;
        for (i, w) in numbers(&want["first_16"]).iter().enumerate() {
            let g = f64::from(nchw(i));
            worst = worst.max((g - w).abs());
            assert!((g - w).abs() <= 1e-3, "{name}[{i}]: {g} vs {w}");
        }
        let sum: f64 = got.iter().map(|&v| f64::from(v)).sum();
        let mean = sum / got.len() as f64;
        let l2 = got
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            .sqrt();
        let (want_mean, want_l2) = (
            want["mean"].as_f64().expect("mean"),
            want["l2_norm"].as_f64().expect("l2"),
        );
        let rms = want_l2 / (got.len() as f64).sqrt();
        assert!(
            (mean - want_mean).abs() <= 1e-4 * rms.max(1.0),
            "{name}: mean {mean} vs {want_mean}"
        );
        assert!(
            (l2 - want_l2).abs() <= 1e-4 * want_l2,
            "{name}: l2 {l2} vs {want_l2}"
        );
        if name == "pooled" {
            for (i, w) in numbers(&want["data"]).iter().enumerate() {
                let g = f64::from(got[i]);
                worst = worst.max((g - w).abs());
                assert!((g - w).abs() <= 1e-4, "pooled[{i}]: {g} vs {w}");
            }
        }
        worst
    }

    fn softmax(x: &[f32]) -> Vec<f64> {
        let max = x.iter().copied().fold(f32::MIN, f32::max);
        let e: Vec<f64> = x.iter().map(|&v| f64::from(v - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    }

    /// EfficientNet-Lite0 on the golden's `cropped_rgb_u8` (coffee.png) against PyTorch: the
    /// debug activations along the way, logits abs 1e-3, probabilities abs 1e-4 and the top-5
    /// indices in order (the fixtures' tolerances); then a batch of two.
    #[allow(clippy::print_stderr)] // reports the differences measured (seen with --nocapture)
    fn coffee<B: Backend>(be: &B, device: &str) {
        let dir = model_dir();
        let read = |file: &str| {
            std::fs::read(dir.join(file)).unwrap_or_else(|e| {
                panic!(
                    "{}: {e}; run `cargo xtask fetch-efficientnet` (or set AMPHI_EFFICIENTNET_DIR)",
                    dir.join(file).display()
                )
            })
        };
        let cfg: Config = serde_json::from_slice(&read("config.json")).expect("config.json");
        let bytes = read(WEIGHTS_FILE);
        let net =
            EfficientNet::load(be, &Weights::parse(&bytes).expect("parse"), &cfg).expect("load");
        assert_eq!(net.labels().len(), 1000);
        assert_eq!(net.labels()[967], "espresso");

        let golden: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fixtures().join("golden/efficientnet-lite0-coffee.json"))
                .expect("golden"),
        )
        .expect("json");
        let case = &golden["cases"][0];
        let u8s = numbers(&case["cropped_rgb_u8"]["data"]);
        let (h, w) = (224, 224);
        assert_eq!(u8s.len(), h * w * 3);
        // HWC u8 → NCHW (u8 − 127) / 128.
        let mut pixels = vec![0f32; 3 * h * w];
        for (i, &v) in u8s.iter().enumerate() {
            let (p, ch) = (i / 3, i % 3);
            pixels[ch * h * w + p] = (v as f32 - 127.0) / 128.0;
        }

        let debug = &case["debug_activations"];
        let mut worst_tap = 0f64;
        let logits = net
            .forward(be, &pixels, 1, &mut |name, x, shape| {
                let got = be.read(x)?;
                worst_tap = worst_tap.max(check_activation(name, &got, shape, debug));
                Ok(())
            })
            .expect("logits");
        let got = be.read(&logits).expect("read");
        let want: Vec<f64> = numbers(&case["logits"]["data"]);
        assert_eq!(got.len(), want.len());
        let worst = got
            .iter()
            .zip(&want)
            .map(|(&g, w)| (f64::from(g) - w).abs())
            .fold(0.0, f64::max);
        let want_p = softmax(&want.iter().map(|&v| v as f32).collect::<Vec<_>>());
        let got_p = softmax(&got);
        let worst_p = got_p
            .iter()
            .zip(&want_p)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f64::max);
        let mut order: Vec<usize> = (0..got.len()).collect();
        order.sort_by(|&a, &b| got[b].total_cmp(&got[a]));
        let want_top5: Vec<usize> = case["top5"]
            .as_array()
            .expect("top5")
            .iter()
            .map(|t| t["index"].as_u64().expect("index") as usize)
            .collect();
        let want_p5: Vec<f64> = case["top5"]
            .as_array()
            .expect("top5")
            .iter()
            .map(|t| t["probability"].as_f64().expect("probability"))
            .collect();
        eprintln!(
            "{device}: logits max abs diff {worst:.3e}, probabilities {worst_p:.3e}, \
             debug activations (first values, pooled) {worst_tap:.3e}; top-5 {:?}",
            &order[..5]
        );
        assert!(worst <= 1e-3, "logits: max abs diff {worst}");
        assert!(worst_p <= 1e-4, "probabilities: max abs diff {worst_p}");
        assert_eq!(order[..5], want_top5[..], "top-5 indices in order");
        for (&i, p) in want_top5.iter().zip(want_p5) {
            assert!((got_p[i] - p).abs() <= 1e-4, "p[{i}] {} vs {p}", got_p[i]);
        }

        // A batch: the image mirrored left-right, then the image itself. Each row equals its
        // image run alone (batch offsets in the stem, the depthwise convolutions and the pool).
        let mut mirrored = pixels.clone();
        for row in mirrored.chunks_exact_mut(w) {
            row.reverse();
        }
        let alone = be
            .read(&net.logits(be, &mirrored, 1).expect("logits"))
            .expect("read");
        let both = [mirrored, pixels.clone()].concat();
        let batched = be
            .read(&net.logits(be, &both, 2).expect("logits"))
            .expect("read");
        assert_eq!(batched.len(), 2000);
        for (i, (b, a)) in batched.iter().zip(alone.iter().chain(&got)).enumerate() {
            assert!(
                (b - a).abs() <= 1e-4,
                "batch row {}, logit {}: {b} vs {a}",
                i / 1000,
                i % 1000
            );
        }
        assert!(
            alone.iter().zip(&got).any(|(a, g)| (a - g).abs() > 1e-2),
            "the mirrored image gives other logits"
        );
        assert!(
            net.logits(be, &pixels[1..], 1).is_err(),
            "short input is refused"
        );
    }

    #[test]
    fn efficientnet_lite0_coffee_on_the_cpu() {
        coffee(&Cpu, "cpu");
    }

    #[test]
    fn efficientnet_lite0_coffee_on_the_gpu() {
        let host = amphi_gpu::WgpuHost::new()
            .unwrap_or_else(|e| panic!("GPU tests need a GPU adapter (in CI: Mesa lavapipe): {e}"));
        coffee(
            &Gpu::new(Arc::new(host), Precision::F32).expect("kernels"),
            "gpu",
        );
    }

    #[test]
    fn stem_patches_pad_like_tensorflow() {
        // 1 image, 1 channel, 4×4 of values 1..=16: output 2×2, padding (0 top, 1 bottom).
        let pixels: Vec<f32> = (1..=16).map(|v| v as f32).collect();
        let input = ImageShape {
            batch: 1,
            height: 4,
            width: 4,
        };
        let (rows, out) = stem_patches(&pixels, input, 1);
        assert_eq!((out.height, out.width), (2, 2));
        assert_eq!(&rows[..9], &[1., 2., 3., 5., 6., 7., 9., 10., 11.]);
        // Bottom-right patch: rows 2..4 and a zero row, columns 2..4 and a zero column.
        assert_eq!(&rows[27..], &[11., 12., 0., 15., 16., 0., 0., 0., 0.]);
    }
}
