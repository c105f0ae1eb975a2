//! `config.json` of EfficientNet-Lite models (`EfficientNetLiteForImageClassification`), as
//! `cargo xtask fetch-efficientnet` writes it. The stage table uses Hugging Face
//! `EfficientNetConfig`'s field names; every architecture field defaults to EfficientNet-Lite0,
//! so a config with only the required fields describes Lite0.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::error::{Error, Result};

const CONFIG_FILE: &str = "config.json";

fn default_channels() -> usize {
    3
}
fn default_image_size() -> usize {
    224
}
fn default_eps() -> f64 {
    1e-3
}
fn default_act() -> String {
    "relu6".to_owned()
}
fn default_padding() -> String {
    "same".to_owned()
}
fn default_stem() -> usize {
    32
}
fn default_hidden_dim() -> usize {
    1280
}
fn default_repeats() -> Vec<usize> {
    vec![1, 2, 2, 3, 3, 4, 1]
}
fn default_kernels() -> Vec<usize> {
    vec![3, 3, 5, 3, 5, 5, 3]
}
fn default_strides() -> Vec<usize> {
    vec![1, 2, 2, 2, 1, 2, 1]
}
fn default_expand() -> Vec<usize> {
    vec![1, 6, 6, 6, 6, 6, 6]
}
fn default_in() -> Vec<usize> {
    vec![32, 16, 24, 40, 80, 112, 192]
}
fn default_out() -> Vec<usize> {
    vec![16, 24, 40, 80, 112, 192, 320]
}

/// The fields of an EfficientNet-Lite `config.json` the engine uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    #[serde(default)]
    pub model_type: Option<String>,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    /// Side of the square input the classifier was trained on.
    #[serde(default = "default_image_size")]
    pub image_size: usize,
    #[serde(default = "default_eps")]
    pub batch_norm_eps: f64,
    #[serde(default)]
    pub num_labels: Option<usize>,
    /// Only `relu6` (the Lite variants have no swish).
    #[serde(default = "default_act")]
    pub hidden_act: String,
    /// Only `same` (TensorFlow "SAME" padding).
    #[serde(default = "default_padding")]
    pub padding: String,
    /// Output channels of the 3×3 stride-2 stem convolution.
    #[serde(default = "default_stem")]
    pub stem_channels: usize,
    /// Output channels of the head's 1×1 convolution (the pooled features).
    #[serde(default = "default_hidden_dim")]
    pub hidden_dim: usize,
    /// Per stage: blocks, depthwise kernel, stride of the first block, expansion ratio, input
    /// and output channels (later blocks of a stage: stride 1, input = output channels).
    #[serde(default = "default_repeats")]
    pub num_block_repeats: Vec<usize>,
    #[serde(default = "default_kernels")]
    pub kernel_sizes: Vec<usize>,
    #[serde(default = "default_strides")]
    pub strides: Vec<usize>,
    #[serde(default = "default_expand")]
    pub expand_ratios: Vec<usize>,
    #[serde(default = "default_in")]
    pub in_channels: Vec<usize>,
    #[serde(default = "default_out")]
    pub out_channels: Vec<usize>,
    #[serde(default)]
    pub id2label: BTreeMap<String, String>,
}

/// One MBConv block, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Block {
    pub kernel: usize,
    pub stride: usize,
    pub expand: usize,
    pub inp: usize,
    pub out: usize,
}

impl Block {
    /// Channels of the depthwise convolution.
    pub fn hidden(self) -> usize {
        self.inp * self.expand
    }

    /// The block input is added to its output.
    pub fn residual(self) -> bool {
        self.stride == 1 && self.inp == self.out
    }
}

impl Config {
    /// The blocks of every stage, in order (16 for Lite0).
    pub(crate) fn blocks(&self) -> Vec<Block> {
        let mut blocks = Vec::new();
        for s in 0..self.num_block_repeats.len() {
            for r in 0..self.num_block_repeats[s] {
                blocks.push(Block {
                    kernel: self.kernel_sizes[s],
                    stride: if r == 0 { self.strides[s] } else { 1 },
                    expand: self.expand_ratios[s],
                    inp: if r == 0 {
                        self.in_channels[s]
                    } else {
                        self.out_channels[s]
                    },
                    out: self.out_channels[s],
                });
            }
        }
        blocks
    }

