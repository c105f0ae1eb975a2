//! all-MiniLM-L6-v2 embeddings on the GPU and on the CPU of the same machine, at batch 1 and 32
//! with sequences of exactly 128 tokens, printed as a Markdown table. One short run:
//!
//! ```sh
//! cargo run --release -p amphi-examples --example gpu-bench -- ~/.cache/amphi/models/all-MiniLM-L6-v2 [BATCH ...]
//! ```
//!
//! Where the adapter has `shader-f16`, a second GPU column times the same model with f16
//! weights (checked against the CPU at cosine ≥ 0.999).
//!
//! (On Mesa lavapipe, a CPU emulating a GPU, batch 32 takes minutes a run: pass `1` there.)
//!
//! The GPU is the first adapter wgpu finds (`WGPU_ADAPTER_NAME` / `WGPU_BACKEND` choose); the CPU
//! path is candle's (all cores). Each row: 3 warm-up runs, then the median and the spread
//! (min–max) of 10 timed runs, and the GPU's speed-up. Outputs are checked to agree (cosine ≥
//! 0.9999) before anything is timed.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::sync::Arc;
use std::time::Instant;

use amphi_core::gpu::GpuHost as _;
use amphi_core::{
    Device, LoadOptions, ModelFiles, Pipeline, Precision, RunOptions, Task, TextInput,
};
use anyhow::{Context, Result, ensure};

const SEQ: usize = 128;
const WARMUP: usize = 3;
const RUNS: usize = 10;

fn load(
    dir: &str,
    device: Device,
    gpu: Option<Arc<dyn amphi_core::gpu::GpuHost>>,
    precision: Precision,
) -> Result<Pipeline> {
    let options = LoadOptions {
        device,
        max_length: Some(SEQ),
        gpu,
        precision,
        ..LoadOptions::default()
    };
    Ok(Pipeline::load(
        Task::FeatureExtraction,
        ModelFiles::from_dir(dir)?,
        &options,
    )?)
}

/// `n` different texts long enough to be truncated at exactly [`SEQ`] tokens.
fn inputs(n: usize) -> Vec<TextInput> {
    (0..n)
        .map(|i| {
            let words: Vec<String> = (0..200)
                .map(|w| format!("word{} sample{}", (w * 7 + i) % 97, w % 13))
                .collect();
            TextInput::from(words.join(" "))
        })
        .collect()
}

