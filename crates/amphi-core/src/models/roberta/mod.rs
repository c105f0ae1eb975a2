//! RoBERTa and XLM-RoBERTa: BERT's encoder with position ids counted from the padding index,
//! no token types, and RoBERTa's classification head (`dense → tanh → out_proj` on `<s>`).
//! Both `model_type`s (`roberta`, `xlm-roberta`) load here; they differ only in their
//! tokenizers (byte-level BPE, SentencePiece Unigram), which `tokenizer.json` describes.

use super::bert::{self, Config, Encoder, Positions};
use super::layers::Linear;
use super::{Encoded, EncoderInput, Head, ModelConfig, TextArchitecture, TextEncoder, TextSpec};
use crate::backend::cpu::Cpu;
use crate::backend::gpu::Gpu;
use crate::backend::{Activation, Backend, Reduce};
use crate::error::{Error, Result};
use crate::weights::Weights;

/// `RobertaConfig`'s default `pad_token_id`, which is also the position table's padding index.
const DEFAULT_PAD: u32 = 1;

/// The registry's loader: `config.json` as a RoBERTa config (BERT's fields; `pad_token_id` is
/// the padding index of the position ids).
pub(crate) fn architecture(cfg: &ModelConfig, head: Head) -> Result<Box<dyn TextArchitecture>> {
    let mut cfg: Config = cfg.typed()?;
    cfg.validate()?;
    let pad = *cfg.pad_token_id.get_or_insert(DEFAULT_PAD);
    // Positions run from pad + 1 to pad + length.
    let Some(max_length) = cfg
        .max_position_embeddings
        .checked_sub(pad as usize + 1)
        .filter(|&m| m > 0)
    else {
        return Err(cfg.invalid(format!(
            "max_position_embeddings {} leaves no positions after the padding index {pad}",
            cfg.max_position_embeddings
        )));
    };
    Ok(Box::new(Parsed {
        cfg,
        head,
        pad,
        max_length,
    }))
}

struct Parsed {
    cfg: Config,
    head: Head,
    pad: u32,
    max_length: usize,
}

impl TextArchitecture for Parsed {
    fn spec(&self) -> TextSpec {
        self.cfg.spec(self.max_length)
    }
    fn build_cpu(&self, w: &Weights) -> Result<Box<dyn TextEncoder<Cpu>>> {
        Ok(Box::new(Roberta::load(&Cpu, w, self)?))
    }
    fn build_gpu(&self, be: &Gpu, w: &Weights) -> Result<Box<dyn TextEncoder<Gpu>>> {
        Ok(Box::new(Roberta::load(be, w, self)?))
    }
}

enum Classifier<B: Backend> {
    None,
    /// `out_proj(tanh(dense(hidden[:, 0])))`.
    Sequence {
        dense: Linear<B>,
        out_proj: Linear<B>,
    },
    /// `classifier(hidden)`.
    Token(Linear<B>),
}

/// A RoBERTa / XLM-R encoder with the head its checkpoint carries.
struct Roberta<B: Backend> {
    encoder: Encoder<B>,
    pooler: Option<Linear<B>>,
    classifier: Classifier<B>,
    labels: Vec<String>,
}

impl<B: Backend> Roberta<B> {
    fn load(be: &B, w: &Weights, parsed: &Parsed) -> Result<Self> {
        let (cfg, h) = (&parsed.cfg, parsed.cfg.hidden_size);
        // Task checkpoints nest the encoder under `roberta.` (XLM-R's too); bare ones do not.
        let p = if w.contains("roberta.embeddings.word_embeddings.weight") {
            "roberta."
        } else {
            ""
        };
        let positions = Positions::FromIds {
            padding_idx: parsed.pad,
        };
        let encoder = Encoder::load(be, w, p, cfg, positions, false)?;
        let pooler_name = format!("{p}pooler.dense");
        let pooler = if w.contains(&format!("{pooler_name}.weight")) {
            Some(Linear::load(be, w, &pooler_name, h, h)?)
        } else {
            None
        };
        let (classifier, labels) = match parsed.head {
            Head::SequenceClassification => {
                let n = bert::num_labels(cfg, w, "classifier.out_proj.weight", h)?;
                let classifier = Classifier::Sequence {
                    dense: Linear::load(be, w, "classifier.dense", h, h)?,
                    out_proj: Linear::load(be, w, "classifier.out_proj", n, h)?,
                };
                (classifier, cfg.labels(n)?)
            }
            Head::TokenClassification => {
                let n = bert::num_labels(cfg, w, "classifier.weight", h)?;
                let classifier = Classifier::Token(Linear::load(be, w, "classifier", n, h)?);
                (classifier, cfg.labels(n)?)
            }
            Head::Base | Head::ImageClassification | Head::CausalLm => {
                (Classifier::None, Vec::new())
            }
        };
        Ok(Self {
            encoder,
            pooler,
            classifier,
            labels,
        })
    }
}

impl<B: Backend> TextEncoder<B> for Roberta<B> {
    fn labels(&self) -> &[String] {
        &self.labels
    }

    fn encode(&self, be: &B, input: &EncoderInput) -> Result<Encoded<B>> {
        self.encoder.encode(be, input)
    }

    fn pool(&self, be: &B, enc: &Encoded<B>) -> Result<Option<B::Tensor>> {
        super::layers::pool_first(be, self.pooler.as_ref(), enc)
    }

    fn logits(&self, be: &B, enc: &Encoded<B>) -> Result<B::Tensor> {
        match &self.classifier {
            Classifier::Sequence { dense, out_proj } => {
                let first = be.reduce(&enc.hidden, &enc.key_mask, enc.shape, Reduce::First)?;
                let x = dense.forward(be, &first, Activation::Tanh)?;
                out_proj.forward(be, &x, Activation::None)
            }
            Classifier::Token(classifier) => classifier.forward(be, &enc.hidden, Activation::None),
            Classifier::None => Err(Error::UnsupportedTask {
                task: "classification".to_owned(),
                reason: "the checkpoint has no classifier head".to_owned(),
            }),
        }
    }
}