    /// Label names in id order (`id2label`), or `LABEL_i` when the config has none.
    pub(crate) fn labels(&self, num_labels: usize) -> Result<Vec<String>> {
        if self.num_labels.is_some_and(|n| n != num_labels) {
            return Err(invalid(format!(
                "num_labels is {}, the classifier has {num_labels}",
                self.num_labels.unwrap_or_default()
            )));
        }
        crate::models::layers::labels(&self.id2label, num_labels)
            .map_err(|i| invalid(format!("id2label has no entry for id {i}")))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let stages = self.num_block_repeats.len();
        let lists = [
            &self.kernel_sizes,
            &self.strides,
            &self.expand_ratios,
            &self.in_channels,
            &self.out_channels,
        ];
        if stages == 0 || lists.iter().any(|l| l.len() != stages) {
            return Err(invalid(
                "num_block_repeats, kernel_sizes, strides, expand_ratios, in_channels and \
                 out_channels must be lists of the same, positive length",
            ));
        }
        let chained = self.in_channels[0] == self.stem_channels
            && self.in_channels[1..] == self.out_channels[..stages - 1];
        let checks = [
            (
                self.model_type
                    .as_deref()
                    .is_some_and(|t| t != "efficientnet-lite"),
                "model_type must be efficientnet-lite",
            ),
            (self.num_channels == 0, "num_channels must be positive"),
            (
                self.image_size == 0 || self.image_size > 4096,
                "image_size must be in 1..=4096",
            ),
            (
                !(self.batch_norm_eps.is_finite() && self.batch_norm_eps > 0.0),
                "batch_norm_eps must be positive",
            ),
            (self.hidden_act != "relu6", "hidden_act must be relu6"),
            (
                self.padding != "same",
                "padding must be same (TensorFlow SAME)",
            ),
            (self.stem_channels == 0, "stem_channels must be positive"),
            (self.hidden_dim == 0, "hidden_dim must be positive"),
            (
                self.num_block_repeats.iter().any(|&r| r == 0 || r > 64),
                "num_block_repeats must be in 1..=64",
            ),
            (
                self.kernel_sizes
                    .iter()
                    .any(|&k| k == 0 || k > 15 || k % 2 == 0),
                "kernel_sizes must be odd, at most 15",
            ),
            (
                self.strides.iter().any(|&s| s != 1 && s != 2),
                "strides must be 1 or 2",
            ),
            (
                self.expand_ratios.iter().any(|&e| e == 0 || e > 16),
                "expand_ratios must be in 1..=16",
            ),
            (
                self.in_channels
                    .iter()
                    .chain(&self.out_channels)
                    .any(|&c| c == 0 || c > 4096),
                "channel counts must be in 1..=4096",
            ),
            (
                !chained,
                "in_channels must start at stem_channels and follow the previous out_channels",
            ),
        ];
        if let Some((_, msg)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(invalid(*msg));
        }
        Ok(())
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidConfig {
        file: CONFIG_FILE.to_owned(),
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_minimal_config_is_lite0() {
        let cfg: Config = serde_json::from_str(
            r#"{"architectures": ["EfficientNetLiteForImageClassification"],
                "model_type": "efficientnet-lite", "num_channels": 3, "image_size": 224,
                "batch_norm_eps": 0.001, "num_labels": 1000}"#,
        )
        .expect("config");
        cfg.validate().expect("valid");
        let blocks = cfg.blocks();
        assert_eq!(blocks.len(), 16);
        assert_eq!(
            blocks[0],
            Block {
                kernel: 3,
                stride: 1,
                expand: 1,
                inp: 32,
                out: 16
            }
        );
        assert_eq!(blocks.iter().filter(|b| b.residual()).count(), 9);
        assert_eq!(blocks[15].out, 320);
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            r#"{"strides": [1, 2, 2, 2, 1, 2, 3]}"#,
            r#"{"kernel_sizes": [3, 3, 5, 3, 5, 5, 4]}"#,
            r#"{"in_channels": [32, 16, 24, 40, 80, 112, 190]}"#,
            r#"{"num_block_repeats": [1, 2]}"#,
            r#"{"hidden_act": "swish"}"#,
            r#"{"padding": "valid"}"#,
            r#"{"model_type": "vit"}"#,
            r#"{"batch_norm_eps": 0}"#,
        ] {
            let cfg: Config = serde_json::from_str(bad).expect("parses");
            assert!(cfg.validate().is_err(), "{bad} is refused");
        }
    }
}
