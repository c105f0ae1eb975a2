//! text-generation on the fixtures' decoders (PyTorch goldens, greedy): written once against
//! [`Host`] and run on every host. What each golden prompt must give: the same 20 greedy
//! tokens as Transformers' `generate(do_sample=False)` (exact: the goldens' smallest top-2
//! margin is 0.0023), its `greedy_text` and `full_text` exactly, and streamed chunks that
//! concatenate to the same text and carry the same token ids, in order.

use amphi_core::Task;
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::hosts::{Host, Streamed};
use crate::{fixture_model, golden};

fn ids(v: &Value) -> Result<Vec<u64>> {
    v.as_array()
        .context("ids")?
        .iter()
        .map(|i| i.as_u64().context("id"))
        .collect()
}

/// Every golden prompt of `model` (`tiny-llama`, …), whole and streamed.
pub fn greedy_prompts(host: &dyn Host, model: &str) -> Result<()> {
    let g = golden(&format!("{model}.json"))?;
    let dir = fixture_model(model);
    for p in g["prompts"].as_array().context("prompts")? {
        let prompt = p["prompt"].as_str().context("prompt")?;
        let new = ids(&p["greedy_new_ids"])?;
        let what = format!("{}: {model} {prompt:?}", host.name());
        let parameters = json!({"max_new_tokens": new.len(), "do_sample": false});
        let out = host.run(
            Task::TextGeneration,
            &dir,
            &json!({"inputs": prompt, "parameters": parameters}),
        )?;
        let first = &out[0];
        ensure!(
            first["generated_text"] == p["full_text"],
            "{what}: {} vs {}",
            first["generated_text"],
            p["full_text"]
        );
        let stopped = p["stopped_at_eos"].as_bool().context("stopped_at_eos")?;
        let reason = if stopped { "stop" } else { "length" };
        ensure!(
            first["finish_reason"] == reason,
            "{what}: {}",
            first["finish_reason"]
        );
        ensure!(
            first["generated_tokens"] == json!(new.len()),
            "{what}: {}",
            first["generated_tokens"]
        );

        let new_only = json!({"inputs": prompt, "parameters":
            {"max_new_tokens": new.len(), "return_full_text": false}});
        let out = host.run(Task::TextGeneration, &dir, &new_only)?;
        ensure!(
            out[0]["generated_text"] == p["greedy_text"],
            "{what}: new text {}",
            out[0]["generated_text"]
        );

        let Streamed { chunks, error } = host.stream(Task::TextGeneration, &dir, &new_only)?;
        ensure!(error.is_none(), "{what}: the stream ended with {error:?}");
        let mut text = String::new();
        let mut streamed = Vec::new();
        for (n, c) in chunks.iter().enumerate() {
            ensure!(
                c["index"] == 0,
                "{what}: chunk {n} of prompt {}",
                c["index"]
            );
            let last = n + 1 == chunks.len();
            ensure!(
                c["output"]["finish_reason"].is_null() != last,
                "{what}: chunk {n} finish_reason {}",
                c["output"]["finish_reason"]
            );
            text.push_str(c["output"]["text"].as_str().context("text")?);
            streamed.extend(ids(&c["output"]["token_ids"])?);
        }
        ensure!(chunks.len() > 1, "{what}: {} chunks", chunks.len());
        ensure!(
            text == p["greedy_text"].as_str().context("greedy_text")?,
            "{what}: streamed {text:?}"
        );
        ensure!(
            streamed == new,
            "{what}: streamed ids {streamed:?} vs {new:?}"
        );
    }
    Ok(())
}

