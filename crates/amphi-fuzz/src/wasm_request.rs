//! Request JSON through `amphi.wasm` under wasmtime, as `amphi serve` runs it: one guest with a
//! tiny text classifier, a tiny token classifier and a tiny ViT loaded from the fixtures.
//!
//! Byte 0 picks the task name (the four tasks, aliases, an unknown one) and the model handle
//! (one of the three, or one that does not exist); byte 1 how many binary attachments follow
//! (each a length-prefixed chunk, referred to as `{"blob": i}`); the rest is the request JSON.
//!
//! The invariant is "no input makes the guest trap": a typed engine error is fine, a trap
//! ([`amphi_serve::GuestError::is_fatal`]) is a crash. The trapped guest is dropped before the
//! panic, so that the next input (in the replay test, which catches panics) gets a fresh one.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use amphi_serve::pool::ModelSpec;
use amphi_serve::{Artifact, Guest, GuestLimits, Runtime, load_model_dir};

use crate::common::{Input, artifact, fixture_model, lock, module_cache};

/// Task names: the four tasks, their aliases, and ones the guest must refuse.
const TASKS: [&str; 8] = [
    "feature-extraction",
    "text-classification",
    "token-classification",
    "image-classification",
    "ner",
    "sentiment-analysis",
    "embeddings",
    "summarization",
];

/// The models each guest loads: (name, fixture).
const MODELS: [(&str, &str); 3] = [
    ("seqcls", "tiny-bert-seqcls"),
    ("tokcls", "tiny-bert-tokcls"),
    ("vit", "tiny-vit"),
];

/// Per-call limits: production's memory (2 GiB), a shorter deadline.
fn limits() -> GuestLimits {
    GuestLimits {
        deadline: Duration::from_secs(10),
        load_deadline: Duration::from_secs(60),
        ..GuestLimits::default()
    }
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        let path = artifact();
        let built =
            Artifact::read(&path).and_then(|a| Runtime::new(a, Some(&module_cache()), limits()));
        match built {
            Ok(r) => r,
            // Set-up, not an input: the target cannot run without its runtime.
            Err(e) => panic!("{}: {e}", path.display()),
        }
    })
}

fn specs() -> &'static [ModelSpec] {
    static SPECS: OnceLock<Vec<ModelSpec>> = OnceLock::new();
    SPECS.get_or_init(|| {
        MODELS
            .iter()
            .map(|(name, dir)| {
                match load_model_dir(
                    name,
                    &fixture_model(dir),
                    serde_json::json!({"device": "cpu"}),
                ) {
                    Ok(spec) => spec,
                    // Set-up: without the fixtures the target cannot run.
                    Err(e) => panic!("{e} (the fixtures: ../shared/fixtures or $AMPHI_FIXTURES)"),
                }
            })
            .collect()
    })
}

/// A guest with the models loaded, and their handles.
struct Loaded {
    guest: Guest,
    models: Vec<i32>,
}

fn fresh() -> Loaded {
    let mut guest = match runtime().instantiate() {
        Ok(g) => g,
        Err(e) => panic!("instantiating amphi.wasm: {e}"),
    };
    let models = specs()
        .iter()
        .map(|spec| match guest.load_model(&spec.files, &spec.options) {
            Ok(m) => m,
            Err(e) => panic!("loading the fixture {}: {e}", spec.name),
        })
        .collect();
    Loaded { guest, models }
}

static GUEST: Mutex<Option<Loaded>> = Mutex::new(None);

/// The target.
pub fn wasm_request(data: &[u8]) {
    let mut input = Input(data);
    let first = input.u8();
    let task = TASKS[usize::from(first) % TASKS.len()];
    let which = usize::from(first) / TASKS.len() % (MODELS.len() + 1);
    let attachments: Vec<&[u8]> = (0..input.u8() % 4).map(|_| input.chunk()).collect();
    let request = input.rest();

    let mut slot = lock(&GUEST);
    let loaded = slot.get_or_insert_with(fresh);
    // A handle the guest never gave out.
    let model = loaded.models.get(which).copied().unwrap_or(12_345);
    match loaded.guest.run_with(model, task, request, &attachments) {
        Ok((json, _tokens)) => {
            if let Err(e) = serde_json::from_slice::<serde_json::Value>(&json) {
                panic!("the guest answered {task} with invalid JSON ({e}): {json:?}");
            }
        }
        Err(e) if e.is_fatal() => {
            // The instance is unusable: drop it so that the next input starts afresh.
            *slot = None;
            drop(slot);
            panic!("the guest trapped on a {task} request (a crash: no input may trap): {e}");
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixtures_run() {
        wasm_request(b"\x00\x00{\"inputs\": \"hello\"}");
        wasm_request(b"\x01\x00{\"inputs\": [\"a\", \"b\"], \"parameters\": {\"top_k\": null}}");
        wasm_request(b"\x1b\x01\x03abc{\"inputs\": {\"blob\": 0}}");
        wasm_request(b"\x07\x00{}");
    }
}
