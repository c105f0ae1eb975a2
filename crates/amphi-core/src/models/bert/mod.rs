//! The BERT encoder and its heads, written once against [`Backend`].

mod config;

pub use config::Config;
pub(crate) use config::{CONFIG_FILE, HeadKind};

use super::layers::{LayerNorm, Linear};
use crate::backend::{Activation, Backend, BatchShape, Reduce};
use crate::error::{Error, Result};
use crate::weights::{WEIGHTS_FILE, Weights};

struct Layer<B: Backend> {
    qkv: Linear<B>,
    attention_out: Linear<B>,
    attention_norm: LayerNorm<B>,
    intermediate: Linear<B>,
    output: Linear<B>,
    output_norm: LayerNorm<B>,
}

/// One tokenized, padded batch, as the encoder consumes it.
#[derive(Debug, Clone)]
pub(crate) struct EncoderInput {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
    pub mask: Vec<u32>,
    pub shape: BatchShape,
}

/// The encoder's output, still on the backend.
pub(crate) struct Encoded<B: Backend> {
    /// `[batch*seq, hidden]`.
    pub hidden: B::Tensor,
    /// The key mask built from the attention mask, reused by pooling.
    pub key_mask: B::Tensor,
    pub shape: BatchShape,
}

/// A BERT encoder with the head its checkpoint carries.
pub(crate) struct Bert<B: Backend> {
    cfg: Config,
    act: Activation,
    word: B::Tensor,
    position: B::Tensor,
    token_type: B::Tensor,
    embedding_norm: LayerNorm<B>,
    layers: Vec<Layer<B>>,
    pooler: Option<Linear<B>>,
    classifier: Option<Linear<B>>,
    head: HeadKind,
    labels: Vec<String>,
}

impl<B: Backend> Bert<B> {
    /// Loads the encoder and, when the config names a task architecture, its head.
    pub fn load(be: &B, w: &Weights, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        // Checkpoints with a task head nest the encoder under `bert.`; bare encoders do not.
        let p = if w.contains("bert.embeddings.word_embeddings.weight") {
            "bert."
        } else {
            ""
        };
        let word = w.get(
            be,
            &format!("{p}embeddings.word_embeddings.weight"),
            &[cfg.vocab_size, h],
        )?;
        let position = w.get(
            be,
            &format!("{p}embeddings.position_embeddings.weight"),
            &[cfg.max_position_embeddings, h],
        )?;
        let token_type = w.get(
            be,
            &format!("{p}embeddings.token_type_embeddings.weight"),
            &[cfg.type_vocab_size, h],
        )?;
        let embedding_norm = LayerNorm::load(be, w, &format!("{p}embeddings.LayerNorm"), h)?;

        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let n = format!("{p}encoder.layer.{l}");
            layers.push(Layer {
                qkv: Linear::load_qkv(be, w, |m| format!("{n}.attention.self.{m}"), h)?,
                attention_out: Linear::load(be, w, &format!("{n}.attention.output.dense"), h, h)?,
                attention_norm: LayerNorm::load(
                    be,
                    w,
                    &format!("{n}.attention.output.LayerNorm"),
                    h,
                )?,
                intermediate: Linear::load(be, w, &format!("{n}.intermediate.dense"), i, h)?,
                output: Linear::load(be, w, &format!("{n}.output.dense"), h, i)?,
                output_norm: LayerNorm::load(be, w, &format!("{n}.output.LayerNorm"), h)?,
            });
        }

        let head = cfg.head();
        let pooler_name = format!("{p}pooler.dense");
        let pooler = if w.contains(&format!("{pooler_name}.weight")) {
            Some(Linear::load(be, w, &pooler_name, h, h)?)
        } else if head == HeadKind::SequenceClassification {
            return Err(Error::MissingTensor {
                file: WEIGHTS_FILE.to_owned(),
                tensor: format!("{pooler_name}.weight"),
            });
        } else {
            None
        };
        let (classifier, labels) = match head {
            HeadKind::None => (None, Vec::new()),
            HeadKind::SequenceClassification | HeadKind::TokenClassification => {
                let num_labels = if cfg.id2label.is_empty() {
                    w.shape("classifier.weight")
                        .and_then(|s| s.first().copied())
                        .ok_or_else(|| Error::MissingTensor {
                            file: WEIGHTS_FILE.to_owned(),
                            tensor: "classifier.weight".to_owned(),
                        })?
                } else {
                    cfg.id2label.len()
                };
                if num_labels == 0 {
                    return Err(Error::ShapeMismatch {
                        file: WEIGHTS_FILE.to_owned(),
                        tensor: "classifier.weight".to_owned(),
                        expected: vec![1, h],
                        found: vec![0, h],
                    });
                }
                let labels = cfg.labels(num_labels)?;
                (
                    Some(Linear::load(be, w, "classifier", num_labels, h)?),
                    labels,
                )
            }
        };

