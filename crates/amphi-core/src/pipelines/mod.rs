//! Task pipelines with inputs and outputs shaped like Hugging Face / Transformers.js pipelines.
//!
//! A pipeline is three phases: tokenize on the host, run the model on the backend (one readback
//! at the end), and post-process on the host. Hosts speak JSON through [`Request`] and
//! [`Pipeline::run_request`]; Rust callers use [`Pipeline::run`] with typed [`RunOptions`].

mod feature_extraction;
mod image_classification;
mod session;
mod text_classification;
mod text_generation;
mod token_classification;

use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

use crate::backend::{Fetched, f32s};
use crate::device::Device;
use crate::engine::LoadOptions;
use crate::error::{Error, Result};
use crate::files::ModelFiles;
use crate::image::{Image, ImageInput, ImageRef};
use crate::loaded::Model;
use crate::model::{Forward, Pooling, TextModel};
pub use crate::task::Task;
use crate::tokenizer::{TextInput, TokenizedBatch};

pub use session::{Chunk, Session, SessionStep};
pub use text_classification::ClassifierFunction;
pub use text_generation::{
    FinishReason, Generated, GeneratedText, GenerationOptions, Prompts, StopList, TextDelta,
};
pub use token_classification::{Aggregation, Entity};

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
    /// text- and image-classification: how many labels to return (image-classification:
    /// 5 when absent, as in transformers).
    #[serde(deserialize_with = "deserialize_top_k")]
    pub top_k: TopK,
    /// text- and image-classification: `softmax`, `sigmoid` or `none` (default from
    /// `problem_type`).
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
            Task::ImageClassification => fe || tok || self.max_length.is_some(),
            Task::TextGeneration => true,
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
    /// Text requests: the inputs and their tokens (post-processing needs them).
    text: Option<(Vec<TextInput>, TokenizedBatch)>,
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
    /// text-generation: the generated sequences per prompt.
    Generated(Vec<Vec<Generated>>),
    /// text-generation, streamed: a piece of one prompt's output.
    Delta(Vec<TextDelta>),
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
            Output::Generated(v) => v.len(),
            Output::Delta(v) => v.len(),
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
            // As Hugging Face: one prompt gives its list of sequences.
            Output::Generated(v) => first(v, s),
            Output::Delta(v) => first(v, s),
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
    model: Arc<Model>,
    limits: Limits,
}

/// An image-classification request in the Hugging Face inference shape: `inputs` is one image
/// or a list ([`ImageRef`]: base64, a `data:` URL, or an attachment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageRequest {
    inputs: OneOrMany<ImageRef>,
    #[serde(default)]
    parameters: RunOptions,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

impl Pipeline {
    /// Loads `files` for `task` on the device of `options`.
    pub fn load(task: Task, files: ModelFiles, options: &LoadOptions) -> Result<Self> {
        Self::new(task, Arc::new(Model::load(files, options)?))
    }

