//! The fixtures' Llama, Qwen2, Qwen3 and Gemma 3 goldens (PyTorch, float32, eager attention),
//! one test body run on the CPU and on the GPU (Mesa lavapipe in CI): the prompt's last
//! logits from one forward pass, then greedy decoding one token at a time over the KV cache
//! (the first five steps' logits, and all twenty greedy ids), and a left-padded batch.
//! Tolerances are the goldens' `suggested_tolerance` (absolute, on logits).

use std::sync::Arc;

use super::{Decoder, Resolved};
use crate::backend::Backend;
use crate::backend::cpu::Cpu;
use crate::backend::gpu::Gpu;
use crate::device::Precision;
use crate::models::ModelConfig;
use crate::test_support::{fixtures, json, numbers};
use crate::weights::Weights;

fn argmax(x: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in x.iter().enumerate() {
        if v > x[best] {
            best = i;
        }
    }
    best as u32
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|i| i.as_u64().expect("id") as u32)
        .collect()
}

fn close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let worst = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0.0, f64::max);
    assert!(worst <= tol, "{what}: max |Δ| {worst:e} > {tol:e}");
}

fn load<B: Backend>(be: &B, model: &str, weights: &str) -> Decoder<B> {
    let dir = fixtures().join("models").join(model);
    let cfg = ModelConfig::parse(&std::fs::read(dir.join("config.json")).expect("config"))
        .expect("config.json");
    let model_type = cfg.model_type.clone().expect("model_type");
    let resolved = Resolved::new(&cfg, &model_type).expect("resolved");
    let bytes = std::fs::read(dir.join(weights)).expect("weights");
    Decoder::load(be, &Weights::parse(&bytes).expect("safetensors"), &resolved).expect("load")
}

/// Every prompt: the last logits, five cached steps' logits, twenty greedy ids.
fn prompts<B: Backend>(
    be: &B,
    model: &str,
    golden: &serde_json::Value,
    dec: &Decoder<B>,
    scale: f64,
) {
    let tol = |k: &str| {
        golden["suggested_tolerance"][k]["abs"]
            .as_f64()
            .expect("tolerance")
            * scale
    };
    for p in golden["prompts"].as_array().expect("prompts") {
        let prompt = ids(&p["input_ids"]);
        let new = ids(&p["greedy_new_ids"]);
        let steps = numbers(&p["step_logits"]);
        let vocab = dec.config().cfg.vocab_size;
        let mut state = dec.start(be, 1, prompt.len() + new.len()).expect("state");
        let logits = dec
            .forward(be, &mut state, &prompt, &vec![1; prompt.len()])
            .expect("prefill");
        let mut logits = be.read(&logits).expect("read");
        let what = format!("{model} {:?}", p["prompt"].as_str());
        close(
            &format!("{what} last logits"),
            &logits,
            &numbers(&p["last_logits"]),
            tol("last_logits"),
        );
        let mut got = Vec::new();
        for (step, &want) in new.iter().enumerate() {
            if step < steps.len() / vocab {
                close(
                    &format!("{what} step {step}"),
                    &logits,
                    &steps[step * vocab..][..vocab],
                    tol("step_logits"),
                );
            }
            let next = argmax(&logits);
            got.push(next);
            assert_eq!(next, want, "{what}: greedy id {step}");
            if step + 1 < new.len() {
                logits = be
                    .read(&dec.forward(be, &mut state, &[next], &[1]).expect("step"))
                    .expect("read");
            }
        }
        assert_eq!(
            state.len(),
            prompt.len() + new.len() - 1,
            "{what}: cached positions"
        );
    }
}

/// The left-padded batch: every sequence's last logits and greedy ids.
fn batch<B: Backend>(be: &B, model: &str, golden: &serde_json::Value, dec: &Decoder<B>) {
    let g = &golden["batch_left_padded"];
    let rows: Vec<Vec<u32>> = g["input_ids"]
        .as_array()
        .expect("rows")
        .iter()
        .map(ids)
        .collect();
    let masks: Vec<Vec<u32>> = g["attention_mask"]
        .as_array()
        .expect("masks")
        .iter()
        .map(ids)
        .collect();
    let want_new: Vec<Vec<u32>> = g["greedy_new_ids"]
        .as_array()
        .expect("new")
        .iter()
        .map(ids)
        .collect();
    let want_last: Vec<f64> = numbers(&g["last_logits"]);
    let (b, vocab) = (rows.len(), dec.config().cfg.vocab_size);
    let steps = want_new[0].len();
    let mut state = dec.start(be, b, rows[0].len() + steps).expect("state");
    let mut logits = be
        .read(
            &dec.forward(be, &mut state, &rows.concat(), &masks.concat())
                .expect("prefill"),
        )
        .expect("read");
    let tol = golden["suggested_tolerance"]["last_logits"]["abs"]
        .as_f64()
        .expect("tol");
    close(
        &format!("{model} padded batch last logits"),
        &logits,
        &want_last,
        tol,
    );
    for step in 0..steps {
        let next: Vec<u32> = logits.chunks_exact(vocab).map(argmax).collect();
        for (s, want) in want_new.iter().enumerate() {
            assert_eq!(
                next[s], want[step],
                "{model} padded batch: sequence {s} id {step}"
            );
        }
        if step + 1 < steps {
            logits = be
                .read(
                    &dec.forward(be, &mut state, &next, &vec![1; b])
                        .expect("step"),
                )
                .expect("read");
        }
    }
}

fn golden_body<B: Backend>(be: &B, model: &str) {
    let golden = json(&format!("golden/{model}.json"));
    let dec = load(be, model, "model.safetensors");
    prompts(be, model, &golden, &dec, 1.0);
    batch(be, model, &golden, &dec);
    // Llama's f16 weights (upcast at load): the golden's f16 cases.
    if let Some(cases) = golden["f16_weights"]["cases"].as_array() {
        let dec = load(
            be,
            model,
            golden["f16_weights"]["file"].as_str().expect("file"),
        );
        for c in cases {
            let prompt: Vec<u32> = golden["prompts"]
                .as_array()
                .expect("prompts")
                .iter()
                .find(|p| p["prompt"] == c["prompt"])
                .map(|p| ids(&p["input_ids"]))
                .expect("the f16 case's prompt");
            let mut state = dec.start(be, 1, prompt.len()).expect("state");
            let logits = dec
                .forward(be, &mut state, &prompt, &vec![1; prompt.len()])
                .expect("f16");
            let tol = golden["suggested_tolerance"]["last_logits"]["abs"]
                .as_f64()
                .expect("tol");
            close(
                &format!("{model} f16 weights"),
                &be.read(&logits).expect("read"),
                &numbers(&c["last_logits"]),
                tol,
            );
        }
    }
}

fn gpu() -> Gpu {
    let host = amphi_gpu::WgpuHost::new().unwrap_or_else(|e| {
        panic!("decoder GPU tests need a GPU adapter (Mesa lavapipe in CI): {e}")
    });
    Gpu::new(Arc::new(host), Precision::F32).expect("kernels")
}

macro_rules! golden_tests {
    ($($name:ident: $model:literal,)*) => {
        mod cpu {
            $(#[test] fn $name() { super::golden_body(&super::Cpu, $model); })*
        }
        mod gpu {
            $(#[test] fn $name() { super::golden_body(&super::gpu(), $model); })*
        }
    };
}

golden_tests! {
    llama: "tiny-llama",
    qwen2: "tiny-qwen2",
    qwen3: "tiny-qwen3",
    gemma3: "tiny-gemma3",
}
