//! The artifact under wasmtime: its imports, its ABI, reference parity through it, and traps
//! that never take the host down.
#![allow(clippy::print_stderr)] // reports the measured compile and load times

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use amphi_core::Task;
use amphi_serve::{
    Artifact, Deadlines, Guest, GuestError, GuestLimits, Runtime, StreamEnd, load_model_dir,
};
use amphi_tests::hosts::{Host, Streamed, streaming};
use amphi_tests::{artifact_path, checks, efficientnet_dir, fixture_model, minilm_dir};
use anyhow::{Context, Result, ensure};

/// A runtime sharing one precompiled-module cache across the tests of this run.
fn runtime(limits: GuestLimits) -> Result<Runtime> {
    let cache = std::env::temp_dir().join(format!("amphi-test-cwasm-{}", std::process::id()));
    Ok(Runtime::new(
        Artifact::read(&artifact_path())?,
        Some(&cache),
        limits,
    )?)
}

/// The engine inside amphi.wasm: one instance per model folder, on `device`.
struct Wasm {
    runtime: Runtime,
    device: &'static str,
    precision: &'static str,
    guests: Mutex<HashMap<PathBuf, (Guest, i32)>>,
}

impl Host for Wasm {
    fn name(&self) -> String {
        format!("wasm/{}/{}", self.device, self.precision)
    }

    fn run_with(
        &self,
        task: Task,
        model: &Path,
        request: &serde_json::Value,
        attachments: &[Vec<u8>],
    ) -> Result<serde_json::Value> {
        let mut guests = self.guests.lock().expect("lock");
        let (guest, handle) = self.guest(&mut guests, model)?;
        let attachments: Vec<&[u8]> = attachments.iter().map(Vec::as_slice).collect();
        let (json, _) = guest.run_with(
            *handle,
            task.as_str(),
            &serde_json::to_vec(request)?,
            &attachments,
        )?;
        Ok(serde_json::from_slice(&json)?)
    }

    fn stream(&self, task: Task, model: &Path, request: &serde_json::Value) -> Result<Streamed> {
        let mut guests = self.guests.lock().expect("lock");
        let (guest, handle) = self.guest(&mut guests, model)?;
        let mut out = Streamed::default();
        let body = serde_json::to_vec(&streaming(request))?;
        let mut chunks = Vec::new();
        let end = guest.stream(*handle, task.as_str(), &body, |json, _| {
            chunks.push(json);
            true
        });
        for json in chunks {
            out.chunks.push(serde_json::from_slice(&json)?);
        }
        match end {
            Ok(StreamEnd::Done) => {}
            Ok(StreamEnd::Cancelled) => anyhow::bail!("nothing cancelled this stream"),
            Err(e) if !e.is_fatal() => out.error = Some(e.code().to_owned()),
            Err(e) => return Err(e.into()),
        }
        Ok(out)
    }
}

impl Wasm {
    /// The instance holding `model`, loaded on first use.
    fn guest<'a>(
        &self,
        guests: &'a mut HashMap<PathBuf, (Guest, i32)>,
        model: &Path,
    ) -> Result<&'a mut (Guest, i32)> {
        if !guests.contains_key(model) {
            let mut guest = self.runtime.instantiate()?;
            let options = serde_json::json!({"device": self.device, "precision": self.precision});
            let spec = load_model_dir("m", model, options)?;
            let handle = guest.load_model(&spec.files, &spec.options)?;
            let info = guest.model_info(handle)?;
            ensure!(
                info["device"] == self.device && info["precision"] == self.precision,
                "asked for {}/{}, got {info}",
                self.device,
                self.precision
            );
            guests.insert(model.to_path_buf(), (guest, handle));
        }
        guests.get_mut(model).context("guest")
    }
}

fn wasm() -> Result<Wasm> {
    Ok(Wasm {
        runtime: runtime(GuestLimits::default())?,
        device: "cpu",
        precision: "f32",
        guests: Mutex::new(HashMap::new()),
    })
}