/// Chat messages through the model's template, a batch of prompts, stop strings, sampling
/// with a seed, and refusals.
pub fn options_and_chat(host: &dyn Host, model: &str) -> Result<()> {
    let g = golden(&format!("{model}.json"))?;
    let dir = fixture_model(model);
    let what = format!("{}: {model}", host.name());
    let run = |request: Value| host.run(Task::TextGeneration, &dir, &request);

    // A conversation: the reply is appended to it; the same tokens as the rendered prompt
    // sent as text (without a second BOS).
    let case = &g["chat_template_case"];
    let messages = case["messages"].clone();
    let chat = run(json!({"inputs": messages, "parameters": {"max_new_tokens": 6}}))?;
    let conversation = chat[0]["generated_text"]
        .as_array()
        .context("a conversation")?;
    ensure!(
        conversation.len() == messages.as_array().context("messages")?.len() + 1,
        "{what}: {chat}"
    );
    let reply = conversation.last().context("reply")?;
    ensure!(reply["role"] == "assistant", "{what}: {reply}");
    let text = run(json!({"inputs": case["text"], "parameters":
        {"max_new_tokens": 6, "return_full_text": false, "add_special_tokens": false}}))?;
    ensure!(
        reply["content"] == text[0]["generated_text"],
        "{what}: chat {reply} vs text {text}"
    );

    // A batch: one list per prompt, each as the prompt alone gives.
    let prompts: Vec<&Value> = g["prompts"]
        .as_array()
        .context("prompts")?
        .iter()
        .map(|p| &p["prompt"])
        .collect();
    let batch = run(json!({"inputs": prompts, "parameters": {"max_new_tokens": 4}}))?;
    for (i, p) in prompts.iter().enumerate() {
        let one = run(json!({"inputs": p, "parameters": {"max_new_tokens": 4}}))?;
        ensure!(
            batch[i] == one,
            "{what}: batch[{i}] {} vs {}",
            batch[i],
            one
        );
    }

    // A stop string cuts the text before it.
    let p = &g["prompts"][0];
    let greedy = p["greedy_text"].as_str().context("greedy_text")?;
    let cut = greedy
        .char_indices()
        .nth(greedy.chars().count() / 2)
        .map_or(0, |(i, _)| i);
    let stop: String = greedy[cut..].chars().take(3).collect();
    let want = &greedy[..greedy.find(&stop).context("stop")?];
    let stopped = run(json!({"inputs": p["prompt"], "parameters":
        {"max_new_tokens": 20, "return_full_text": false, "stop": [stop]}}))?;
    ensure!(
        stopped[0]["generated_text"] == want,
        "{what}: stop {stop:?}: {}",
        stopped[0]["generated_text"]
    );
    ensure!(
        stopped[0]["finish_reason"] == "stop",
        "{what}: {}",
        stopped[0]["finish_reason"]
    );

    // Sampling: the same seed gives the same text, another seed (almost surely) another.
    let sample = |seed: u64| {
        run(
            json!({"inputs": p["prompt"], "parameters": {"max_new_tokens": 12, "do_sample": true,
            "temperature": 1.5, "top_k": 50, "top_p": 0.95, "seed": seed, "return_full_text": false}}),
        )
    };
    let (a, b, c) = (sample(1)?, sample(1)?, sample(2)?);
    ensure!(a == b, "{what}: seed 1 twice: {a} vs {b}");
    ensure!(a != c, "{what}: seeds 1 and 2 gave {a}");
    ensure!(
        a[0]["generated_text"] != json!(greedy),
        "{what}: sampling at T=1.5 gave the greedy text"
    );

    // Refused: bad options, an unknown option, a prompt past the context.
    for bad in [
        json!({"inputs": "x", "parameters": {"temperature": -1}}),
        json!({"inputs": "x", "parameters": {"top_p": 0}}),
        json!({"inputs": "x", "parameters": {"max_new_tokens": 0}}),
        json!({"inputs": "x", "parameters": {"pooling": "mean"}}),
        json!({"inputs": []}),
    ] {
        let e = run(bad.clone());
        ensure!(e.is_err(), "{what}: {bad} was accepted: {e:?}");
    }
    let long = "a b c d e f g h ".repeat(200);
    let e = run(json!({"inputs": long, "parameters": {"max_new_tokens": 2}}));
    ensure!(e.is_err(), "{what}: a prompt past the context was accepted");
    Ok(())
}

/// Every decoder fixture, every check.
pub fn all(host: &dyn Host) -> Result<()> {
    for model in ["tiny-llama", "tiny-qwen2", "tiny-qwen3", "tiny-gemma3"] {
        greedy_prompts(host, model)?;
    }
    for model in ["tiny-qwen2", "tiny-gemma3"] {
        options_and_chat(host, model)?;
    }
    Ok(())
}

/// SmolLM2-135M-Instruct from its GGUF file (Q4_1, dequantized at load) against Transformers
/// 5.24's own dequantized run of the same file (`../shared/fixtures/REGISTRY.md`, sanity run 1:
/// `from_pretrained(dir, gguf_file=…)`, greedy, CPU). Exact tokens: a plain prompt for 10 new
/// tokens, whole and streamed, and the chat template with its default system prompt, which
/// stops at end-of-sequence.
pub fn smollm2(host: &dyn Host, dir: &std::path::Path) -> Result<()> {
    let what = format!("{}: SmolLM2-135M-Instruct", host.name());
    let request = json!({"inputs": "The capital of France is", "parameters":
        {"max_new_tokens": 10, "do_sample": false, "return_full_text": false}});
    let out = host.run(Task::TextGeneration, dir, &request)?;
    ensure!(
        out[0]["generated_text"] == " Paris.\n\nThe answer is: 2"
            && out[0]["finish_reason"] == "length"
            && out[0]["generated_tokens"] == 10,
        "{what}: {out}"
    );
    let Streamed { chunks, error } = host.stream(Task::TextGeneration, dir, &request)?;
    ensure!(error.is_none(), "{what}: the stream ended with {error:?}");
    let mut streamed = Vec::new();
    for c in chunks.iter().filter(|c| c.get("output").is_some()) {
        streamed.extend(ids(&c["output"]["token_ids"])?);
    }
    ensure!(
        streamed == [7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34],
        "{what}: streamed ids {streamed:?}"
    );

    let chat = json!({"inputs": [{"role": "user", "content": "What is the capital of France?"}],
        "parameters": {"max_new_tokens": 20, "do_sample": false}});
    let out = host.run(Task::TextGeneration, dir, &chat)?;
    let conversation = out[0]["generated_text"]
        .as_array()
        .context("a conversation")?;
    let reply = conversation.last().context("a reply")?;
    ensure!(
        reply["role"] == "assistant"
            && reply["content"] == "The capital of France is Paris."
            && out[0]["finish_reason"] == "stop",
        "{what}: chat {out}"
    );
    Ok(())
}
