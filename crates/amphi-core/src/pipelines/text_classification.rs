//! `text-classification`: a label distribution per input, from the sequence-classification head.

use serde::{Deserialize, Serialize};

use super::{LabelScore, Output, RunOptions, TopK};
use crate::error::Result;
use crate::model::TextModel;

/// The function turning logits into scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierFunction {
    /// Single-label classification (the default with two or more labels).
    Softmax,
    /// Multi-label classification, or a single label.
    Sigmoid,
    /// Raw logits (regression).
    None,
}

impl ClassifierFunction {
    /// The Hugging Face default for a config's `problem_type` and label count.
    fn default_for(problem_type: Option<&str>, num_labels: usize) -> Self {
        match problem_type {
            Some("multi_label_classification") => Self::Sigmoid,
            Some("regression") => Self::None,
            _ if num_labels == 1 => Self::Sigmoid,
            _ => Self::Softmax,
        }
    }

    pub(crate) fn apply(self, logits: &[f32]) -> Vec<f32> {
        match self {
            Self::Softmax => softmax(logits),
            Self::Sigmoid => logits.iter().map(|&x| sigmoid(x)).collect(),
            Self::None => logits.to_vec(),
        }
    }
}

pub(crate) fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits.iter().map(|&x| f64::from(x - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|&e| (e / sum) as f32).collect()
}

fn sigmoid(x: f32) -> f32 {
    (1.0 / (1.0 + (-f64::from(x)).exp())) as f32
}

/// Labels sorted by descending score; ties keep id order.
pub(crate) fn ranked(labels: &[String], scores: &[f32]) -> Vec<LabelScore> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order
        .into_iter()
        .map(|i| LabelScore {
            label: labels[i].clone(),
            score: scores[i],
        })
        .collect()
}

/// Turns the logits of each input into ranked labels.
pub(super) fn finish(model: &TextModel, options: &RunOptions, logits: Vec<f32>) -> Result<Output> {
    let labels = model.labels();
    let function = options
        .function_to_apply
        .unwrap_or_else(|| ClassifierFunction::default_for(model.problem_type(), labels.len()));
    let per_input = logits
        .chunks_exact(labels.len())
        .map(|row| ranked(labels, &function.apply(row)));
    Ok(match options.top_k {
        TopK::Best => Output::Best(per_input.filter_map(|r| r.into_iter().next()).collect()),
        TopK::K(k) => Output::Ranked(per_input.map(|r| r.into_iter().take(k).collect()).collect()),
        TopK::All => Output::Ranked(per_input.collect()),
    })
}
