//! BERT (and the checkpoints that share its layout: MiniLM, BGE, E5, GTE): the encoder and its
//! heads, written once against [`Backend`].

mod config;
mod encoder;

pub use config::Config;
pub(crate) use encoder::{Encoder, Positions};

use super::layers::Linear;
use super::{Encoded, EncoderInput, Head, ModelConfig, TextArchitecture, TextEncoder, TextSpec};
use crate::backend::cpu::Cpu;
use crate::backend::gpu::Gpu;
use crate::backend::{Activation, Backend};
use crate::error::{Error, Result};
use crate::weights::{WEIGHTS_FILE, Weights};

/// The registry's loader: `config.json` as BERT's [`Config`], for a class with `head`.
pub(crate) fn architecture(cfg: &ModelConfig, head: Head) -> Result<Box<dyn TextArchitecture>> {
    let cfg: Config = cfg.typed()?;
    cfg.validate()?;
    Ok(Box::new(Parsed { cfg, head }))
}

struct Parsed {
    cfg: Config,
    head: Head,
}

impl TextArchitecture for Parsed {
    fn spec(&self) -> TextSpec {
        self.cfg.spec(self.cfg.max_position_embeddings)
    }
    fn build_cpu(&self, w: &Weights) -> Result<Box<dyn TextEncoder<Cpu>>> {
        Ok(Box::new(Bert::load(&Cpu, w, &self.cfg, self.head)?))
    }
    fn build_gpu(&self, be: &Gpu, w: &Weights) -> Result<Box<dyn TextEncoder<Gpu>>> {
        Ok(Box::new(Bert::load(be, w, &self.cfg, self.head)?))
    }
}

/// A BERT encoder with the head its checkpoint carries.
pub(crate) struct Bert<B: Backend> {
    encoder: Encoder<B>,
    pooler: Option<Linear<B>>,
    classifier: Option<Linear<B>>,
    head: Head,
    labels: Vec<String>,
}

/// The number of labels of a classifier whose output layer is `tensor`: `id2label`'s size, or
/// the tensor's rows when the config has no labels.
pub(crate) fn num_labels(cfg: &Config, w: &Weights, tensor: &str, hidden: usize) -> Result<usize> {
    let n = if cfg.id2label.is_empty() {
        w.shape(tensor)
            .and_then(|s| s.first().copied())
            .ok_or_else(|| Error::MissingTensor {
                file: WEIGHTS_FILE.to_owned(),
                tensor: tensor.to_owned(),
            })?
    } else {
        cfg.id2label.len()
    };
    if n == 0 {
        return Err(Error::ShapeMismatch {
            file: WEIGHTS_FILE.to_owned(),
            tensor: tensor.to_owned(),
            expected: vec![1, hidden],
            found: vec![0, hidden],
        });
    }
    Ok(n)
}

impl<B: Backend> Bert<B> {
    /// Loads the encoder and, for a task class, its head.
    pub fn load(be: &B, w: &Weights, cfg: &Config, head: Head) -> Result<Self> {
        let h = cfg.hidden_size;
        // Checkpoints with a task head nest the encoder under `bert.`; bare encoders do not.
        let p = if w.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let encoder = Encoder::load(be, w, p, cfg, Positions::Absolute, true)?;
        let pooler_name = format!("{p}pooler.dense");
        let pooler = if w.contains(&format!("{pooler_name}.weight")) {
            Some(Linear::load(be, w, &pooler_name, h, h)?)
        } else if head == Head::SequenceClassification {
            return Err(Error::MissingTensor {
                file: WEIGHTS_FILE.to_owned(),
                tensor: format!("{pooler_name}.weight"),
            });
        } else {
            None
        };
        let (classifier, labels) = match head {
            Head::SequenceClassification | Head::TokenClassification => {
                let n = num_labels(cfg, w, "classifier.weight", h)?;
                (
                    Some(Linear::load(be, w, "classifier", n, h)?),
                    cfg.labels(n)?,
                )
            }
            Head::Base | Head::ImageClassification | Head::CausalLm => (None, Vec::new()),
        };
        Ok(Self {
            encoder,
            pooler,
            classifier,
            head,
            labels,
        })
    }
}

impl<B: Backend> TextEncoder<B> for Bert<B> {
    fn labels(&self) -> &[String] {
        &self.labels
    }

    fn encode(&self, be: &B, input: &EncoderInput) -> Result<Encoded<B>> {
        self.encoder.encode(be, input)
    }

    /// `pooler_output`: `tanh(dense(hidden[:, 0]))`, `[batch, hidden]`.
    fn pool(&self, be: &B, enc: &Encoded<B>) -> Result<Option<B::Tensor>> {
        super::layers::pool_first(be, self.pooler.as_ref(), enc)
    }

    fn logits(&self, be: &B, enc: &Encoded<B>) -> Result<B::Tensor> {
        let classifier = self
            .classifier
            .as_ref()
            .ok_or_else(|| Error::UnsupportedTask {
                task: "classification".to_owned(),
                reason: "the checkpoint has no classifier head".to_owned(),
            })?;
        match self.head {
            Head::SequenceClassification => {
                let pooled = self.pool(be, enc)?.ok_or_else(|| Error::MissingTensor {
                    file: WEIGHTS_FILE.to_owned(),
                    tensor: "pooler.dense.weight".to_owned(),
                })?;
                classifier.forward(be, &pooled, Activation::None)
            }
            _ => classifier.forward(be, &enc.hidden, Activation::None),
        }
    }
}
