//! The BERT encoder stack (embeddings, post-norm layers), shared by the architectures built
//! on it (BERT, RoBERTa, XLM-RoBERTa); they differ in tensor prefixes, position ids and heads.

use super::Config;
use crate::backend::{Activation, Backend};
use crate::error::Result;
use crate::models::layers::{LayerNorm, Linear};
use crate::models::{Encoded, EncoderInput};
use crate::weights::Weights;

/// How position ids are made from a padded batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Positions {
    /// `0..seq` in every row (BERT).
    Absolute,
    /// RoBERTa's: `padding_idx + 1 + (the count of non-pad ids before the token)` on non-pad
    /// ids and `padding_idx` on pads, counted from `input_ids` as transformers'
    /// `create_position_ids_from_input_ids` does.
    FromIds { padding_idx: u32 },
}

impl Positions {
    pub fn ids(self, input: &EncoderInput) -> Vec<u32> {
        match self {
            Positions::Absolute => input.shape.positions(),
            Positions::FromIds { padding_idx } => {
                let mut out = Vec::with_capacity(input.ids.len());
                for row in input.ids.chunks(input.shape.seq.max(1)) {
                    let mut seen = 0;
                    out.extend(row.iter().map(|&id| {
                        if id == padding_idx {
                            padding_idx
                        } else {
                            seen += 1;
                            padding_idx + seen
                        }
                    }));
                }
                out
            }
        }
    }
}

struct Layer<B: Backend> {
    qkv: Linear<B>,
    attention_out: Linear<B>,
    attention_norm: LayerNorm<B>,
    intermediate: Linear<B>,
    output: Linear<B>,
    output_norm: LayerNorm<B>,
}

/// Embeddings and encoder layers, loaded from `{prefix}embeddings.*` and
/// `{prefix}encoder.layer.N.*`.
pub(crate) struct Encoder<B: Backend> {
    heads: usize,
    eps: f64,
    act: Activation,
    positions: Positions,
    /// Whether the model reads `token_type_ids` (RoBERTa's tokenizers make none; its one
    /// type row is added to every token).
    type_ids: bool,
    word: B::Tensor,
    position: B::Tensor,
    token_type: B::Tensor,
    embedding_norm: LayerNorm<B>,
    layers: Vec<Layer<B>>,
}

impl<B: Backend> Encoder<B> {
    pub fn load(
        be: &B,
        w: &Weights,
        prefix: &str,
        cfg: &Config,
        positions: Positions,
        type_ids: bool,
    ) -> Result<Self> {
        let (h, i, p) = (cfg.hidden_size, cfg.intermediate_size, prefix);
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
        Ok(Self {
            heads: cfg.num_attention_heads,
            eps: cfg.layer_norm_eps,
            act: cfg.activation()?,
            positions,
            type_ids,
            word,
            position,
            token_type,
            embedding_norm,
            layers,
        })
    }

    /// Runs the embeddings and every encoder layer: `last_hidden_state`.
    pub fn encode(&self, be: &B, input: &EncoderInput) -> Result<Encoded<B>> {
        let (shape, eps) = (input.shape, self.eps);
        let key_mask = be.key_mask(&input.mask, shape)?;
        let zeros;
        let type_ids = if self.type_ids {
            &input.type_ids
        } else {
            zeros = vec![0; input.ids.len()];
            &zeros
        };
        let positions = self.positions.ids(input);
        let x = be.embed(
            [&self.word, &self.position, &self.token_type],
            &input.ids,
            &positions,
            type_ids,
            shape,
        )?;
        let mut x = self.embedding_norm.forward(be, &x, None, eps)?;
        for layer in &self.layers {
            let qkv = layer.qkv.forward(be, &x, Activation::None)?;
            let context = be.attention(&qkv, &key_mask, shape, self.heads)?;
            let attended = layer
                .attention_out
                .forward(be, &context, Activation::None)?;
            let h = layer.attention_norm.forward(be, &attended, Some(&x), eps)?;
            let inner = layer.intermediate.forward(be, &h, self.act)?;
            let out = layer.output.forward(be, &inner, Activation::None)?;
            x = layer.output_norm.forward(be, &out, Some(&h), eps)?;
        }
        Ok(Encoded {
            hidden: x,
            key_mask,
            shape,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::BatchShape;

    #[test]
    fn roberta_positions_count_from_the_padding_index() {
        let input = EncoderInput {
            ids: vec![0, 5, 6, 2, 0, 7, 2, 1],
            type_ids: vec![0; 8],
            mask: vec![1, 1, 1, 1, 1, 1, 1, 0],
            shape: BatchShape { batch: 2, seq: 4 },
        };
        assert_eq!(
            Positions::FromIds { padding_idx: 1 }.ids(&input),
            [2, 3, 4, 5, 2, 3, 4, 1]
        );
        assert_eq!(Positions::Absolute.ids(&input), [0, 1, 2, 3, 0, 1, 2, 3]);
    }
}