/// The artifact's `amphi_gpu` imports served with the machine's GPU (lavapipe in CI).
fn wasm_gpu() -> Result<Wasm> {
    wasm_gpu_with("f32")
}

fn wasm_gpu_with(precision: &'static str) -> Result<Wasm> {
    Ok(Wasm {
        runtime: runtime(GuestLimits::default())?.with_gpu(Some(amphi_tests::gpu()?)),
        device: "gpu",
        precision,
        guests: Mutex::new(HashMap::new()),
    })
}

#[test]
fn imports_only_amphi_host_and_amphi_gpu() -> Result<()> {
    let bytes = std::fs::read(artifact_path())?;
    let engine = wasmtime::Engine::default();
    let module = wasmtime::Module::new(&engine, &bytes)?;
    let imports: Vec<String> = module
        .imports()
        .map(|i| format!("{}.{}", i.module(), i.name()))
        .collect();
    let foreign: Vec<&String> = imports
        .iter()
        .filter(|i| !i.starts_with("amphi_host.") && !i.starts_with("amphi_gpu."))
        .collect();
    ensure!(
        foreign.is_empty(),
        "imports outside amphi_host and amphi_gpu: {foreign:?}"
    );
    let mut sorted = imports.clone();
    sorted.sort();
    ensure!(
        sorted
            == [
                "amphi_gpu.create_buffer",
                "amphi_gpu.create_pipeline",
                "amphi_gpu.destroy_buffer",
                "amphi_gpu.dispatch",
                "amphi_gpu.info",
                "amphi_gpu.last_error",
                "amphi_gpu.read_buffer",
                "amphi_gpu.write_buffer",
                "amphi_host.interrupted",
                "amphi_host.log",
                "amphi_host.random_fill",
            ],
        "imports: {sorted:?}"
    );
    Ok(())
}

#[test]
fn goldens_through_the_artifact() -> Result<()> {
    let host = wasm()?;
    checks::tiny_bert_hidden_states(&host)?;
    checks::tiny_seqcls(&host)?;
    checks::tiny_roberta_seqcls(&host)?;
    checks::tiny_xlmr(&host)?;
    checks::streaming(&host)?;
    checks::tiny_tokcls(&host)?;
    checks::minilm(&host, &minilm_dir())?;
    checks::tiny_vit(&host)?;
    checks::efficientnet(&host, &efficientnet_dir())?;
    Ok(())
}

/// text-generation through the artifact: the decoders' greedy goldens, streamed and whole,
/// chat templates, stop strings, seeded sampling.
#[test]
fn text_generation_through_the_artifact() -> Result<()> {
    amphi_tests::generation::all(&wasm()?)
}

#[test]
fn text_generation_through_the_artifact_on_the_gpu() -> Result<()> {
    amphi_tests::generation::all(&wasm_gpu()?)
}

/// A real LLM read from its GGUF file inside amphi.wasm (SIMD128): Transformers' tokens.
#[test]
fn smollm2_from_gguf_through_the_artifact() -> Result<()> {
    amphi_tests::generation::smollm2(&wasm()?, &amphi_tests::smollm2_dir())
}

/// Extreme aspect ratios inside the default pixel limit (they used to trap the guest with
/// `capacity overflow` or run it out of memory): classified or `input_too_large`, and the same
/// instance keeps serving.
#[test]
fn extreme_images_do_not_trap_the_guest() -> Result<()> {
    checks::hostile_images(&wasm()?, &efficientnet_dir(), 20_000_000)
}

/// The same goldens with the artifact on the GPU: its WGSL kernels through the `amphi_gpu`
/// imports, served by this host with wgpu.
#[test]
fn goldens_through_the_artifact_on_the_gpu() -> Result<()> {
    let host = wasm_gpu()?;
    checks::tiny_bert_hidden_states(&host)?;
    checks::tiny_seqcls(&host)?;
    checks::tiny_roberta_seqcls(&host)?;
    checks::tiny_xlmr(&host)?;
    checks::streaming(&host)?;
    checks::tiny_tokcls(&host)?;
    checks::minilm(&host, &minilm_dir())?;
    checks::tiny_vit(&host)?;
    checks::efficientnet(&host, &efficientnet_dir())?;
    Ok(())
}

