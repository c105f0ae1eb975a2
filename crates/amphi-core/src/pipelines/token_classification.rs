//! `token-classification`: a label per token, or entity groups with character offsets into the
//! original text (Hugging Face `aggregation_strategy` `none` and `simple`).

use serde::{Deserialize, Serialize};

use super::text_classification::softmax;
use super::{Output, RunOptions};
use crate::error::{Error, Result};
use crate::model::TextModel;
use crate::tokenizer::{TextInput, TokenizedBatch};

/// How token predictions are grouped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregation {
    /// One entry per token.
    #[default]
    None,
    /// Adjacent tokens with the same entity type (`B-X I-X ...`) form one group; score = mean.
    Simple,
}

/// One token prediction or one entity group. Offsets are in characters (Unicode scalar values)
/// of the original text, `[start, end)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Entity {
    /// `aggregation_strategy: none`.
    Token {
        /// The predicted label, e.g. `B-PER`.
        entity: String,
        /// Its probability.
        score: f32,
        /// Position of the token in the encoded sequence (`[CLS]` is 0).
        index: usize,
        /// The token as the vocabulary spells it (`##o` for a continuation piece).
        word: String,
        /// Start offset.
        start: usize,
        /// End offset.
        end: usize,
    },
    /// `aggregation_strategy: simple`.
    Group {
        /// The entity type without its `B-`/`I-` prefix, e.g. `PER`.
        entity_group: String,
        /// Mean probability of the group's tokens.
        score: f32,
        /// The group's tokens joined back into text.
        word: String,
        /// Start offset of the first token.
        start: usize,
        /// End offset of the last token.
        end: usize,
    },
}

/// Characters `[start, end)` of a single-text input.
fn text_of(input: &TextInput, start: usize, end: usize) -> String {
    match input {
        TextInput::Text(t) => t
            .chars()
            .skip(start)
            .take(end.saturating_sub(start))
            .collect(),
        TextInput::Pair { .. } => String::new(),
    }
}

struct TokenPrediction {
    label: String,
    score: f32,
    index: usize,
    token: String,
    start: usize,
    end: usize,
}

/// Splits `B-PER` into (`B`, `PER`); labels without a B-/I- prefix continue a group (`I`).
fn tag(label: &str) -> (&str, &str) {
    match label.split_once('-') {
        Some((bi @ ("B" | "I"), rest)) => (bi, rest),
        _ => ("I", label),
    }
}

fn group(model: &TextModel, tokens: &[TokenPrediction]) -> Result<Entity> {
    // As transformers' `group_sub_entities`: the label after its first `-`.
    let label = &tokens[0].label;
    let entity = label
        .split_once('-')
        .map_or(label.as_str(), |(_, rest)| rest);
    let mean = tokens.iter().map(|t| f64::from(t.score)).sum::<f64>() / tokens.len() as f64;
    let pieces: Vec<String> = tokens.iter().map(|t| t.token.clone()).collect();
    Ok(Entity::Group {
        entity_group: entity.to_owned(),
        score: mean as f32,
        word: model.tokenizer().join_tokens(&pieces)?,
        start: tokens[0].start,
        end: tokens[tokens.len() - 1].end,
    })
}

fn aggregate_simple(model: &TextModel, tokens: Vec<TokenPrediction>) -> Result<Vec<Entity>> {
    let mut groups = Vec::new();
    let mut current: Vec<TokenPrediction> = Vec::new();
    for token in tokens {
        if let Some(last) = current.last() {
            let (bi, t) = tag(&token.label);
            let (_, last_t) = tag(&last.label);
            if t != last_t || bi == "B" {
                groups.push(group(model, &current)?);
                current.clear();
            }
        }
        current.push(token);
    }
    if !current.is_empty() {
        groups.push(group(model, &current)?);
    }
    Ok(groups)
}

/// Token classification takes single texts.
pub(super) fn check(inputs: &[TextInput]) -> Result<()> {
    if inputs.iter().any(|i| matches!(i, TextInput::Pair { .. })) {
        return Err(Error::invalid_input(
            "token-classification takes single texts, not text pairs",
        ));
    }
    Ok(())
}

/// Turns the per-token logits into labelled tokens or entity groups.
pub(super) fn finish(
    model: &TextModel,
    inputs: &[TextInput],
    batch: &TokenizedBatch,
    options: &RunOptions,
    logits: Vec<f32>,
) -> Result<Output> {
    let labels = model.labels();
    let ignore: Vec<String> = options
        .ignore_labels
        .clone()
        .unwrap_or_else(|| vec!["O".to_owned()]);
    let seq = batch.input.shape.seq;
    let unk_id = model.tokenizer().unk_id();
    let mut out = Vec::with_capacity(inputs.len());
    for (b, enc) in batch.encodings.iter().enumerate() {
        let mut tokens = Vec::new();
        for t in 0..enc.len() {
            if enc.get_special_tokens_mask()[t] == 1 {
                continue;
            }
            let row = (b * seq + t) * labels.len();
            let probs = softmax(&logits[row..row + labels.len()]);
            let best = (0..probs.len())
                .max_by(|&x, &y| probs[x].total_cmp(&probs[y]).then(y.cmp(&x)))
                .unwrap_or(0);
            let (start, end) = enc.get_offsets()[t];
            // Like transformers, an unknown token is reported as the text it stands for.
            let token = if Some(enc.get_ids()[t]) == unk_id {
                text_of(&inputs[b], start, end)
            } else {
                enc.get_tokens()[t].clone()
            };
            tokens.push(TokenPrediction {
                label: labels[best].clone(),
                score: probs[best],
                index: t,
                token,
                start,
                end,
            });
        }
        let entities = match options.aggregation_strategy.unwrap_or_default() {
            Aggregation::None => tokens
                .into_iter()
                .filter(|t| !ignore.contains(&t.label))
                .map(|t| Entity::Token {
                    entity: t.label,
                    score: t.score,
                    index: t.index,
                    word: t.token,
                    start: t.start,
                    end: t.end,
                })
                .collect(),
            Aggregation::Simple => aggregate_simple(model, tokens)?
                .into_iter()
                .filter(|e| !matches!(e, Entity::Group { entity_group, .. } if ignore.contains(entity_group)))
                .collect(),
        };
        out.push(entities);
    }
    Ok(Output::Entities(out))
}
