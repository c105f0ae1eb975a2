//! A tiny semantic search: embed a few documents and a query, rank by cosine similarity.
//!
//! ```text
//! cargo xtask fetch-model
//! cargo run -p amphi-examples --example semantic-search -- ~/.cache/amphi/models/all-MiniLM-L6-v2 "a pet that purrs"
//! ```
#![allow(clippy::print_stdout)]

use amphi_core::{LoadOptions, ModelFiles, Output, Pipeline, RunOptions, Task, TextInput};
use anyhow::{Context, Result, bail};

const DOCUMENTS: &[&str] = &[
    "The cat sleeps on the warm windowsill.",
    "Rust guarantees memory safety without a garbage collector.",
    "WebGPU brings compute shaders to the browser.",
    "Espresso is brewed by forcing hot water through ground coffee.",
    "The stock market closed higher on Friday.",
];

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let model = args
        .next()
        .context("usage: semantic-search <model-dir> [query]")?;
    let query = args.next().unwrap_or_else(|| "a pet that purrs".to_owned());

    let files = ModelFiles::from_dir(&model).with_context(|| format!("reading {model}"))?;
    // all-MiniLM-L6-v2's folder declares mean pooling + normalisation (sentence-transformers),
    // so the default options give unit-length sentence embeddings.
    let extractor = Pipeline::load(Task::FeatureExtraction, files, &LoadOptions::default())?;
    let mut inputs: Vec<TextInput> = DOCUMENTS.iter().map(|&d| d.into()).collect();
    inputs.push(query.clone().into());
    let Output::Pooled(vectors) = extractor.run(&inputs, &RunOptions::default())? else {
        bail!("the model folder does not declare pooling; pass pooling: Some(Pooling::Mean)");
    };
    let (docs, q) = vectors.split_at(DOCUMENTS.len());
    let mut ranked: Vec<(f32, &str)> = docs
        .iter()
        .zip(DOCUMENTS)
        .map(|(d, &text)| (d.iter().zip(&q[0]).map(|(a, b)| a * b).sum(), text))
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("query: {query}  (device: {})", extractor.device());
    for (score, text) in ranked {
        println!("{score:6.3}  {text}");
    }
    Ok(())
}
