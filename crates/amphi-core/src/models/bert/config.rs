//! `config.json` of BERT-family checkpoints (BERT, MiniLM, BGE, E5, GTE), as Hugging Face writes it.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::backend::Activation;
use crate::error::{Error, Result};

use crate::models::{CONFIG_FILE, TextSpec};

fn default_eps() -> f64 {
    1e-12
}
fn default_type_vocab() -> usize {
    2
}
fn default_act() -> String {
    "gelu".to_owned()
}
fn default_position() -> String {
    "absolute".to_owned()
}

/// The fields of a BERT `config.json` the engine uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_position")]
    pub position_embedding_type: String,
    #[serde(default)]
    pub id2label: BTreeMap<String, String>,
    #[serde(default)]
    pub problem_type: Option<String>,
    #[serde(default)]
    pub pad_token_id: Option<u32>,
}

impl Config {
    /// The engine's view, inputs being at most `max_length` tokens long.
    pub(crate) fn spec(&self, max_length: usize) -> TextSpec {
        TextSpec {
            hidden_size: self.hidden_size,
            max_length,
            pad_token_id: self.pad_token_id,
            problem_type: self.problem_type.clone(),
        }
    }

    pub(crate) fn activation(&self) -> Result<Activation> {
        crate::models::layers::activation(&self.hidden_act).ok_or_else(|| {
            self.invalid(format!("hidden_act `{}` is not supported", self.hidden_act))
        })
    }

    /// Label names in id order (`id2label`), or `LABEL_i` when the config has none.
    pub(crate) fn labels(&self, num_labels: usize) -> Result<Vec<String>> {
        crate::models::layers::labels(&self.id2label, num_labels)
            .map_err(|i| self.invalid(format!("id2label has no entry for id {i}")))
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
            (self.vocab_size == 0, "vocab_size must be positive"),
            (
                self.type_vocab_size == 0,
                "type_vocab_size must be positive",
            ),
            (
                self.max_position_embeddings == 0,
                "max_position_embeddings must be positive",
            ),
            (
                self.intermediate_size == 0,
                "intermediate_size must be positive",
            ),
            (
                self.num_hidden_layers > 1024,
                "num_hidden_layers is implausibly large (over 1024)",
            ),
        ];
        if let Some((_, msg)) = checks.iter().find(|(bad, _)| *bad) {
            return Err(self.invalid(*msg));
        }
        if self.position_embedding_type != "absolute" {
            return Err(self.invalid(format!(
                "position_embedding_type `{}` is not supported (only `absolute`)",
                self.position_embedding_type
            )));
        }
        self.activation().map(|_| ())
    }

    pub(crate) fn invalid(&self, message: impl Into<String>) -> Error {
        Error::InvalidConfig {
            file: CONFIG_FILE.to_owned(),
            message: message.into(),
        }
    }
}
