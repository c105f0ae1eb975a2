//! `feature-extraction`: token embeddings or pooled, optionally normalised, sentence embeddings.

use super::{Output, RunOptions};
use crate::error::Result;
use crate::model::{Forward, Pooling, TextModel};
use crate::tokenizer::TokenizedBatch;

pub(super) fn run(
    model: &TextModel,
    batch: &TokenizedBatch,
    options: &RunOptions,
) -> Result<Output> {
    let defaults = model.embedding_defaults();
    let pooling = options
        .pooling
        .or(defaults.pooling)
        .unwrap_or(Pooling::None);
    let normalize = options.normalize.unwrap_or(defaults.normalize);
    let hidden = model.config().hidden_size;
    let data = model.forward(
        batch,
        Forward::Hidden {
            reduce: pooling.into(),
            normalize,
        },
    )?;
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