    /// Binds a loaded model to a task, checking that the model has the head the task needs.
    pub fn new(task: Task, model: Arc<Model>) -> Result<Self> {
        if !model.tasks().contains(&task) {
            return Err(Error::UnsupportedTask {
                task: task.to_string(),
                reason: format!(
                    "config.json declares {:?}; this model supports {}",
                    model.info().architectures,
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
    pub fn model(&self) -> &Model {
        &self.model
    }

    fn text(&self) -> Result<&TextModel> {
        self.model.as_text().ok_or_else(|| Error::UnsupportedTask {
            task: self.task.to_string(),
            reason: "this model is not a text encoder".to_owned(),
        })
    }

    fn generator(&self) -> Result<&crate::generator::GeneratorModel> {
        self.model
            .as_generator()
            .ok_or_else(|| Error::UnsupportedTask {
                task: self.task.to_string(),
                reason: "this model is not a text generator".to_owned(),
            })
    }

    /// Runs the pipeline on a batch of text inputs.
    pub fn run(&self, inputs: &[TextInput], options: &RunOptions) -> Result<Output> {
        self.run_counted(inputs, options).map(|(output, _)| output)
    }

    fn run_counted(&self, inputs: &[TextInput], options: &RunOptions) -> Result<(Output, usize)> {
        ready(self.start_inner(inputs, options)?)
    }

    fn start_inner(&self, inputs: &[TextInput], options: &RunOptions) -> Result<Step> {
        options.check_task(self.task)?;
        let model = self.text()?;
        self.check_batch(inputs.len())?;
        if self.task == Task::TokenClassification {
            token_classification::check(inputs)?;
        }
        let batch = model.tokenize(inputs, options.max_length, self.limits.max_input_bytes)?;
        let tokens = batch.encodings.iter().map(|e| e.len()).sum();
        let what = match self.task {
            Task::FeatureExtraction => feature_extraction::forward(model, options),
            _ => Forward::Logits,
        };
        Ok(match model.forward_start(&batch, what)? {
            Fetched::Ready(data) => {
                let output = self.finish_text(model, inputs, &batch, options, data)?;
                Step::Done(output, tokens)
            }
            Fetched::Pending(readback) => Step::Pending(Pending {
                text: Some((inputs.to_vec(), batch)),
                options: options.clone(),
                tokens,
                single: false,
                readback,
            }),
        })
    }

    fn check_batch(&self, n: usize) -> Result<()> {
        if n > self.limits.max_batch {
            return Err(Error::InputTooLarge {
                message: format!(
                    "{n} inputs in one request, the limit is {}",
                    self.limits.max_batch
                ),
            });
        }
        Ok(())
    }

    /// Runs image classification on a batch of images (decoded, preprocessed as the model
    /// folder's `preprocessor_config.json` says, and classified in one forward pass).
    pub fn run_images(&self, images: Vec<ImageInput>, options: &RunOptions) -> Result<Output> {
        ready(self.start_images_inner(images, options)?).map(|(output, _)| output)
    }

    fn start_images_inner(&self, images: Vec<ImageInput>, options: &RunOptions) -> Result<Step> {
        options.check_task(self.task)?;
        let model = self
            .model
            .as_image()
            .ok_or_else(|| Error::UnsupportedTask {
                task: self.task.to_string(),
                reason: "this is a text model: pass text".to_owned(),
            })?;
        if images.is_empty() {
            return Err(Error::invalid_input("no images"));
        }
        self.check_batch(images.len())?;
        let n = images.len();
        // One image at a time: decoded, preprocessed and dropped before the next is decoded,
        // so a request holds at most one decoded image (≤ `max_image_pixels`) beside the fixed
        // size model inputs; the host may stop the call between any two of these steps.
        let mut pixels = Vec::new();
        for input in images {
            crate::interrupt::check()?;
            let decoded = crate::profile::timed("decode", || {
                Image::from_input(input, model.max_image_pixels())
            })?;
            crate::interrupt::check()?;
            pixels.extend(model.pixel_values(&decoded)?);
        }
        Ok(match model.logits_start(&pixels, n)? {
            Fetched::Ready(data) => {
                Step::Done(image_classification::finish(model, options, data)?, 0)
            }
            Fetched::Pending(readback) => Step::Pending(Pending {
                text: None,
                options: options.clone(),
                tokens: 0,
                single: false,
                readback,
            }),
        })
    }

    fn finish_text(
        &self,
        model: &TextModel,
        inputs: &[TextInput],
        batch: &TokenizedBatch,
        options: &RunOptions,
        data: Vec<f32>,
    ) -> Result<Output> {
        match self.task {
            Task::FeatureExtraction => feature_extraction::finish(model, batch, options, data),
            Task::TextClassification => text_classification::finish(model, options, data),
            Task::TokenClassification => {
                token_classification::finish(model, inputs, batch, options, data)
            }
            Task::ImageClassification => {
                Err(Error::invalid_input("image-classification needs images"))
            }
            Task::TextGeneration => Err(Error::invalid_input(
                "text-generation runs as a session: Pipeline::open or Pipeline::generate",
            )),
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
        started(
            self.start_inner(request.inputs.as_slice(), &request.parameters)?,
            single,
        )
    }

    /// Starts a request given as JSON, the way hosts receive it: text tasks take
    /// [`Request`]; `image-classification` takes `{"inputs": image or [images], "parameters"}`
    /// where an image is base64, a `data:` URL or `{"blob": i}` (raw RGBA pixels with `width`
    /// and `height`), `i` indexing `attachments`: bytes the host passed beside the JSON.
    pub fn start_json(&self, request: &[u8], attachments: Vec<Vec<u8>>) -> Result<Started> {
        let parse_error = |e: serde_json::Error| Error::invalid_input(format!("request: {e}"));
        if self.task == Task::TextGeneration {
            // Many steps, one readback each: run to the end where readbacks finish at once.
            let mut session = self.open(request, attachments)?;
            return match session.step()? {
                SessionStep::Done(Some(response)) => Ok(Started::Done(response)),
                _ => Err(Error::invalid_input(
                    "text-generation takes many GPU readbacks on this host: step a session",
                )),
            };
        }
        if self.task != Task::ImageClassification {
            let request: Request = serde_json::from_slice(request).map_err(parse_error)?;
            return self.start(&request);
        }
        let request: ImageRequest = serde_json::from_slice(request).map_err(parse_error)?;
        let mut blobs: Vec<Option<Vec<u8>>> = attachments.into_iter().map(Some).collect();
        let (refs, single) = match &request.inputs {
            OneOrMany::One(r) => (std::slice::from_ref(r), true),
            OneOrMany::Many(v) => (v.as_slice(), false),
        };
        self.check_batch(refs.len())?;
        let images = refs
            .iter()
            .map(|r| r.resolve(&mut blobs))
            .collect::<Result<Vec<_>>>()?;
        started(
            self.start_images_inner(images, &request.parameters)?,
            single,
        )
    }

    /// Finishes a [`Started::Pending`] request with the bytes of its readback.
    pub fn resume(&self, pending: Pending, readback: &[u8]) -> Result<Response> {
        let output = self.finish_pending(&pending, f32s(readback))?;
        Ok(Response {
            output,
            single: pending.single,
            tokens: pending.tokens,
        })
    }

    fn finish_pending(&self, pending: &Pending, data: Vec<f32>) -> Result<Output> {
        Ok(match (&pending.text, &*self.model) {
            (Some((inputs, batch)), Model::Text(model)) => {
                self.finish_text(model, inputs, batch, &pending.options, data)?
            }
            (None, Model::Image(model)) => {
                image_classification::finish(model, &pending.options, data)?
            }
            _ => {
                return Err(Error::invalid_input(
                    "the pending request belongs to another model",
                ));
            }
        })
    }
}

fn ready(step: Step) -> Result<(Output, usize)> {
    match step {
        Step::Done(output, tokens) => Ok((output, tokens)),
        Step::Pending(_) => Err(Error::Backend {
            message: "this host reads GPU buffers asynchronously: use Pipeline::start".to_owned(),
        }),
    }
}

fn started(step: Step, single: bool) -> Result<Started> {
    Ok(match step {
        Step::Done(output, tokens) => Started::Done(Response {
            output,
            single,
            tokens,
        }),
        Step::Pending(pending) => Started::Pending(Pending { single, ..pending }),
    })
}
