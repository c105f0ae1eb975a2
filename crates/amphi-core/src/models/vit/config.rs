//! `config.json` of ViT checkpoints (`ViTForImageClassification`), as Hugging Face writes it.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::backend::Activation;
use crate::error::{Error, Result};

const CONFIG_FILE: &str = "config.json";

fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".to_owned()
}
fn default_channels() -> usize {
    3
}
fn default_true() -> bool {
    true
}

/// The fields of a ViT `config.json` the engine uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub image_size: usize,
    pub patch_size: usize,
    #[serde(default = "default_channels")]
    pub num_channels: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_true")]
    pub qkv_bias: bool,
    #[serde(default)]
    pub id2label: BTreeMap<String, String>,
}

impl Config {
    /// Patches per side.
    pub(crate) fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens per image: the patches and the CLS token.
    pub(crate) fn tokens(&self) -> usize {
        self.grid() * self.grid() + 1
    }

    pub(crate) fn activation(&self) -> Result<Activation> {
        crate::models::layers::activation(&self.hidden_act)
            .ok_or_else(|| invalid(format!("hidden_act `{}` is not supported", self.hidden_act)))
    }

    /// Label names in id order (`id2label`), or `LABEL_i` when the config has none.
    pub(crate) fn labels(&self, num_labels: usize) -> Result<Vec<String>> {
        crate::models::layers::labels(&self.id2label, num_labels)
            .map_err(|i| invalid(format!("id2label has no entry for id {i}")))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let checks = [
            (self.hidden_size == 0, "hidden_size must be positive"),
            (
                self.num_attention_heads == 0,
                "num_attention_heads must be positive",
            ),
            (
                self.num_attention_heads != 0
                    && !self.hidden_size.is_multiple_of(self.num_attention_heads),
                "hidden_size must be a multiple of num_attention_heads",
            ),
            (
                self.intermediate_size == 0,
                "intermediate_size must be positive",
            ),
            (self.num_channels == 0, "num_channels must be positive"),
            (
                self.patch_size == 0 || !self.image_size.is_multiple_of(self.patch_size),
                "image_size must be a positive multiple of patch_size",
            ),
            (self.image_size == 0, "image_size must be positive"),
            (
                self.image_size > 4096,
                "image_size is implausibly large (over 4096)",
            ),
            (
                self.num_hidden_layers > 1024,
                "num_hidden_layers is implausibly large (over 1024)",
            ),
            (!self.qkv_bias, "qkv_bias = false is not supported"),
        ];
        if let Some((_, msg)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(invalid(*msg));
        }
        self.activation().map(|_| ())
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidConfig {
        file: CONFIG_FILE.to_owned(),
        message: message.into(),
    }
}
