//! `amphi bench`: sentence embeddings timed on fixed shapes (batch × tokens), natively or through
//! amphi.wasm under wasmtime, with the embeddings written out so that a harness can check them
//! against other runtimes before it compares times (`cargo xtask bench`).
//!
//! The inputs are deterministic texts of exactly `seq` tokens; `--write-inputs` also writes
//! their token ids, so that runtimes without amphi's tokenizer run the same tokens.

use std::path::PathBuf;
use std::time::Instant;

use amphi_core::tokenization::Tokenizer;
use amphi_core::{
    Device, LoadOptions, ModelFiles, Output, Pipeline, Precision, RunOptions, Task, TextInput,
};
use anyhow::{Context, Result, bail, ensure};
use clap::Args;
use serde_json::{Value, json};

use crate::{
    DeviceArg, Failure, RuntimeArg, default_artifact, guest_failure, host_failure, model_folder,
    native_gpu, parse_precision,
};

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Model folder (or hub id) of a sentence-embedding model.
    #[arg(long, short)]
    model: String,
    /// Which engine runs it.
    #[arg(long, value_enum, default_value = "native")]
    runtime: RuntimeArg,
    /// Shapes to time, as BATCHxTOKENS.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1x8,1x32,1x128,1x256,32x128"
    )]
    shapes: Vec<String>,
    /// Untimed runs before timing each shape.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed runs per shape: at least this many…
    #[arg(long, default_value_t = 3)]
    min_runs: usize,
    /// …and at most this many, stopping once `--budget-ms` is spent.
    #[arg(long, default_value_t = 15)]
    max_runs: usize,
    /// Time budget per shape in milliseconds (after `--min-runs`).
    #[arg(long, default_value_t = 4000)]
    budget_ms: u64,
    /// Write the inputs (texts and token ids per shape) as JSON and exit.
    #[arg(long)]
    write_inputs: Option<PathBuf>,
    /// Write the results (times and embeddings per shape) as JSON here (default: stdout).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also print where the time of each shape's timed runs goes, op by op: timed natively;
    /// sampled in amphi.wasm (its call stack at every 5 ms epoch tick, so only with
    /// `--preemptive`). Natively the ops use all cores unless `RAYON_NUM_THREADS` says
    /// otherwise, so each op's share depends on how well it splits across them; `cargo xtask
    /// bench` sets `RAYON_NUM_THREADS=1`.
    #[arg(long)]
    profile: bool,
    /// Skip the kernel microbenchmarks (peak and matrix multiply GFLOP/s).
    #[arg(long)]
    no_kernels: bool,
    /// Wasm runtime: preemptive deadlines (`amphi serve --preemptive-deadlines`), i.e. epoch
    /// interruption checks in every loop of the compiled code, instead of the default checks
    /// between ops.
    #[arg(long)]
    preemptive: bool,
    /// Let a harness pace the runs, so that several runtimes can be timed in alternating rounds:
    /// once loaded, say `ok` on stdout, then read commands from stdin, one per line — `warm I`
    /// (first run of shape I, kept, then the warm-up), `run I` (one timed run), `done I` (shape
    /// I complete) — and answer each with `ok`; at the end of stdin write the results to `--out`.
    #[arg(long, requires = "out")]
    step: bool,
    /// Time image classification of this file instead (an image model in `--model`; batch 1,
    /// decoding and preprocessing included), with `--warmup`, `--min-runs`, `--max-runs`,
    /// `--budget-ms`, `--profile` and `--out`.
    #[arg(long, value_name = "FILE")]
    image: Option<PathBuf>,
    /// Native runtime: where the model runs. `gpu` times the WGSL kernels through wgpu (each
    /// run ends with the embeddings read back); the kernel microbenchmarks are the CPU's, so
    /// they are skipped there, and `--profile` and `--image` are refused.
    #[arg(long, value_enum, default_value = "cpu")]
    device: DeviceArg,
    /// Precision of the weights with `--device gpu` (f32, or f16 where the adapter has
    /// shader-f16).
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    precision: Precision,
}

/// One way to classify an image file: the top 5 as JSON.
type Classify<'a> = Box<dyn FnMut(&[u8]) -> Result<Value> + 'a>;