/// Median, min and max in milliseconds of `runs` calls of `f`, after `warmup` untimed ones.
fn timings(
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<(f64, f64, f64)> {
    for _ in 0..warmup {
        f()?;
    }
    let mut ms = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    Ok((ms[runs / 2], ms[0], ms[runs - 1]))
}

/// Median and (min, max) of the pipeline's timed runs on `batch`, in milliseconds.
fn time(p: &Pipeline, batch: &[TextInput]) -> Result<(f64, f64, f64)> {
    let options = RunOptions::default();
    timings(WARMUP, RUNS, || {
        p.run(batch, &options)?;
        Ok(())
    })
}

fn embeddings(p: &Pipeline, batch: &[TextInput]) -> Result<Vec<Vec<f32>>> {
    match p.run(batch, &RunOptions::default())? {
        amphi_core::Output::Pooled(v) => Ok(v),
        other => anyhow::bail!("unexpected output {other:?}"),
    }
}

/// Median milliseconds of `f` over 20 runs (after 3 warm-ups).
fn median_ms(f: impl FnMut() -> Result<()>) -> Result<f64> {
    Ok(timings(3, 20, f)?.0)
}

/// Where a forward pass's fixed cost goes: tokenizing, one write + read round trip through the
/// GPU interface, and dispatches of an empty kernel (1 and 100 before one read).
fn probe(dir: &str, host: &Arc<dyn amphi_core::gpu::GpuHost>, gpu: &Pipeline) -> Result<()> {
    let tokenizer = amphi_core::tokenization::Tokenizer::from_bytes(&std::fs::read(
        std::path::Path::new(dir).join("tokenizer.json"),
    )?)?;
    let texts = inputs(32);
    let tok1 = median_ms(|| {
        tokenizer.encode(&texts[0], SEQ)?;
        Ok(())
    })?;
    let tok32 = median_ms(|| {
        for t in &texts {
            tokenizer.encode(t, SEQ)?;
        }
        Ok(())
    })?;
    let buffer = host.create_buffer(1024)?;
    let roundtrip = median_ms(|| {
        host.write_buffer(buffer, 0, &[1u8; 16])?;
        host.read_buffer(buffer, 0, 16)?;
        Ok(())
    })?;
    let kernel = host.create_pipeline(
        "struct P { n: u32 }\n@group(0) @binding(0) var<uniform> p: P;\n\
         @group(0) @binding(1) var<storage, read_write> b: array<u32>;\n\
         @compute @workgroup_size(64) fn noop(@builtin(global_invocation_id) g: vec3<u32>) {\n\
         if (g.x < p.n) { b[g.x] = b[g.x] + 1u; } }\n",
        "noop",
    )?;
    let dispatches = |n: usize| {
        median_ms(|| {
            for _ in 0..n {
                host.dispatch(kernel, &1u32.to_le_bytes(), &[buffer], [1, 1, 1])?;
            }
            host.read_buffer(buffer, 0, 16)?;
            Ok(())
        })
    };
    let (one, hundred) = (dispatches(1)?, dispatches(100)?);
    host.destroy_buffer(buffer);
    let one_text = &texts[..1];
    let by_length: Vec<String> = [8, 32, 128]
        .iter()
        .map(|&n| {
            let options = RunOptions {
                max_length: Some(n),
                ..RunOptions::default()
            };
            median_ms(|| {
                gpu.run(one_text, &options)?;
                Ok(())
            })
            .map(|ms| format!("{n} tokens {ms:.2}"))
        })
        .collect::<Result<_>>()?;
    println!(
        "GPU f32 forward of 1 text (median ms): {}",
        by_length.join(", ")
    );
    println!(
        "Fixed costs (median ms): tokenize 1 text {tok1:.2}, 32 texts {tok32:.2}; GPU write+read \
         round trip {roundtrip:.2}; 1 empty dispatch + read {one:.2}; 100 + read {hundred:.2}\n"
    );
    Ok(())
}

/// Cosine of each pair of (normalised) embeddings at least `min`.
fn agree(cpu: &[Vec<f32>], gpu: &[Vec<f32>], min: f32, what: &str) -> Result<()> {
    for (x, y) in cpu.iter().zip(gpu) {
        let cos: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
        ensure!(
            cos >= min,
            "GPU ({what}) and CPU embeddings differ (cosine {cos})"
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .context("usage: gpu-bench <all-MiniLM-L6-v2 folder>")?;
    let host = amphi_gpu::WgpuHost::new()?;
    let adapter = format!("{} ({})", host.info().name, host.info().backend);
    let host: Arc<dyn amphi_core::gpu::GpuHost> = Arc::new(host);
    let cpu = load(&dir, Device::Cpu, None, Precision::F32)?;
    let gpu = load(&dir, Device::Gpu, Some(host.clone()), Precision::F32)?;
    let f16 = load(&dir, Device::Gpu, Some(host.clone()), Precision::F16)?;
    let f16 = (f16.model().precision() == Precision::F16).then_some(f16);
    probe(&dir, &host, &gpu)?;

    println!(
        "GPU: {adapter}; CPU: candle, {} threads\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let f16_head = if f16.is_some() {
        " GPU f16 ms | f16 speed-up |"
    } else {
        ""
    };
    let f16_rule = if f16.is_some() { "---|---|" } else { "" };
    println!(
        "| batch × seq | CPU ms (median, min–max) | GPU ms (median, min–max) | GPU speed-up |{f16_head}"
    );
    println!("|---|---|---|---|{f16_rule}");
    // Batch sizes: the arguments after the folder, default 1 and 32.
    let batches: Vec<usize> = std::env::args()
        .skip(2)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()
        .context("batch sizes must be numbers")?;
    let batches = if batches.is_empty() {
        vec![1, 32]
    } else {
        batches
    };
    for batch in batches {
        let texts = inputs(batch);
        let reference = embeddings(&cpu, &texts)?;
        agree(&reference, &embeddings(&gpu, &texts)?, 0.9999, "f32")?;
        if let Some(f16) = &f16 {
            agree(&reference, &embeddings(f16, &texts)?, 0.999, "f16")?;
        }
        let (c, c0, c1) = time(&cpu, &texts)?;
        let (g, g0, g1) = time(&gpu, &texts)?;
        let half = match &f16 {
            Some(f16) => {
                let (h, h0, h1) = time(f16, &texts)?;
                format!(" {h:.1} ({h0:.1}–{h1:.1}) | {:.2}× |", c / h)
            }
            None => String::new(),
        };
        println!(
            "| {batch} × {SEQ} | {c:.1} ({c0:.1}–{c1:.1}) | {g:.1} ({g0:.1}–{g1:.1}) | {:.2}× |{half}",
            c / g
        );
    }
    Ok(())
}
