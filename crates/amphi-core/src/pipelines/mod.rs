//! Task pipelines with inputs and outputs shaped like Hugging Face / Transformers.js pipelines.
//!
//! A pipeline is three phases: tokenize on the host, run the model on the backend (one readback
//! at the end), and post-process on the host. Hosts speak JSON through [`Request`] and
//! [`Pipeline::run_request`]; Rust callers use [`Pipeline::run`] with typed [`RunOptions`].

mod feature_extraction;
mod text_classification;
mod token_classification;

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use crate::backend::{Fetched, f32s};
use crate::error::{Error, Result};
use crate::files::ModelFiles;
use crate::model::{Device, Forward, LoadOptions, Pooling, TextModel};
use crate::tokenizer::{TextInput, TokenizedBatch};

pub use text_classification::ClassifierFunction;
pub use token_classification::{Aggregation, Entity};

/// The tasks the engine implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Task {
    /// Embeddings: per-token hidden states, or pooled sentence vectors.
    FeatureExtraction,
    /// One label distribution per input (also `sentiment-analysis`).
    TextClassification,
    /// One label per token, optionally grouped into entities (also `ner`).
    TokenClassification,
}

impl Task {
    /// All tasks, in a stable order.
    pub const ALL: [Task; 3] = [
        Task::FeatureExtraction,
        Task::TextClassification,
        Task::TokenClassification,
    ];

    /// The task's canonical name (`feature-extraction`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Task::FeatureExtraction => "feature-extraction",
            Task::TextClassification => "text-classification",
            Task::TokenClassification => "token-classification",
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
            other => Err(Error::invalid_input(format!(
                "unknown task `{other}` (expected feature-extraction, text-classification or \
                 token-classification)"
            ))),
        }
    }
}

impl std::fmt::Display for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `top_k` for text classification: absent means "the best label only" (one object per input),
/// a number means "that many labels" and `null` means "all labels" (a list per input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TopK {
    /// Only the best label, returned as a single object per input.
    #[default]
    Best,
    /// The best `k` labels, as a list per input.
    K(usize),
    /// All labels, sorted by score.
    All,
}

fn deserialize_top_k<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<TopK, D::Error> {
    Ok(match Option::<usize>::deserialize(d)? {
        Some(k) => TopK::K(k),
        None => TopK::All,
    })
}

/// Per-call options. Each applies to one task; passing one to another task is an error.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunOptions {
    /// feature-extraction: `none`, `mean` or `cls` (default: the model folder's
    /// sentence-transformers pooling, else `none`).
    pub pooling: Option<Pooling>,
    /// feature-extraction: L2-normalise the output vectors (default: true when the model folder
    /// has a sentence-transformers `Normalize` module).
    pub normalize: Option<bool>,
    /// text-classification: how many labels to return.
    #[serde(deserialize_with = "deserialize_top_k")]
    pub top_k: TopK,
    /// text-classification: `softmax`, `sigmoid` or `none` (default from `problem_type`).
    pub function_to_apply: Option<ClassifierFunction>,
    /// token-classification: `none` (per token) or `simple` (grouped entities).
    pub aggregation_strategy: Option<Aggregation>,
    /// token-classification: labels left out of the result (default `["O"]`).
    pub ignore_labels: Option<Vec<String>>,
    /// Truncate inputs to this many tokens (default: the model's maximum).
    pub max_length: Option<usize>,
}

impl RunOptions {
    fn check_task(&self, task: Task) -> Result<()> {
        let fe = self.pooling.is_some() || self.normalize.is_some();
        let tc = self.top_k != TopK::Best || self.function_to_apply.is_some();
        let tok = self.aggregation_strategy.is_some() || self.ignore_labels.is_some();
        let stray = match task {
            Task::FeatureExtraction => tc || tok,
            Task::TextClassification => fe || tok,
            Task::TokenClassification => fe || tc,
        };
        if stray {
            return Err(Error::invalid_input(format!(
                "an option was given that does not apply to {task}"
            )));
        }
        Ok(())
    }
}

/// A started request: its response, or (browsers' GPU) a readback to wait for.
#[derive(Debug)]
pub enum Started {
    /// The response.
    Done(Response),
    /// Waiting for the host's readback [`Pending::readback`].
    Pending(Pending),
}

