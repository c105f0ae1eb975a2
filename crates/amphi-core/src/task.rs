//! [`Task`]: what a pipeline computes, named as in Hugging Face and Transformers.js.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The tasks the engine implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Task {
    /// Embeddings: per-token hidden states, or pooled sentence vectors.
    FeatureExtraction,
    /// One label distribution per input (also `sentiment-analysis`).
    TextClassification,
    /// One label per token, optionally grouped into entities (also `ner`).
    TokenClassification,
    /// Ranked labels per image.
    ImageClassification,
    /// Text continued by a decoder, token by token (prompts or chat messages).
    TextGeneration,
}

impl Task {
    /// All tasks, in a stable order.
    pub const ALL: [Task; 5] = [
        Task::FeatureExtraction,
        Task::TextClassification,
        Task::TokenClassification,
        Task::ImageClassification,
        Task::TextGeneration,
    ];

    /// The task's canonical name (`feature-extraction`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Task::FeatureExtraction => "feature-extraction",
            Task::TextClassification => "text-classification",
            Task::TokenClassification => "token-classification",
            Task::ImageClassification => "image-classification",
            Task::TextGeneration => "text-generation",
        }
    }
}

impl std::str::FromStr for Task {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "feature-extraction" | "embeddings" => Ok(Task::FeatureExtraction),
            "text-classification" | "sentiment-analysis" => Ok(Task::TextClassification),
            "token-classification" | "ner" => Ok(Task::TokenClassification),
            "image-classification" => Ok(Task::ImageClassification),
            "text-generation" => Ok(Task::TextGeneration),
            other => Err(Error::invalid_input(format!(
                "unknown task `{other}` (expected feature-extraction, text-classification, \
                 token-classification, image-classification or text-generation)"
            ))),
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
