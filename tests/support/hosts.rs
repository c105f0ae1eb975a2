//! The ways a test can run a pipeline. Each check in [`crate::checks`] is written once against
//! [`Host`] and runs on every host: natively now; through the wasm artifact and over HTTP as
//! those hosts land.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use amphi_core::{Device, LoadOptions, Pipeline, Precision, Request, SessionStep, Started, Task};
use anyhow::Result;
use serde_json::Value;

/// Something that runs `{"inputs": ..., "parameters": ...}` requests and returns pipeline JSON.
pub trait Host {
    /// A name for failure messages.
    fn name(&self) -> String;
    /// Runs one request for `task` on the model folder `model`, with binary attachments (the
    /// images that `{"blob": i}` inputs refer to).
    fn run_with(
        &self,
        task: Task,
        model: &Path,
        request: &Value,
        attachments: &[Vec<u8>],
    ) -> Result<Value>;
    /// Runs one request without attachments.
    fn run(&self, task: Task, model: &Path, request: &Value) -> Result<Value> {
        self.run_with(task, model, request, &[])
    }
    /// Runs a request with `"stream": true`: the chunks in the order the host delivered them,
    /// and the code of the error that ended the stream, if one did.
    fn stream(&self, task: Task, model: &Path, request: &Value) -> Result<Streamed>;
}

/// What a streamed request delivered ([`Host::stream`]).
#[derive(Debug, Clone, Default)]
pub struct Streamed {
    /// `{"index", "output"}` per input, as they arrived.
    pub chunks: Vec<Value>,
    /// The error code that ended the stream early.
    pub error: Option<String>,
}

/// `request` with `"stream": true`.
pub fn streaming(request: &Value) -> Value {
    let mut r = request.clone();
    r["stream"] = true.into();
    r
}

/// The engine linked in-process, with pipelines cached per (task, model).
#[derive(Debug)]
pub struct Native {
    device: Device,
    precision: Precision,
    cache: Mutex<HashMap<(Task, PathBuf), std::sync::Arc<Pipeline>>>,
}

impl Native {
    pub fn new(device: Device) -> Self {
        Self::with_precision(device, Precision::F32)
    }

    /// Loads models with `precision` (see [`amphi_core::Precision`]); fails a run if a model
    /// loads in another precision than asked.
    pub fn with_precision(device: Device, precision: Precision) -> Self {
        Self {
            device,
            precision,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn pipeline(&self, task: Task, model: &Path) -> Result<std::sync::Arc<Pipeline>> {
        let key = (task, model.to_path_buf());
        if let Some(p) = self.cache.lock().expect("cache lock").get(&key) {
            return Ok(p.clone());
        }
        let options = LoadOptions {
            device: self.device,
            gpu: (self.device == Device::Gpu).then(crate::gpu).transpose()?,
            precision: self.precision,
            ..LoadOptions::default()
        };
        let pipeline =
            std::sync::Arc::new(Pipeline::load(task, crate::model_files(model)?, &options)?);
        anyhow::ensure!(
            pipeline.model().precision() == self.precision,
            "asked for {} weights, got {}",
            self.precision,
            pipeline.model().precision()
        );
        self.cache
            .lock()
            .expect("cache lock")
            .insert(key, pipeline.clone());
        Ok(pipeline)
    }
}

impl Host for Native {
    fn name(&self) -> String {
        format!("native/{}/{}", self.device, self.precision)
    }

    fn run_with(
        &self,
        task: Task,
        model: &Path,
        request: &Value,
        attachments: &[Vec<u8>],
    ) -> Result<Value> {
        let pipeline = self.pipeline(task, model)?;
        if task != Task::ImageClassification && task != Task::TextGeneration {
            // The typed path Rust callers use.
            let request: Request = serde_json::from_value(request.clone())?;
            return Ok(serde_json::to_value(pipeline.run_request(&request)?)?);
        }
        match pipeline.start_json(&serde_json::to_vec(request)?, attachments.to_vec())? {
            Started::Done(response) => Ok(serde_json::to_value(response)?),
            Started::Pending(_) => anyhow::bail!("a native readback was left pending"),
        }
    }

    fn stream(&self, task: Task, model: &Path, request: &Value) -> Result<Streamed> {
        let pipeline = self.pipeline(task, model)?;
        let mut out = Streamed::default();
        let mut session = match pipeline.open(&serde_json::to_vec(&streaming(request))?, vec![]) {
            Ok(s) => s,
            Err(e) => {
                out.error = Some(e.code().to_owned());
                return Ok(out);
            }
        };
        loop {
            match session.step() {
                Ok(SessionStep::Chunk(c)) => out.chunks.push(serde_json::to_value(c)?),
                Ok(SessionStep::Done(_)) => return Ok(out),
                Ok(_) => anyhow::bail!("a native step was left pending"),
                Err(e) => {
                    out.error = Some(e.code().to_owned());
                    return Ok(out);
                }
            }
        }
    }
}