        Ok(Self {
            cfg: cfg.clone(),
            act: cfg.activation()?,
            word,
            position,
            token_type,
            embedding_norm,
            layers,
            pooler,
            classifier,
            head,
            labels,
        })
    }

    pub fn head(&self) -> HeadKind {
        self.head
    }

    /// Label names of the classification head, in id order.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Runs the embeddings and every encoder layer: `last_hidden_state`.
    pub fn encode(&self, be: &B, input: &EncoderInput) -> Result<Encoded<B>> {
        let shape = input.shape;
        let heads = self.cfg.num_attention_heads;
        let eps = self.cfg.layer_norm_eps;
        let key_mask = be.key_mask(&input.mask, shape)?;
        let x = be.embed(
            [&self.word, &self.position, &self.token_type],
            &input.ids,
            &input.type_ids,
            shape,
        )?;
        let mut x = be.layer_norm(
            &x,
            None,
            &self.embedding_norm.gamma,
            &self.embedding_norm.beta,
            eps,
        )?;
        for layer in &self.layers {
            let qkv = layer.qkv.forward(be, &x, Activation::None)?;
            let context = be.attention(&qkv, &key_mask, shape, heads)?;
            let attended = layer
                .attention_out
                .forward(be, &context, Activation::None)?;
            let norm = &layer.attention_norm;
            let h = be.layer_norm(&attended, Some(&x), &norm.gamma, &norm.beta, eps)?;
            let inner = layer.intermediate.forward(be, &h, self.act)?;
            let out = layer.output.forward(be, &inner, Activation::None)?;
            let norm = &layer.output_norm;
            x = be.layer_norm(&out, Some(&h), &norm.gamma, &norm.beta, eps)?;
        }
        Ok(Encoded {
            hidden: x,
            key_mask,
            shape,
        })
    }

    /// `pooler_output`: `tanh(dense(hidden[:, 0]))`, `[batch, hidden]`.
    pub fn pool(&self, be: &B, enc: &Encoded<B>) -> Result<Option<B::Tensor>> {
        let Some(pooler) = &self.pooler else {
            return Ok(None);
        };
        let cls = be.reduce(&enc.hidden, &enc.key_mask, enc.shape, Reduce::First)?;
        pooler.forward(be, &cls, Activation::Tanh).map(Some)
    }

    /// Classification logits: `[batch, labels]` for sequence heads, `[batch*seq, labels]` for
    /// token heads.
    pub fn logits(&self, be: &B, enc: &Encoded<B>) -> Result<B::Tensor> {
        let classifier = self
            .classifier
            .as_ref()
            .ok_or_else(|| Error::UnsupportedTask {
                task: "classification".to_owned(),
                reason: "the checkpoint has no classifier head".to_owned(),
            })?;
        match self.head {
            HeadKind::SequenceClassification => {
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

/// Parses `config.json` and checks that it describes an architecture the engine implements.
pub(crate) fn parse_config(bytes: &[u8]) -> Result<Config> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(default)]
        model_type: Option<String>,
        #[serde(default)]
        architectures: Vec<String>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| Error::json(CONFIG_FILE, e))?;
    let arch = probe.architectures.first().cloned();
    let is_bert = match (&probe.model_type, &arch) {
        (Some(t), _) => t == "bert",
        (None, Some(a)) => a.starts_with("Bert"),
        (None, None) => false,
    };
    if !is_bert {
        return Err(Error::UnsupportedArchitecture {
            architecture: probe
                .model_type
                .or(arch)
                .unwrap_or_else(|| "<none: config.json names no model_type>".to_owned()),
            supported:
                "bert (BertModel, BertForSequenceClassification, BertForTokenClassification), \
                 vit (ViTForImageClassification), efficientnet-lite \
                 (EfficientNetLiteForImageClassification)"
                    .to_owned(),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| Error::json(CONFIG_FILE, e))
}