/// A request waiting for its GPU readback; [`Pipeline::resume`] finishes it.
#[derive(Debug)]
pub struct Pending {
    inputs: Vec<TextInput>,
    batch: TokenizedBatch,
    options: RunOptions,
    tokens: usize,
    single: bool,
    readback: u32,
}

impl Pending {
    /// The host's readback id.
    pub fn readback(&self) -> u32 {
        self.readback
    }
}

enum Step {
    Done(Output, usize),
    Pending(Pending),
}

/// One input or a batch of inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Inputs {
    /// A single input: the output is that input's result.
    One(TextInput),
    /// A batch: the output is a list with one result per input.
    Many(Vec<TextInput>),
}

impl Inputs {
    fn as_slice(&self) -> &[TextInput] {
        match self {
            Inputs::One(t) => std::slice::from_ref(t),
            Inputs::Many(v) => v,
        }
    }
}

/// A request in the Hugging Face inference shape: `{"inputs": ..., "parameters": {...}}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// A string, a `{text, text_pair}` object, or a list of them.
    pub inputs: Inputs,
    /// Task options.
    #[serde(default)]
    pub parameters: RunOptions,
}

/// A label with its score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelScore {
    /// The label name from `id2label`.
    pub label: String,
    /// Probability (softmax / sigmoid) or raw logit (`function_to_apply: none`).
    pub score: f32,
}

/// A pipeline's result for each input of a batch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Output {
    /// One vector per input (pooled sentence embeddings).
    Pooled(Vec<Vec<f32>>),
    /// One vector per token per input (`pooling: none`); padding excluded.
    Tokens(Vec<Vec<Vec<f32>>>),
    /// The best label per input (`top_k` absent).
    Best(Vec<LabelScore>),
    /// A sorted list of labels per input.
    Ranked(Vec<Vec<LabelScore>>),
    /// Token labels or entity groups per input.
    Entities(Vec<Vec<Entity>>),
}

impl Output {
    /// Number of inputs the output covers.
    pub fn len(&self) -> usize {
        match self {
            Output::Pooled(v) => v.len(),
            Output::Tokens(v) => v.len(),
            Output::Best(v) => v.len(),
            Output::Ranked(v) => v.len(),
            Output::Entities(v) => v.len(),
        }
    }

    /// Whether the output covers no input.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A pipeline's answer to a [`Request`]: serializes as a list with one item per input, or, for a
/// single input, as that one item. As in Hugging Face and Transformers.js, two forms keep the
/// list for a single input: embeddings (`[[..]]`, batch dimension first) and the best label
/// (`[{"label": .., "score": ..}]`). Floats are written as the shortest decimal that reads back
/// as the same f32.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// The results, one per input.
    pub output: Output,
    /// Whether the request had a single input (not a list).
    pub single: bool,
    /// Tokens processed (special tokens included, padding excluded): usage accounting.
    pub tokens: usize,
}

impl Serialize for Response {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        fn first<T: Serialize, S: serde::Serializer>(
            v: &[T],
            s: S,
        ) -> std::result::Result<S::Ok, S::Error> {
            match v {
                [one] => one.serialize(s),
                all => all.serialize(s),
            }
        }
        if !self.single {
            return self.output.serialize(s);
        }
        match &self.output {
            // As Hugging Face and Transformers.js: embeddings keep their batch dimension.
            Output::Pooled(_) | Output::Tokens(_) | Output::Best(_) => self.output.serialize(s),
            Output::Ranked(v) => first(v, s),
            Output::Entities(v) => first(v, s),
        }
    }
}

/// Limits a pipeline enforces on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Inputs per request.
    pub max_batch: usize,
    /// UTF-8 bytes per input (a pair counts both texts).
    pub max_input_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_batch: 256,
            max_input_bytes: 1 << 20,
        }
    }
}

/// A task bound to a loaded model. Cheap to create and clone: the model is shared.
#[derive(Debug, Clone)]
pub struct Pipeline {
    task: Task,
    model: Arc<TextModel>,
    limits: Limits,
}

impl Pipeline {
    /// Loads `files` for `task` on the device of `options`.
    pub fn load(task: Task, files: ModelFiles, options: &LoadOptions) -> Result<Self> {
        Self::new(task, Arc::new(TextModel::load(files, options)?))
    }