fn classifier(
    dir: &str,
    runtime: RuntimeArg,
    preemptive: bool,
) -> Result<Classify<'static>, Failure> {
    let request = serde_json::to_vec(&json!({"inputs": {"blob": 0}, "parameters": {"top_k": 5}}))
        .map_err(anyhow::Error::from)?;
    if runtime == RuntimeArg::Native {
        let options = LoadOptions {
            device: Device::Cpu,
            ..LoadOptions::default()
        };
        let files = ModelFiles::from_dir(dir).map_err(anyhow::Error::from)?;
        let pipeline = Pipeline::load(Task::ImageClassification, files, &options)?;
        return Ok(Box::new(move |bytes| {
            match pipeline.start_json(&request, vec![bytes.to_vec()])? {
                amphi_core::Started::Done(r) => Ok(serde_json::to_value(r)?),
                amphi_core::Started::Pending(_) => bail!("a native readback was left pending"),
            }
        }));
    }
    let (mut guest, model) = wasm_guest(dir, preemptive)?;
    Ok(Box::new(move |bytes| {
        let (json, _) = guest
            .run_with(model, "image-classification", &request, &[bytes])
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(serde_json::from_slice(&json)?)
    }))
}

fn bench_image(args: &BenchArgs, dir: &str, image: &std::path::Path) -> Result<(), Failure> {
    let bytes = std::fs::read(image).with_context(|| format!("reading {}", image.display()))?;
    let (name, mut classify) = match args.runtime {
        RuntimeArg::Native => ("amphi native", classifier(dir, args.runtime, false)?),
        RuntimeArg::Wasm if args.preemptive => (
            "amphi.wasm (wasmtime, preemptive deadlines)",
            classifier(dir, args.runtime, true)?,
        ),
        RuntimeArg::Wasm => (
            "amphi.wasm (wasmtime)",
            classifier(dir, args.runtime, false)?,
        ),
    };
    let top5 = classify(&bytes)?;
    for _ in 1..args.warmup {
        classify(&bytes)?;
    }
    if args.profile {
        amphi_core::profile::start();
    }
    let mut ms = Vec::new();
    let started = Instant::now();
    while ms.len() < args.min_runs
        || (ms.len() < args.max_runs && started.elapsed().as_millis() < u128::from(args.budget_ms))
    {
        let t = Instant::now();
        classify(&bytes)?;
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let ops = amphi_core::profile::finish();
    let profile: Vec<Value> = ops
        .iter()
        .map(|o| json!({"op": o.op, "ms_per_run": o.ms / ms.len() as f64}))
        .collect();
    let (median, min, max) = stats(&mut ms);
    eprintln!(
        "{name}: {}: median {median:.2} ms ({min:.2}–{max:.2}, {} runs)",
        image.display(),
        ms.len()
    );
    let out = json!({"runtime": name, "ms": ms, "median": median, "min": min, "max": max, "top5": top5, "profile": profile});
    match &args.out {
        Some(path) => std::fs::write(path, out.to_string()).context("writing results")?,
        None => println!("{out}"),
    }
    Ok(())
}

/// `n` texts of `seq - 2` words that are each one token of MiniLM's vocabulary, so that every
/// tokenizer gives exactly `seq` tokens with `[CLS]` and `[SEP]` and none has to truncate (their
/// truncation rules differ); text `i` differs from text `j`.
pub(crate) fn texts(n: usize, seq: usize) -> Vec<String> {
    const WORDS: [&str; 24] = [
        "the",
        "model",
        "runs",
        "in",
        "a",
        "browser",
        "and",
        "on",
        "servers",
        "with",
        "one",
        "river",
        "sentences",
        "become",
        "vectors",
        "whose",
        "angle",
        "similarity",
        "tells",
        "meaning",
        "quickly",
        "local",
        "mountain",
        "light",
    ];
    (0..n)
        .map(|i| {
            (0..seq - 2)
                .map(|w| WORDS[(w * 7 + i * 5 + w / 3) % WORDS.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn parse_shape(s: &str) -> Result<(usize, usize)> {
    let (b, n) = s
        .split_once('x')
        .with_context(|| format!("shape `{s}`: expected BATCHxTOKENS"))?;
    let shape = (b.trim().parse()?, n.trim().parse()?);
    ensure!(shape.0 > 0 && shape.1 > 2, "shape `{s}`: too small");
    Ok(shape)
}

/// Median, min and max of `ms`.
fn stats(ms: &mut [f64]) -> (f64, f64, f64) {
    ms.sort_by(f64::total_cmp);
    (ms[ms.len() / 2], ms[0], ms[ms.len() - 1])
}

/// MiniLM's linear layers at 128 tokens: (m, n, k) of QKV, attention output, FFN in and out.
const MATMUL_SHAPES: [(u32, u32, u32); 4] = [
    (128, 1152, 384),
    (128, 384, 384),
    (128, 1536, 384),
    (128, 384, 1536),
];

/// A microbenchmark: `run(iters)` returns GFLOP/s measured over `iters` iterations.
type Probe<'a> = dyn FnMut(u32) -> Result<f64> + 'a;

/// GFLOP/s of `probe`: iterations doubled until one run takes 50 ms, then the best of 5 runs
/// (what the code can do; this shared machine's speed drifts, by up to 1.8× for seconds).
fn measure(probe: &mut Probe<'_>, flops_per_iter: f64) -> Result<f64> {
    let mut iters = 1u32;
    loop {
        let g = probe(iters)?;
        if flops_per_iter * f64::from(iters) / (g * 1e9) >= 0.05 || iters >= 1 << 30 {
            break;
        }
        iters *= 2;
    }
    let mut runs = (0..5).map(|_| probe(iters)).collect::<Result<Vec<_>>>()?;
    Ok(stats(&mut runs).2)
}

/// The kernel microbenchmarks of one engine; each returns GFLOP/s over `iters` iterations.
trait Probes {
    /// Flops per iteration of the peak loop.
    fn peak_flops(&self) -> f64;
    fn peak(&mut self, iters: u32) -> Result<f64>;
    fn matmul(&mut self, shape: (u32, u32, u32), iters: u32) -> Result<f64>;
}

/// The engine linked into this program, timed here.
struct NativeProbes;

impl Probes for NativeProbes {
    fn peak_flops(&self) -> f64 {
        amphi_core::probe::peak_flops_per_iter() as f64
    }

    fn peak(&mut self, iters: u32) -> Result<f64> {
        let t = Instant::now();
        std::hint::black_box(amphi_core::probe::peak(iters));
        Ok(self.peak_flops() * f64::from(iters) / t.elapsed().as_secs_f64() / 1e9)
    }

    fn matmul(&mut self, (m, n, k): (u32, u32, u32), iters: u32) -> Result<f64> {
        let t = Instant::now();
        std::hint::black_box(amphi_core::probe::matmul(
            m as usize, n as usize, k as usize, iters,
        ));
        let flops = 2.0 * f64::from(m * n) * f64::from(k) * f64::from(iters);
        Ok(flops / t.elapsed().as_secs_f64() / 1e9)
    }
}

/// amphi.wasm's `amphi_probe_*` exports, timed by the serverless host's runtime, and the
/// artifact's flops per peak iteration.
struct WasmProbes(amphi_serve::Guest, u32);

impl WasmProbes {
    fn new(mut guest: amphi_serve::Guest) -> Result<Self> {
        let flops = guest
            .probe_peak_flops()?
            .context("amphi.wasm has no amphi_probe_* exports")?;
        Ok(Self(guest, flops))
    }
}

impl Probes for WasmProbes {
    fn peak_flops(&self) -> f64 {
        f64::from(self.1)
    }

    fn peak(&mut self, iters: u32) -> Result<f64> {
        self.0
            .probe_peak(iters)?
            .context("amphi.wasm has no amphi_probe_* exports")
    }

    fn matmul(&mut self, shape: (u32, u32, u32), iters: u32) -> Result<f64> {
        self.0
            .probe_matmul(shape, iters)?
            .context("amphi.wasm has no amphi_probe_* exports")
    }
}

/// The kernel microbenchmarks: the peak of the matrix multiply's arithmetic and the multiply on
/// MiniLM's shapes, in the same engine as the model.
fn kernels(runtime: RuntimeArg, preemptive: bool) -> Result<Value, Failure> {
    let (name, mut probes): (String, Box<dyn Probes>) = match runtime {
        RuntimeArg::Native => (
            amphi_core::probe::kernel().to_owned(),
            Box::new(NativeProbes),
        ),
        RuntimeArg::Wasm => {
            let guest = wasm_runtime(preemptive)?
                .instantiate()
                .map_err(host_failure)?;
            (
                "amphi.wasm simd128".to_owned(),
                Box::new(WasmProbes::new(guest)?),
            )
        }
    };
    let per = probes.peak_flops();
    let peak = measure(&mut |iters| probes.peak(iters), per)?;
    let mut shapes = Vec::new();
    for (m, n, k) in MATMUL_SHAPES {
        let flops = 2.0 * f64::from(m * n) * f64::from(k);
        let g = measure(&mut |iters| probes.matmul((m, n, k), iters), flops)?;
        shapes.push(((m, n, k), g));
    }
    // The model's mix: each shape weighted by its flops.
    let (flops, secs) = shapes.iter().fold((0.0, 0.0), |(f, s), &((m, n, k), g)| {
        let fl = 2.0 * f64::from(m * n) * f64::from(k);
        (f + fl, s + fl / g)
    });
    let matmul = flops / secs;
    eprintln!(
        "{name}: peak {peak:.1} GFLOP/s; matmul on MiniLM's shapes {matmul:.1} GFLOP/s ({:.0} % of peak)",
        100.0 * matmul / peak
    );
    Ok(json!({
        "kernel": name,
        "peak_gflops": peak,
        "matmul_gflops": matmul,
        "share_of_peak": matmul / peak,
        "shapes": shapes.iter().map(|&((m, n, k), g)| json!({"m": m, "n": n, "k": k, "gflops": g})).collect::<Vec<_>>(),
    }))
}

/// One way to embed a batch truncated at `seq` tokens.
type Embed<'a> = Box<dyn FnMut(&[String], usize) -> Result<Vec<Vec<f32>>> + 'a>;

/// Starts (`None`) or ends (`Some(the timed runs' ms)`) a per-op profile of the runs between;
/// ending gives its rows: `op`, `share` of the runs' time, `ms_per_run`, and `calls_per_run`
/// (native: timed ops) or `samples` (amphi.wasm: stack samples).
type Profile<'a> = Box<dyn FnMut(Option<&[f64]>) -> Result<Vec<Value>> + 'a>;

/// The native profile: wall time per CPU-backend op (`amphi_core::profile`).
fn native_profile() -> Profile<'static> {
    Box::new(|runs| {
        let Some(ms) = runs else {
            amphi_core::profile::start();
            return Ok(Vec::new());
        };
        let total: f64 = ms.iter().sum();
        let n = ms.len() as f64;
        Ok(amphi_core::profile::finish()
            .iter()
            .map(|o| json!({"op": o.op, "ms_per_run": o.ms / n, "share": o.ms / total, "calls_per_run": o.calls as f64 / n}))
            .collect())
    })
}

/// The engine linked into this program, on `device`; also its name in the results (with the
/// GPU adapter, where it runs on one).
fn native(
    dir: &str,
    device: Device,
    precision: Precision,
) -> Result<(String, Embed<'static>), Failure> {
    let options = LoadOptions {
        device,
        precision,
        gpu: native_gpu(device)?,
        ..LoadOptions::default()
    };
    let pipeline = Pipeline::load(
        Task::FeatureExtraction,
        ModelFiles::from_dir(dir).map_err(anyhow::Error::from)?,
        &options,
    )?;
    let name = match pipeline.model().adapter() {
        Some(adapter) => format!(
            "amphi native (GPU {precision}: {adapter})",
            precision = pipeline.model().precision()
        ),
        None => "amphi native".to_owned(),
    };
    Ok((
        name,
        Box::new(move |texts, seq| {
            let inputs: Vec<TextInput> =
                texts.iter().map(|t| TextInput::from(t.as_str())).collect();
            let options = RunOptions {
                max_length: Some(seq),
                ..RunOptions::default()
            };
            match pipeline.run(&inputs, &options)? {
                Output::Pooled(v) => Ok(v),
                other => bail!("unexpected output {other:?}"),
            }
        }),
    ))
}

fn wasm_runtime(preemptive: bool) -> Result<amphi_serve::Runtime, Failure> {
    let artifact = amphi_serve::Artifact::read(&default_artifact()).map_err(host_failure)?;
    let limits = amphi_serve::GuestLimits {
        deadlines: match preemptive {
            true => amphi_serve::Deadlines::Preemptive,
            false => amphi_serve::Deadlines::BetweenOps,
        },
        ..amphi_serve::GuestLimits::default()
    };
    amphi_serve::Runtime::new(artifact, Some(&crate::cache_dir().join("wasm")), limits)
        .map_err(host_failure)
}

/// An instance of amphi.wasm with the model folder loaded on its CPU.
fn wasm_guest(dir: &str, preemptive: bool) -> Result<(amphi_serve::Guest, i32), Failure> {
    let runtime = wasm_runtime(preemptive)?;
    let spec = amphi_serve::load_model_dir("model", dir.as_ref(), json!({"device": "cpu"}))
        .map_err(host_failure)?;
    let mut guest = runtime.instantiate().map_err(host_failure)?;
    let model = guest
        .load_model(&spec.files, &spec.options)
        .map_err(guest_failure)?;
    Ok((guest, model))
}

/// amphi.wasm under wasmtime, and its sampled profile (stack samples at each epoch tick, charged
/// to the backend op on the stack; needs preemptive deadlines, whose ticks it samples on).
fn wasm(dir: &str, preemptive: bool) -> Result<(Embed<'static>, Profile<'static>), Failure> {
    let (guest, model) = wasm_guest(dir, preemptive)?;
    let guest = std::rc::Rc::new(std::cell::RefCell::new(guest));
    let runner = guest.clone();
    let embed: Embed<'static> = Box::new(move |texts, seq| {
        let request = json!({"inputs": texts, "parameters": {"max_length": seq}});
        let (json, _) = runner
            .borrow_mut()
            .run(model, "feature-extraction", &serde_json::to_vec(&request)?)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        Ok(serde_json::from_slice(&json)?)
    });
    let profile: Profile<'static> = Box::new(move |runs| {
        let mut guest = guest.borrow_mut();
        let Some(ms) = runs else {
            guest.start_profile()?;
            return Ok(Vec::new());
        };
        let samples = guest.finish_profile();
        let total = samples.iter().map(|s| s.1).sum::<u64>().max(1) as f64;
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        Ok(samples
            .iter()
            .map(|&(op, n)| json!({"op": op, "share": n as f64 / total, "ms_per_run": mean * n as f64 / total, "samples": n}))
            .collect())
    });
    Ok((embed, profile))
}

/// One shape's texts, its first output and its timed runs.
struct ShapeRuns {
    batch: usize,
    seq: usize,
    texts: Vec<String>,
    embeddings: Vec<Vec<f32>>,
    ms: Vec<f64>,
}

impl ShapeRuns {
    fn new((batch, seq): (usize, usize)) -> Self {
        Self {
            batch,
            seq,
            texts: texts(batch, seq),
            embeddings: Vec::new(),
            ms: Vec::new(),
        }
    }

    /// The first run (its embeddings are kept), `--warmup - 1` more, then the profile starts.
    fn warm(
        &mut self,
        embed: &mut Embed<'_>,
        profile: &mut Profile<'_>,
        args: &BenchArgs,
    ) -> Result<()> {
        self.embeddings = embed(&self.texts, self.seq)?;
        for _ in 1..args.warmup {
            embed(&self.texts, self.seq)?;
        }
        if args.profile {
            profile(None)?;
        }
        Ok(())
    }

    fn time_once(&mut self, embed: &mut Embed<'_>) -> Result<()> {
        let t = Instant::now();
        embed(&self.texts, self.seq)?;
        self.ms.push(t.elapsed().as_secs_f64() * 1e3);
        Ok(())
    }

    /// The shape's result row (and the profile, when asked for).
    fn finish(&mut self, profile: &mut Profile<'_>, args: &BenchArgs, name: &str) -> Result<Value> {
        ensure!(
            !self.ms.is_empty(),
            "{}x{}: no timed run",
            self.batch,
            self.seq
        );
        let (batch, seq) = (self.batch, self.seq);
        let mut ops = Vec::new();
        if args.profile {
            ops = profile(Some(&self.ms))?;
            let parts: Vec<String> = ops
                .iter()
                .map(|o| {
                    format!(
                        "{} {:.0}%",
                        o["op"].as_str().unwrap_or("?"),
                        100.0 * o["share"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            eprintln!("{name}: {batch}x{seq}: {}", parts.join(", "));
        }
        let mut ms = std::mem::take(&mut self.ms);
        let (median, min, max) = stats(&mut ms);
        eprintln!(
            "{name}: {batch}x{seq}: median {median:.2} ms ({min:.2}–{max:.2}, {} runs)",
            ms.len()
        );
        Ok(json!({
            "batch": batch, "seq": seq, "ms": ms,
            "median": median, "min": min, "max": max,
            "embeddings": std::mem::take(&mut self.embeddings), "profile": ops,
        }))
    }
}

pub(crate) fn bench(args: BenchArgs) -> Result<(), Failure> {
    let device = Device::from(args.device);
    let on_cpu = device == Device::Cpu;
    // Checked before anything else: `--image` runs on the CPU, so it would otherwise time the
    // CPU under a `--device gpu` flag.
    if !on_cpu && (args.runtime != RuntimeArg::Native || args.profile || args.image.is_some()) {
        return Err(anyhow::anyhow!(
            "--device {device}: embeddings on the native runtime only, without --profile (which \
             times CPU ops) or --image"
        )
        .into());
    }
    let dir = model_folder(&args.model)?.to_string_lossy().into_owned();
    if let Some(image) = &args.image {
        return bench_image(&args, &dir, image);
    }
    let shapes: Vec<(usize, usize)> = args
        .shapes
        .iter()
        .map(|s| parse_shape(s))
        .collect::<Result<_>>()?;
    if let Some(path) = &args.write_inputs {
        write_inputs(&dir, &shapes, path)?;
        return Ok(());
    }
    if args.profile && args.runtime == RuntimeArg::Wasm && !args.preemptive {
        return Err(anyhow::anyhow!(
            "--profile samples amphi.wasm on epoch ticks: in wasm it needs --preemptive"
        )
        .into());
    }
    let (name, (mut embed, mut profile)) = match args.runtime {
        RuntimeArg::Native => {
            let (name, embed) = native(&dir, device, args.precision)?;
            (name, (embed, native_profile()))
        }
        RuntimeArg::Wasm if args.preemptive => (
            "amphi.wasm (wasmtime, preemptive deadlines)".to_owned(),
            wasm(&dir, true)?,
        ),
        RuntimeArg::Wasm => ("amphi.wasm (wasmtime)".to_owned(), wasm(&dir, false)?),
    };
    let kernels = match args.no_kernels || !on_cpu {
        true => Value::Null,
        false => kernels(args.runtime, args.preemptive)?,
    };
    let mut runs: Vec<ShapeRuns> = shapes.iter().map(|&s| ShapeRuns::new(s)).collect();
    let mut rows = Vec::new();
    if args.step {
        // Loaded and probed: ready for commands.
        println!("ok");
        for line in std::io::stdin().lines() {
            let line = line.context("reading stdin")?;
            let (command, index) = line
                .split_once(' ')
                .with_context(|| format!("not a command: {line:?}"))?;
            let i: usize = index.parse().context("shape index")?;
            let shape = runs.get_mut(i).with_context(|| format!("no shape {i}"))?;
            match command {
                "warm" => shape.warm(&mut embed, &mut profile, &args)?,
                "run" => shape.time_once(&mut embed)?,
                "done" => rows.push(shape.finish(&mut profile, &args, &name)?),
                _ => return Err(anyhow::anyhow!("unknown command {command:?}").into()),
            }
            println!("ok");
        }
    } else {
        for shape in &mut runs {
            shape.warm(&mut embed, &mut profile, &args)?;
            let started = Instant::now();
            while shape.ms.len() < args.min_runs
                || (shape.ms.len() < args.max_runs
                    && started.elapsed().as_millis() < u128::from(args.budget_ms))
            {
                shape.time_once(&mut embed)?;
            }
            rows.push(shape.finish(&mut profile, &args, &name)?);
        }
    }
    let out = json!({"runtime": name, "kernels": kernels, "results": rows});
    match &args.out {
        Some(path) => std::fs::write(path, out.to_string()).context("writing results")?,
        None => println!("{out}"),
    }
    Ok(())
}

/// Texts and their token ids (truncated at `seq`, special tokens included) per shape.
fn write_inputs(dir: &str, shapes: &[(usize, usize)], path: &PathBuf) -> Result<()> {
    let tokenizer = Tokenizer::from_bytes(&std::fs::read(
        std::path::Path::new(dir).join("tokenizer.json"),
    )?)?;
    let shapes: Vec<Value> = shapes
        .iter()
        .map(|&(batch, seq)| {
            let texts = texts(batch, seq);
            let ids = texts
                .iter()
                .map(|t| {
                    let e = tokenizer.encode(&TextInput::from(t.as_str()), seq)?;
                    ensure!(
                        e.ids.len() == seq,
                        "a text gave {} tokens, not {seq}",
                        e.ids.len()
                    );
                    Ok(e.ids)
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(json!({"batch": batch, "seq": seq, "texts": texts, "ids": ids}))
        })
        .collect::<Result<_>>()?;
    std::fs::write(path, json!({"shapes": shapes}).to_string())?;
    Ok(())
}
