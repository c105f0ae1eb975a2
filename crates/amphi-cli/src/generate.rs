//! `amphi run text-generation`: a prompt (the INPUT argument, a JSON array of prompts on
//! stdin, or with `--chat` a messages JSON on stdin) continued by a decoder. Without
//! `--stream` it prints the Hugging Face pipeline's JSON (`[{"generated_text": …}]`); with
//! it, the new text as it comes, natively or through amphi.wasm's sessions.

use std::io::{Read, Write};

use amphi_core::{SessionStep, Task};
use anyhow::Context;
use serde_json::{Value, json};

use crate::{Failure, RunArgs, RuntimeArg, guest_failure};

fn internal(e: impl std::fmt::Display) -> Failure {
    Failure {
        code: "internal_error".into(),
        client: false,
        message: e.to_string(),
    }
}

/// The request: `{"inputs": …, "parameters": {…}}` with the options that were set.
fn request(args: &RunArgs) -> anyhow::Result<Value> {
    let inputs = match (&args.input, args.chat) {
        (Some(_), true) => anyhow::bail!("--chat reads the messages from stdin, not INPUT"),
        (Some(text), false) => json!(text),
        (None, chat) => {
            let mut stdin = String::new();
            std::io::stdin()
                .read_to_string(&mut stdin)
                .context("reading stdin")?;
            let v: Value = serde_json::from_str(&stdin).context(if chat {
                "stdin must be a JSON array of {\"role\", \"content\"} messages"
            } else {
                "stdin must be a JSON array of prompts"
            })?;
            anyhow::ensure!(v.is_array(), "stdin must be a JSON array");
            v
        }
    };
    let g = &args.generation;
    let mut p = serde_json::Map::new();
    let mut set = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            p.insert(k.to_owned(), v);
        }
    };
    set("max_new_tokens", g.max_new_tokens.map(Value::from));
    set("do_sample", g.do_sample.map(Value::from));
    set("temperature", g.temperature.map(Value::from));
    set("top_p", g.top_p.map(Value::from));
    set("min_p", g.min_p.map(Value::from));
    set("repetition_penalty", g.repetition_penalty.map(Value::from));
    set("seed", g.seed.map(Value::from));
    set("stop", (!g.stop.is_empty()).then(|| json!(g.stop)));
    if let Some(amphi_core::TopK::K(k)) = args.top_k {
        set("top_k", Some(k.into()));
    }
    if args.stream {
        set("return_full_text", Some(false.into()));
    }
    Ok(json!({"inputs": inputs, "parameters": p, "stream": args.stream}))
}

/// Writes streamed text; `Ok(false)` when the reader has gone.
fn print(text: &str) -> Result<bool, Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(internal(format!("stdout: {e}"))),
    }
}

/// A streamed chunk's text, with a newline between prompts; nothing for the whole response
/// that ends a streamed session (it carries no `output`).
fn chunk_text(chunk: &Value, last_index: &mut Option<u64>) -> String {
    let mut text = String::new();
    if chunk.get("output").is_none() {
        return text;
    }
    let index = chunk["index"].as_u64();
    if last_index.is_some() && *last_index != index {
        text.push('\n');
    }
    *last_index = index;
    text.push_str(chunk["output"]["text"].as_str().unwrap_or(""));
    text
}

pub(crate) fn run(args: &RunArgs) -> Result<(), Failure> {
    let body = request(args)?.to_string();
    let mut last_index = None;
    match (args.runtime, args.stream) {
        (RuntimeArg::Native, _) => {
            let pipeline = crate::native_pipeline(args)?;
            let mut session = pipeline.open(body.as_bytes(), Vec::new())?;
            loop {
                match session.step()? {
                    SessionStep::Chunk(c) => {
                        let v = serde_json::to_value(&c).map_err(internal)?;
                        if !print(&chunk_text(&v, &mut last_index))? {
                            return Ok(());
                        }
                    }
                    SessionStep::Done(Some(response)) if !args.stream => {
                        let json = serde_json::to_vec(&response).map_err(internal)?;
                        return crate::print_json(args, &json);
                    }
                    SessionStep::Done(_) => break,
                    _ => return Err(internal("a native readback was left pending")),
                }
            }
        }
        (RuntimeArg::Wasm, false) => {
            let (json, _) = crate::run_wasm(args, body.as_bytes(), &[])?;
            return crate::print_json(args, &json);
        }
        (RuntimeArg::Wasm, true) => {
            let (mut guest, model, _) = crate::wasm::open(args)?;
            let mut printed = Ok(true);
            guest
                .stream(
                    model,
                    Task::TextGeneration.as_str(),
                    body.as_bytes(),
                    |json, _| {
                        printed = serde_json::from_slice::<Value>(&json)
                            .map_err(internal)
                            .and_then(|v| print(&chunk_text(&v, &mut last_index)));
                        matches!(printed, Ok(true))
                    },
                )
                .map_err(guest_failure)?;
            printed?;
        }
    }
    print("\n").map(|_| ())
}