/// MiniLM with f16 weights through the artifact: the f16 kernels through the same imports
/// (lavapipe has `shader-f16`; the host fails the check if the model loads in f32).
#[test]
fn minilm_f16_through_the_artifact_on_the_gpu() -> Result<()> {
    checks::minilm_within(
        &wasm_gpu_with("f16")?,
        &minilm_dir(),
        checks::TOL_MINILM_F16,
    )
}

#[test]
fn typed_errors_cross_the_boundary() -> Result<()> {
    let host = wasm()?;
    let tiny = fixture_model("tiny-bert");
    let err = host
        .run(
            Task::FeatureExtraction,
            &tiny,
            &serde_json::json!({"inputs": []}),
        )
        .expect_err("empty batch");
    match err.downcast_ref::<GuestError>() {
        Some(GuestError::Engine { code, .. }) => ensure!(code == "invalid_input", "{code}"),
        other => anyhow::bail!("expected an engine error, got {other:?}"),
    }
    // Bad model files: a typed error naming the file, not a trap.
    let rt = runtime(GuestLimits::default())?;
    let mut guest = rt.instantiate()?;
    let mut spec = load_model_dir("m", &tiny, serde_json::json!({}))?;
    for (name, bytes) in &mut spec.files {
        if name == "model.safetensors" {
            *bytes = b"garbage".to_vec().into();
        }
    }
    match guest.load_model(&spec.files, &spec.options) {
        Err(GuestError::Engine { code, message }) => {
            ensure!(code == "invalid_weights", "{code}");
            ensure!(message.contains("model.safetensors"), "{message}");
        }
        other => anyhow::bail!("expected invalid_weights, got {other:?}"),
    }
    // The same instance still works.
    let spec = load_model_dir("m", &tiny, serde_json::json!({}))?;
    let model = guest.load_model(&spec.files, &spec.options)?;
    guest.run(model, "feature-extraction", br#"{"inputs": "ok"}"#)?;
    Ok(())
}

#[test]
fn a_panic_is_an_error_and_a_fresh_instance_works() -> Result<()> {
    let rt = runtime(GuestLimits::default())?;
    let mut guest = rt.instantiate()?;
    match guest.debug_panic() {
        GuestError::Trap { message } => {
            ensure!(message.contains("amphi_debug_panic called"), "{message}")
        }
        other => anyhow::bail!("expected a trap, got {other:?}"),
    }
    drop(guest);
    let mut fresh = rt.instantiate()?;
    let spec = load_model_dir("m", &fixture_model("tiny-bert"), serde_json::json!({}))?;
    let model = fresh.load_model(&spec.files, &spec.options)?;
    fresh.run(model, "feature-extraction", br#"{"inputs": "still fine"}"#)?;
    Ok(())
}

/// Preemptive deadlines stop a guest that never reaches a check between ops. Also for a guest
/// whose runtime is gone: the epoch must keep ticking while a guest lives.
#[test]
fn a_preemptive_deadline_interrupts_a_runaway_guest() -> Result<()> {
    let rt = runtime(GuestLimits {
        deadline: Duration::from_millis(200),
        deadlines: Deadlines::Preemptive,
        ..GuestLimits::default()
    })?;
    let mut guest = rt.instantiate()?;
    drop(rt);
    let started = Instant::now();
    let err = guest.debug_spin();
    ensure!(
        matches!(err, GuestError::Deadline { trapped: true }) && err.is_fatal(),
        "{err:?}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn memory_limit_is_enforced() -> Result<()> {
    // 64 MiB cannot hold all-MiniLM-L6-v2 (90 MB of weights): loading fails, the host survives.
    let rt = runtime(GuestLimits {
        memory_bytes: 64 << 20,
        ..GuestLimits::default()
    })?;
    let mut guest = rt.instantiate()?;
    let spec = load_model_dir("m", &minilm_dir(), serde_json::json!({}))?;
    let err = guest
        .load_model(&spec.files, &spec.options)
        .expect_err("too big");
    ensure!(err.is_fatal(), "{err:?}");
    Ok(())
}

#[test]
fn precompiled_module_is_cached_and_reused() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("amphi-cwasm-{}", std::process::id()));
    let artifact = Artifact::read(&artifact_path())?;
    let first = Runtime::new(artifact.clone(), Some(&dir), GuestLimits::default())?;
    ensure!(!first.timing().from_cache);
    let second = Runtime::new(artifact, Some(&dir), GuestLimits::default())?;
    ensure!(
        second.timing().from_cache,
        "second start should load the .cwasm"
    );
    eprintln!(
        "compile {:?}, precompiled load {:?}",
        first.timing().elapsed,
        second.timing().elapsed
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The default deadlines (checked between ops) stop a long request soon after its deadline,
/// through the engine's error path: the instance and its model then serve the next request.
#[test]
fn a_request_past_its_deadline_stops_between_ops_and_the_instance_keeps_serving() -> Result<()> {
    let deadline = Duration::from_millis(100);
    let rt = runtime(GuestLimits {
        deadline,
        ..GuestLimits::default()
    })?;
    ensure!(rt.limits().deadlines == Deadlines::BetweenOps);
    let mut guest = rt.instantiate()?;
    let spec = load_model_dir("m", &minilm_dir(), serde_json::json!({}))?;
    let model = guest.load_model(&spec.files, &spec.options)?;
    let small = br#"{"inputs": "a short sentence"}"#;
    let (want, _) = guest.run(model, "feature-extraction", small)?;

    // 32 inputs of about 128 tokens: seconds of work under wasmtime.
    let long = "the quick brown fox jumps over the lazy dog and runs away ".repeat(11);
    let big = serde_json::to_vec(&serde_json::json!({ "inputs": vec![long; 32] }))?;
    let started = Instant::now();
    let err = guest
        .run(model, "feature-extraction", &big)
        .expect_err("past its deadline");
    let took = started.elapsed();
    ensure!(
        matches!(err, GuestError::Deadline { trapped: false }) && !err.is_fatal(),
        "{err:?}"
    );
    ensure!(err.code() == "deadline_exceeded");
    // At most one op past the deadline (the largest here is a 4096×1536×384 multiply).
    ensure!(took < deadline + Duration::from_secs(2), "took {took:?}");
    eprintln!("stopped after {took:?} (deadline {deadline:?})");

    let (again, _) = guest.run(model, "feature-extraction", small)?;
    ensure!(again == want, "the same request gives the same embedding");
    Ok(())
}

/// With preemptive deadlines the module is compiled with epoch interruption checks in every
/// loop; the goldens still hold and the kernel probes run.
#[test]
fn goldens_with_preemptive_deadlines() -> Result<()> {
    let host = Wasm {
        runtime: runtime(GuestLimits {
            deadlines: Deadlines::Preemptive,
            ..GuestLimits::default()
        })?,
        device: "cpu",
        precision: "f32",
        guests: Mutex::new(HashMap::new()),
    };
    checks::tiny_bert_hidden_states(&host)?;
    checks::minilm(&host, &minilm_dir())?;
    let mut guest = host.runtime.instantiate()?;
    let peak = guest
        .probe_peak(1000)?
        .context("amphi.wasm exports the probes")?;
    let matmul = guest
        .probe_matmul((8, 16, 32), 10)?
        .context("amphi.wasm exports the probes")?;
    ensure!(peak > 0.0 && matmul > 0.0, "peak {peak}, matmul {matmul}");
    Ok(())
}

/// A session the host cancels after its first chunk is freed: 30 cancelled streams of 32 inputs
/// leave the guest's memory where the first few left it, and the instance serves the next
/// request.
#[test]
fn cancelled_sessions_are_freed() -> Result<()> {
    let runtime = runtime(GuestLimits::default())?;
    let mut guest = runtime.instantiate()?;
    let spec = load_model_dir("m", &fixture_model("tiny-xlmr"), serde_json::json!({}))?;
    let model = guest.load_model(&spec.files, &spec.options)?;
    let texts: Vec<String> = (0..32)
        .map(|i| format!("sentence number {i} of many"))
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({"inputs": texts, "stream": true}))?;
    let cancel = |guest: &mut Guest| -> Result<()> {
        let mut seen = 0;
        let end = guest.stream(model, "feature-extraction", &body, |_, _| {
            seen += 1;
            false
        })?;
        ensure!(
            end == StreamEnd::Cancelled && seen == 1,
            "{end:?} after {seen}"
        );
        Ok(())
    };
    for _ in 0..3 {
        cancel(&mut guest)?;
    }
    let warm = guest.memory_bytes();
    for _ in 0..30 {
        cancel(&mut guest)?;
    }
    ensure!(
        guest.memory_bytes() == warm,
        "memory grew from {warm} to {} bytes",
        guest.memory_bytes()
    );
    let (json, _) = guest.run(model, "feature-extraction", br#"{"inputs": "hello world"}"#)?;
    ensure!(serde_json::from_slice::<serde_json::Value>(&json)?[0].is_array());
    Ok(())
}

/// A streamed session's deadlines: each step (here, an input) has the request deadline and the
/// whole stream its own. A stream that runs past the request deadline in all, in steps well
/// within it, ends whole; with a short stream deadline it ends `deadline_exceeded` after the
/// chunks it had computed, and the instance serves the next request.
#[test]
fn streams_have_a_deadline_per_step_and_in_all() -> Result<()> {
    let step = Duration::from_millis(1000);
    let texts: Vec<String> = (0..40)
        .map(|i| {
            format!(
                "{i}: {}",
                "a sentence that takes some time to embed, ".repeat(12)
            )
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({"inputs": texts, "stream": true}))?;
    struct Run {
        end: Result<StreamEnd, GuestError>,
        seen: usize,
        took: Duration,
        guest: Guest,
        model: i32,
    }
    let run = |stream_deadline: Duration| -> Result<Run> {
        let rt = runtime(GuestLimits {
            deadline: step,
            stream_deadline,
            ..GuestLimits::default()
        })?;
        let mut guest = rt.instantiate()?;
        let spec = load_model_dir("m", &minilm_dir(), serde_json::json!({}))?;
        let model = guest.load_model(&spec.files, &spec.options)?;
        let mut seen = 0;
        let started = Instant::now();
        let end = guest.stream(model, "feature-extraction", &body, |_, _| {
            seen += 1;
            true
        });
        let took = started.elapsed();
        Ok(Run {
            end,
            seen,
            took,
            guest,
            model,
        })
    };
    let Run {
        end, seen, took, ..
    } = run(Duration::from_secs(600))?;
    ensure!(
        matches!(end, Ok(StreamEnd::Done)) && seen == texts.len(),
        "{end:?} after {seen} chunks"
    );
    eprintln!("{} inputs streamed in {took:?}", texts.len());
    ensure!(
        took > step,
        "the stream took {took:?}: too fast to show a per-step deadline (add inputs)"
    );
    let Run {
        end,
        seen,
        took,
        mut guest,
        model,
    } = run(step / 3)?;
    ensure!(
        matches!(&end, Err(e) if e.code() == "deadline_exceeded" && !e.is_fatal())
            && (1..texts.len()).contains(&seen),
        "{end:?} after {seen} chunks in {took:?}"
    );
    let (json, _) = guest.run(model, "feature-extraction", br#"{"inputs": "hello world"}"#)?;
    ensure!(serde_json::from_slice::<serde_json::Value>(&json)?[0].is_array());
    Ok(())
}
