//! `amphi`: run amphi's pipelines from the command line.
//!
//! ```text
//! amphi run feature-extraction --model ./all-MiniLM-L6-v2 "hello world"
//! echo '["good", "bad"]' | amphi run text-classification --model ./sst2 --top-k 2
//! ```
//!
//! The result is printed as JSON on stdout. Errors are one line on stderr,
//! `error[<code>]: <message>`, with exit status 2 for bad input and 1 for internal faults.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a CLI's output is its interface

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use amphi_core::{
    Aggregation, ClassifierFunction, Device, Inputs, LoadOptions, ModelFiles, Pipeline, Pooling,
    Request, RunOptions, Task, TextInput, TopK,
};
use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(name = "amphi", version, about = "Run NLP pipelines with amphi")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline on one input (argument) or a JSON array of inputs (stdin).
    Run(RunArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum TaskArg {
    FeatureExtraction,
    TextClassification,
    TokenClassification,
}

impl From<TaskArg> for Task {
    fn from(t: TaskArg) -> Self {
        match t {
            TaskArg::FeatureExtraction => Task::FeatureExtraction,
            TaskArg::TextClassification => Task::TextClassification,
            TaskArg::TokenClassification => Task::TokenClassification,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum DeviceArg {
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
    /// The text to process. Without it, a JSON array of inputs is read from stdin (strings or
    /// `{"text": .., "text_pair": ..}` objects).
    input: Option<String>,
    /// Model folder in the Hugging Face layout.
    #[arg(long, short)]
    model: PathBuf,
    /// Where to run.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceArg,
    /// Second segment of a sentence pair (with a single INPUT).
    #[arg(long)]
    text_pair: Option<String>,
    /// feature-extraction: none, mean or cls (default: the model folder's).
    #[arg(long, value_parser = parse_pooling)]
    pooling: Option<Pooling>,
    /// feature-extraction: L2-normalise the vectors (default: the model folder's).
    #[arg(long)]
    normalize: Option<bool>,
    /// text-classification: number of labels to return, or `all`.
    #[arg(long, value_parser = parse_top_k)]
    top_k: Option<TopK>,
    /// text-classification: softmax, sigmoid or none.
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

/// A failure with the stable code the engine gives it (`io_error` and friends for the CLI's own).
struct Failure {
    code: &'static str,
    client: bool,
    message: String,
}

impl From<amphi_core::Error> for Failure {
    fn from(e: amphi_core::Error) -> Self {
        Self {
            code: e.code(),
            client: e.is_client_error(),
            message: e.to_string(),
        }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        if let Some(engine) = e.downcast_ref::<amphi_core::Error>() {
            return Self {
                code: engine.code(),
                client: engine.is_client_error(),
                message: format!("{e:#}"),
            };
        }
        Self {
            code: "invalid_input",
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

fn run(args: RunArgs) -> Result<(), Failure> {
    let inputs = read_inputs(&args)?;
    let parameters = RunOptions {
        pooling: args.pooling,
        normalize: args.normalize,
        top_k: args.top_k.unwrap_or_default(),
        function_to_apply: args.function_to_apply,
        aggregation_strategy: args.aggregation_strategy,
        ignore_labels: args.ignore_labels.clone(),
        max_length: args.max_length,
    };

    let started = Instant::now();
    let files = ModelFiles::from_dir(&args.model).map_err(|e| Failure {
        code: "missing_file",
        client: true,
        message: format!("{}: {e}", args.model.display()),
    })?;
    let options = LoadOptions {
        device: args.device.into(),
        ..LoadOptions::default()
    };
    let pipeline = Pipeline::load(args.task.into(), files, &options)?;
    let loaded = started.elapsed();

    let started = Instant::now();
    let output = pipeline.run_request(&Request { inputs, parameters })?;
    let ran = started.elapsed();

    let text = if args.pretty {
        serde_json::to_string_pretty(&output)
    } else {
        serde_json::to_string(&output)
    }
    .map_err(|e| Failure {
        code: "internal",
        client: false,
        message: e.to_string(),
    })?;
    println!("{text}");
    if args.verbose {
        eprintln!(
            "device={} load_ms={:.1} run_ms={:.1}",
            pipeline.device(),
            loaded.as_secs_f64() * 1e3,
            ran.as_secs_f64() * 1e3
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
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
