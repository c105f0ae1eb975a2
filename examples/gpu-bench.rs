//! all-MiniLM-L6-v2 embeddings on the GPU and on the CPU of the same machine, at batch 1 and 32
//! with sequences of exactly 128 tokens, printed as a Markdown table. One short run:
//!
//! ```sh
//! cargo run --release -p amphi-examples --example gpu-bench -- ~/.cache/amphi/models/all-MiniLM-L6-v2 [BATCH ...]
//! ```
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
use amphi_core::{Device, LoadOptions, ModelFiles, Pipeline, RunOptions, Task, TextInput};
use anyhow::{Context, Result, ensure};

const SEQ: usize = 128;
const WARMUP: usize = 3;
const RUNS: usize = 10;

fn load(
    dir: &str,
    device: Device,
    gpu: Option<Arc<dyn amphi_core::gpu::GpuHost>>,
) -> Result<Pipeline> {
    let options = LoadOptions {
        device,
        max_length: Some(SEQ),
        gpu,
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

/// Median and (min, max) of the timed runs, in milliseconds.
fn time(p: &Pipeline, batch: &[TextInput]) -> Result<(f64, f64, f64)> {
    let options = RunOptions::default();
    for _ in 0..WARMUP {
        p.run(batch, &options)?;
    }
    let mut ms: Vec<f64> = (0..RUNS)
        .map(|_| {
            let t = Instant::now();
            p.run(batch, &options)
                .map(|_| t.elapsed().as_secs_f64() * 1e3)
        })
        .collect::<Result<_, _>>()?;
    ms.sort_by(f64::total_cmp);
    Ok((ms[RUNS / 2], ms[0], ms[RUNS - 1]))
}

fn embeddings(p: &Pipeline, batch: &[TextInput]) -> Result<Vec<Vec<f32>>> {
    match p.run(batch, &RunOptions::default())? {
        amphi_core::Output::Pooled(v) => Ok(v),
        other => anyhow::bail!("unexpected output {other:?}"),
    }
}

fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .context("usage: gpu-bench <all-MiniLM-L6-v2 folder>")?;
    let host = amphi_gpu::WgpuHost::new()?;
    let adapter = format!("{} ({})", host.info().name, host.info().backend);
    let host: Arc<dyn amphi_core::gpu::GpuHost> = Arc::new(host);
    let cpu = load(&dir, Device::Cpu, None)?;
    let gpu = load(&dir, Device::Gpu, Some(host))?;

    println!(
        "GPU: {adapter}; CPU: candle, {} threads\n",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| batch × seq | CPU ms (median, min–max) | GPU ms (median, min–max) | GPU speed-up |"
    );
    println!("|---|---|---|---|");
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
        let (a, b) = (embeddings(&cpu, &texts)?, embeddings(&gpu, &texts)?);
        for (x, y) in a.iter().zip(&b) {
            let cos: f32 = x.iter().zip(y).map(|(p, q)| p * q).sum();
            ensure!(
                cos >= 0.9999,
                "GPU and CPU embeddings differ (cosine {cos})"
            );
        }
        let (c, c0, c1) = time(&cpu, &texts)?;
        let (g, g0, g1) = time(&gpu, &texts)?;
        println!(
            "| {batch} × {SEQ} | {c:.1} ({c0:.1}–{c1:.1}) | {g:.1} ({g0:.1}–{g1:.1}) | {:.2}× |",
            c / g
        );
    }
    Ok(())
}
