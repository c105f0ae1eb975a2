//! # amphi-core
//!
//! amphi's host-neutral inference engine. It compiles natively and for
//! `wasm32-unknown-unknown` with no filesystem, no threads and no JavaScript: a host hands it
//! the files of a Hugging Face model folder as bytes, and it runs text and image pipelines on
//! them.
//!
//! ```no_run
//! use amphi_core::{LoadOptions, ModelFiles, Pipeline, RunOptions, Task, Pooling};
//!
//! # fn main() -> Result<(), amphi_core::Error> {
//! // Any host can build `ModelFiles` from bytes; native hosts can read a model folder.
//! let files = ModelFiles::from_dir("all-MiniLM-L6-v2").expect("model folder");
//! let extractor = Pipeline::load(Task::FeatureExtraction, files, &LoadOptions::default())?;
//! let options = RunOptions { pooling: Some(Pooling::Mean), normalize: Some(true), ..Default::default() };
//! let output = extractor.run(&["hello world".into()], &options)?;
//! println!("{}", serde_json::to_string(&output).expect("JSON"));
//! # Ok(())
//! # }
//! ```
//!
//! Image classification takes encoded images (or raw RGBA pixels) with
//! [`Pipeline::run_images`]; hosts that speak JSON use [`Pipeline::start_json`] with the images
//! attached as bytes.
//!
//! The public surface is deliberately small: [`Pipeline`] (a task bound to a [`Model`]),
//! [`ModelFiles`], options and outputs, the closed [`Device`] enum and one [`Error`] enum with
//! stable codes. Compute backends are internal; see `ARCHITECTURE.md`.

mod backend;
mod device;
mod engine;
mod error;
mod files;
mod generate;
mod generator;
pub mod image;
mod interrupt;
mod loaded;
mod model;
mod models;
mod pipelines;
pub mod probe;
pub mod profile;
mod registry;
#[cfg(feature = "selftest")]
#[doc(hidden)]
pub mod selftest;
mod task;
#[cfg(test)]
mod test_support;
mod tokenizer;
mod vision;
mod weights;

/// The GPU interface a host provides ([`LoadOptions::gpu`]); see the `amphi-gpu` crate.
pub use amphi_gpu as gpu;
pub use device::{Device, Precision};
pub use engine::LoadOptions;
pub use error::{Error, Result};
pub use files::ModelFiles;
pub use generate::chat::Message;
pub use generator::GeneratorModel;
pub use interrupt::set_interrupt_check;
pub use loaded::{Model, ModelInfo};
pub use model::{EmbeddingDefaults, Pooling, RawOutput, RawTensor, TextModel};
pub use pipelines::{
    Aggregation, Chunk, ClassifierFunction, Entity, FinishReason, Generated, GeneratedText,
    GenerationOptions, Inputs, LabelScore, Limits, Output, Pending, Pipeline, Prompts, Request,
    Response, RunOptions, Session, SessionStep, Started, StopList, Task, TextDelta, TopK,
};
pub use tokenizer::TextInput;
pub use vision::ImageModel;

/// Tokenization without a model, for hosts and tests that check tokenizer parity.
pub mod tokenization {
    pub use crate::tokenizer::{Encoded, TextInput, Tokenizer};
}
