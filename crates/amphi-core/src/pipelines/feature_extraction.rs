//! `feature-extraction`: token embeddings or pooled, optionally normalised, sentence embeddings.

use super::{Output, RunOptions};
use crate::error::Result;
use crate::model::{Forward, Pooling, TextModel};
use crate::tokenizer::TokenizedBatch;

fn pooling(model: &TextModel, options: &RunOptions) -> Pooling {
    options
        .pooling
        .or(model.embedding_defaults().pooling)
        .unwrap_or(Pooling::None)
}

/// What the model computes: hidden states, pooled and normalised as the options say.
pub(super) fn forward(model: &TextModel, options: &RunOptions) -> Forward {
    Forward::Hidden {
        reduce: pooling(model, options).into(),
        normalize: options
            .normalize
            .unwrap_or(model.embedding_defaults().normalize),
    }
}

/// Shapes the computed vectors into the output.
pub(super) fn finish(
    model: &TextModel,
    batch: &TokenizedBatch,
    options: &RunOptions,
    data: Vec<f32>,
) -> Result<Output> {
    let pooling = pooling(model, options);
    let hidden = model.hidden_size();
    let shape = batch.input.shape;
    Ok(match pooling {
        Pooling::None => Output::Tokens(
            batch
                .encodings
                .iter()
                .enumerate()
                .map(|(b, enc)| {
                    (0..enc.len())
                        .map(|t| {
                            let row = (b * shape.seq + t) * hidden;
                            data[row..row + hidden].to_vec()
                        })
                        .collect()
                })
                .collect(),
        ),
        Pooling::Mean | Pooling::Cls => {
            Output::Pooled(data.chunks_exact(hidden).map(<[f32]>::to_vec).collect())
        }
    })
}
