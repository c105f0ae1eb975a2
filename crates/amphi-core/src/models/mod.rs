//! Model architectures, one folder each, and what they share: the parsed `config.json`
//! ([`ModelConfig`]), the head a checkpoint class carries ([`Head`]) and the interface every
//! text encoder implements ([`TextEncoder`]). The table that maps `config.json` to an
//! architecture is `crate::registry`.

pub(crate) mod bert;
pub(crate) mod efficientnet;
mod layers;
pub(crate) mod llama;
pub(crate) mod roberta;
pub(crate) mod vit;

use serde::de::DeserializeOwned;

use crate::backend::{Backend, BatchShape};
use crate::error::{Error, Result};
use crate::task::Task;

pub(crate) const CONFIG_FILE: &str = "config.json";

/// `config.json`, parsed once: its `model_type`, its `architectures`, and the whole document,
/// from which each architecture deserializes its own typed `Config`.
#[derive(Debug, Clone)]
pub(crate) struct ModelConfig {
    pub model_type: Option<String>,
    pub architectures: Vec<String>,
    value: serde_json::Value,
}

impl ModelConfig {
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| Error::json(CONFIG_FILE, e))?;
        if !value.is_object() {
            return Err(Error::InvalidConfig {
                file: CONFIG_FILE.to_owned(),
                message: "expected a JSON object".to_owned(),
            });
        }
        let model_type = value
            .get("model_type")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let architectures = match value.get("architectures") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(v) => {
                serde_json::from_value(v.clone()).map_err(|e| Error::json(CONFIG_FILE, e))?
            }
        };
        Ok(Self {
            model_type,
            architectures,
            value,
        })
    }

    /// The whole document.
    pub fn value(&self) -> &serde_json::Value {
        &self.value
    }

    /// The architecture's typed view of the document.
    pub fn typed<T: DeserializeOwned>(&self) -> Result<T> {
        T::deserialize(&self.value).map_err(|e| Error::json(CONFIG_FILE, e))
    }
}

/// The head a checkpoint class carries on top of its backbone, which decides its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Head {
    /// A bare encoder (`BertModel`, `XLMRobertaModel`, or a class whose head the engine
    /// does not run, such as `BertForMaskedLM`): embeddings only.
    Base,
    /// One label distribution per input.
    SequenceClassification,
    /// One label distribution per token.
    TokenClassification,
    /// Ranked labels per image.
    ImageClassification,
    /// Next-token logits (a decoder's LM head).
    CausalLm,
}

impl Head {
    /// The tasks a model with this head serves.
    pub fn tasks(self) -> &'static [Task] {
        match self {
            Head::Base => &[Task::FeatureExtraction],
            Head::SequenceClassification => &[Task::FeatureExtraction, Task::TextClassification],
            Head::TokenClassification => &[Task::FeatureExtraction, Task::TokenClassification],
            Head::ImageClassification => &[Task::ImageClassification],
            Head::CausalLm => &[Task::TextGeneration],
        }
    }
}

/// One tokenized, padded batch, as an encoder consumes it.
#[derive(Debug, Clone)]
pub(crate) struct EncoderInput {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub mask: Vec<u32>,
    pub shape: BatchShape,
}

/// An encoder's output, still on the backend.
pub(crate) struct Encoded<B: Backend> {
    /// `[batch*seq, hidden]`.
    pub hidden: B::Tensor,
    /// The key mask built from the attention mask, reused by pooling.
    pub key_mask: B::Tensor,
    pub shape: BatchShape,
}

/// A text encoder with the head its checkpoint carries, written once against [`Backend`].
pub(crate) trait TextEncoder<B: Backend>: Send + Sync {
    /// `last_hidden_state`.
    fn encode(&self, be: &B, input: &EncoderInput) -> Result<Encoded<B>>;
    /// The checkpoint's own pooler (`[batch, hidden]`), when it has one.
    fn pool(&self, be: &B, enc: &Encoded<B>) -> Result<Option<B::Tensor>>;
    /// Classification logits: `[batch, labels]` for sequence heads, `[batch*seq, labels]` for
    /// token heads.
    fn logits(&self, be: &B, enc: &Encoded<B>) -> Result<B::Tensor>;
    /// Label names of the classification head, in id order.
    fn labels(&self) -> &[String];
}

/// What the engine needs to know about a text architecture's configuration, whatever its
/// `config.json` calls the fields.
#[derive(Debug, Clone)]
pub(crate) struct TextSpec {
    pub hidden_size: usize,
    /// The longest input the position table allows, in tokens.
    pub max_length: usize,
    /// The id padded positions get.
    pub pad_token_id: Option<u32>,
    /// `config.json`'s `problem_type` (classification's default function).
    pub problem_type: Option<String>,
}

/// A text architecture's parsed `config.json`, ready to build its model on either backend.
pub(crate) trait TextArchitecture: Send + Sync {
    fn spec(&self) -> TextSpec;
    fn build_cpu(
        &self,
        w: &crate::weights::Weights,
    ) -> Result<Box<dyn TextEncoder<crate::backend::cpu::Cpu>>>;
    fn build_gpu(
        &self,
        be: &crate::backend::gpu::Gpu,
        w: &crate::weights::Weights,
    ) -> Result<Box<dyn TextEncoder<crate::backend::gpu::Gpu>>>;
}
