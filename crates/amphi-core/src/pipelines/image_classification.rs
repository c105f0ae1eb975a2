//! `image-classification`: ranked labels per image, from the classifier's logits.

use super::text_classification::{ClassifierFunction, ranked};
use super::{Output, RunOptions, TopK};
use crate::error::Result;
use crate::vision::ImageModel;

/// transformers' default `top_k` for image classification.
const DEFAULT_TOP_K: usize = 5;

/// Turns the logits of each image into its best labels (softmax unless the options say
/// otherwise; one label: sigmoid).
pub(super) fn finish(model: &ImageModel, options: &RunOptions, logits: Vec<f32>) -> Result<Output> {
    let labels = model.labels();
    let function = options.function_to_apply.unwrap_or(if labels.len() == 1 {
        ClassifierFunction::Sigmoid
    } else {
        ClassifierFunction::Softmax
    });
    let k = match options.top_k {
        TopK::Best => DEFAULT_TOP_K,
        TopK::K(k) => k,
        TopK::All => labels.len(),
    };
    Ok(Output::Ranked(
        logits
            .chunks_exact(labels.len())
            .map(|row| {
                ranked(labels, &function.apply(row))
                    .into_iter()
                    .take(k)
                    .collect()
            })
            .collect(),
    ))
}