    /// Binds a loaded model to a task, checking that the model has the head the task needs.
    pub fn new(task: Task, model: Arc<TextModel>) -> Result<Self> {
        if !model.tasks().contains(&task) {
            return Err(Error::UnsupportedTask {
                task: task.to_string(),
                reason: format!(
                    "config.json declares {:?}; this model supports {}",
                    model.config().architectures,
                    model
                        .tasks()
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        Ok(Self {
            task,
            model,
            limits: Limits::default(),
        })
    }

    /// Replaces the default limits.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The pipeline's task.
    pub fn task(&self) -> Task {
        self.task
    }

    /// The device the model runs on.
    pub fn device(&self) -> Device {
        self.model.device()
    }

    /// The loaded model.
    pub fn model(&self) -> &TextModel {
        &self.model
    }

    /// Runs the pipeline on a batch of inputs.
    pub fn run(&self, inputs: &[TextInput], options: &RunOptions) -> Result<Output> {
        self.run_counted(inputs, options).map(|(output, _)| output)
    }

    fn run_counted(&self, inputs: &[TextInput], options: &RunOptions) -> Result<(Output, usize)> {
        match self.start_inner(inputs, options)? {
            Step::Done(output, tokens) => Ok((output, tokens)),
            Step::Pending(_) => Err(Error::Backend {
                message: "this host reads GPU buffers asynchronously: use Pipeline::start"
                    .to_owned(),
            }),
        }
    }

    fn start_inner(&self, inputs: &[TextInput], options: &RunOptions) -> Result<Step> {
        options.check_task(self.task)?;
        if inputs.len() > self.limits.max_batch {
            return Err(Error::InputTooLarge {
                message: format!(
                    "{} inputs in one request, the limit is {}",
                    inputs.len(),
                    self.limits.max_batch
                ),
            });
        }
        if self.task == Task::TokenClassification {
            token_classification::check(inputs)?;
        }
        let batch = self
            .model
            .tokenize(inputs, options.max_length, self.limits.max_input_bytes)?;
        let tokens = batch.encodings.iter().map(|e| e.len()).sum();
        let what = match self.task {
            Task::FeatureExtraction => feature_extraction::forward(&self.model, options),
            Task::TextClassification | Task::TokenClassification => Forward::Logits,
        };
        Ok(match self.model.forward_start(&batch, what)? {
            Fetched::Ready(data) => Step::Done(self.finish(inputs, &batch, options, data)?, tokens),
            Fetched::Pending(readback) => Step::Pending(Pending {
                inputs: inputs.to_vec(),
                batch,
                options: options.clone(),
                tokens,
                single: false,
                readback,
            }),
        })
    }

    fn finish(
        &self,
        inputs: &[TextInput],
        batch: &TokenizedBatch,
        options: &RunOptions,
        data: Vec<f32>,
    ) -> Result<Output> {
        match self.task {
            Task::FeatureExtraction => {
                feature_extraction::finish(&self.model, batch, options, data)
            }
            Task::TextClassification => text_classification::finish(&self.model, options, data),
            Task::TokenClassification => {
                token_classification::finish(&self.model, inputs, batch, options, data)
            }
        }
    }

    /// Runs a request in the Hugging Face inference shape (`{"inputs": ..., "parameters": ...}`).
    pub fn run_request(&self, request: &Request) -> Result<Response> {
        let (output, tokens) = self.run_counted(request.inputs.as_slice(), &request.parameters)?;
        Ok(Response {
            output,
            single: matches!(request.inputs, Inputs::One(_)),
            tokens,
        })
    }

    /// Starts a request. On a host whose GPU reads back asynchronously (a browser) the result is
    /// [`Started::Pending`]: hand the readback's bytes to [`Pipeline::resume`] when they arrive.
    /// Everywhere else it is [`Started::Done`].
    pub fn start(&self, request: &Request) -> Result<Started> {
        let single = matches!(request.inputs, Inputs::One(_));
        Ok(
            match self.start_inner(request.inputs.as_slice(), &request.parameters)? {
                Step::Done(output, tokens) => Started::Done(Response {
                    output,
                    single,
                    tokens,
                }),
                Step::Pending(pending) => Started::Pending(Pending { single, ..pending }),
            },
        )
    }

    /// Finishes a [`Started::Pending`] request with the bytes of its readback.
    pub fn resume(&self, pending: Pending, readback: &[u8]) -> Result<Response> {
        let data = f32s(readback);
        let output = self.finish(&pending.inputs, &pending.batch, &pending.options, data)?;
        Ok(Response {
            output,
            single: pending.single,
            tokens: pending.tokens,
        })
    }
}
