//! The OpenAI-shaped endpoints: `/v1/embeddings` (feature-extraction), `/v1/chat/completions`
//! and `/v1/completions` (text-generation). Each translates its request into the pipeline
//! request the guest runs, and the guest's answer (or its stream of chunks) back into
//! OpenAI's shape.
//!
//! Sampling defaults are the model's (`generation_config.json`), not OpenAI's temperature 1:
//! a request without `temperature` gets the answer the model's authors configured, the same
//! one every time when that is greedy. `n` above 1, `logprobs`, tools and images are refused.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::http::{
    ApiError, AppState, DEVICE_HEADER, check_count, device_of, model_index, parse_json_within,
    read_body, run_guest,
};

#[derive(Deserialize)]
#[serde(untagged)]
enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct EmbeddingsRequest {
    input: Value,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for OpenAI compatibility
    user: Option<String>,
}

/// `POST /v1/embeddings`: OpenAI's embeddings API.
pub(crate) async fn embeddings(
    State(state): State<AppState>,
    body: Body,
) -> Result<Response, ApiError> {
    let admission = state.pool.admit()?;
    let bytes = read_body(&state, body).await?;
    let req: EmbeddingsRequest = parse_json_within(&bytes, state.limits.max_json_values)?;
    let texts = match serde_json::from_value::<EmbeddingInput>(req.input) {
        Ok(EmbeddingInput::One(t)) => vec![t],
        Ok(EmbeddingInput::Many(v)) => v,
        Err(_) => {
            return Err(ApiError::bad_request(
                "`input` must be a string or an array of strings (token arrays are not supported)",
            ));
        }
    };
    check_count(&state, texts.len())?;
    let base64 = match req.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "encoding_format `{other}` is not supported (float or base64)"
            )));
        }
    };
    let index = model_index(&state, req.model.as_deref())?;
    let info = &state.pool.models()[index];
    if let Some(d) = req.dimensions {
        let native = info.info["hidden_size"].as_u64().unwrap_or(0) as usize;
        if d != native {
            return Err(ApiError::bad_request(format!(
                "dimensions {d} is not supported by `{}` ({native})",
                info.name
            )));
        }
    }
    // Sentence-transformers folders declare their pooling; others get mean + L2 normalisation.
    let defaults = &info.info["embedding_defaults"];
    let pooling = defaults["pooling"].as_str().unwrap_or("mean");
    let normalize = if defaults["pooling"].is_null() {
        true
    } else {
        defaults["normalize"].as_bool().unwrap_or(true)
    };
    let request =
        json!({"inputs": texts, "parameters": {"pooling": pooling, "normalize": normalize}});
    let model_name = info.name.clone();
    let request = serde_json::to_vec(&request).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let (out, tokens) = run_guest(
        &state,
        admission,
        index,
        "feature-extraction",
        request,
        Vec::new(),
    )
    .await?;
    let vectors: Vec<Vec<f32>> = serde_json::from_slice(&out).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        )
    })?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    Ok((
        [(DEVICE_HEADER, device_of(&state, index))],
        axum::Json(json!({
            "object": "list",
            "data": data,
            "model": model_name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })),
    )
        .into_response())
}

/// A stop string or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// What chat and text completions share.
#[derive(Deserialize)]
struct Sampling {
    #[serde(default)]
    model: Option<String>,
    #[serde(default, alias = "max_completion_tokens")]
    max_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    n: Option<usize>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    presence_penalty: Option<f32>,
    #[serde(default)]
    frequency_penalty: Option<f32>,
    #[serde(default)]
    #[allow(dead_code)] // accepted for OpenAI compatibility
    user: Option<String>,
    /// amphi's extensions, as in Hugging Face `generate`.
    #[serde(default)]
    top_k: Option<usize>,
    #[serde(default)]
    min_p: Option<f32>,
    #[serde(default)]
    repetition_penalty: Option<f32>,
}

impl Sampling {
    /// The pipeline's `parameters`.
    fn parameters(&self) -> Result<Value, ApiError> {
        if self.n.is_some_and(|n| n != 1) {
            return Err(ApiError::bad_request("`n` other than 1 is not supported"));
        }
        let mut p = serde_json::Map::new();
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                p.insert(k.to_owned(), v);
            }
        };
        set("max_new_tokens", self.max_tokens.map(Value::from));
        set("temperature", self.temperature.map(Value::from));
        set("top_p", self.top_p.map(Value::from));
        set("top_k", self.top_k.map(Value::from));
        set("min_p", self.min_p.map(Value::from));
        set(
            "repetition_penalty",
            self.repetition_penalty.map(Value::from),
        );
        set("presence_penalty", self.presence_penalty.map(Value::from));
        set("frequency_penalty", self.frequency_penalty.map(Value::from));
        set("seed", self.seed.map(Value::from));
        set(
            "stop",
            self.stop.as_ref().map(|s| match s {
                Stop::One(s) => json!([s]),
                Stop::Many(v) => json!(v),
            }),
        );
        p.insert("return_full_text".to_owned(), false.into());
        Ok(Value::Object(p))
    }
}

#[derive(Deserialize)]
struct ChatRequest {
    messages: Vec<ChatMessage>,
    #[serde(flatten)]
    sampling: Sampling,
}

#[derive(Deserialize)]
struct ChatMessage {
    role: String,
    content: Content,
}

/// A message's content: a string, or OpenAI's list of parts (text parts only).
#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

impl Content {
    fn text(self) -> Result<String, ApiError> {
        match self {
            Content::Text(t) => Ok(t),
            Content::Parts(parts) => parts
                .into_iter()
                .map(|p| match (p.kind.as_str(), p.text) {
                    ("text", Some(t)) => Ok(t),
                    (kind, _) => Err(ApiError::bad_request(format!(
                        "content parts of type `{kind}` are not supported (text only)"
                    ))),
                })
                .collect(),
        }
    }
}

#[derive(Deserialize)]
struct CompletionRequest {
    prompt: Value,
    #[serde(flatten)]
    sampling: Sampling,
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        e.to_string(),
    )
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh completion id.
fn completion_id(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{:x}{n:x}", now())
}

/// Which kind of completion, and how its pieces are shaped.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Text,
}

impl Kind {
    fn object(self, chunk: bool) -> &'static str {
        match (self, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Text, _) => "text_completion",
        }
    }

    fn choice(self, text: &str, finish_reason: &Value, chunk: bool, first: bool) -> Value {
        match (self, chunk) {
            (Kind::Chat, false) => json!({"index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason}),
            (Kind::Chat, true) => {
                let delta = if first {
                    json!({"role": "assistant", "content": text})
                } else {
                    json!({"content": text})
                };
                json!({"index": 0, "delta": delta, "finish_reason": finish_reason})
            }
            (Kind::Text, _) => json!({"index": 0, "text": text, "finish_reason": finish_reason}),
        }
    }
}

/// Runs a completion: the whole answer, or its chunks as Server-Sent Events.
async fn complete(
    state: AppState,
    kind: Kind,
    inputs: Value,
    sampling: Sampling,
) -> Result<Response, ApiError> {
    let admission = state.pool.admit()?;
    let index = model_index(&state, sampling.model.as_deref())?;
    let info = &state.pool.models()[index];
    let model = info.name.clone();
    let generates = info.info["tasks"]
        .as_array()
        .is_some_and(|t| t.iter().any(|t| t == "text-generation"));
    if !generates {
        return Err(ApiError::bad_request(format!(
            "`{model}` does not generate text (it runs {})",
            info.info["tasks"]
        )));
    }
    let request = json!({"inputs": inputs, "parameters": sampling.parameters()?,
        "stream": sampling.stream});
    let request = serde_json::to_vec(&request).map_err(internal)?;
    let (id, created) = (
        completion_id(if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        }),
        now(),
    );
    if sampling.stream {
        let mut first = true;
        let map = move |chunk: &[u8]| -> Option<Vec<u8>> {
            let c: Value = serde_json::from_slice(chunk).ok()?;
            let out = &c["output"];
            let text = out["text"].as_str().unwrap_or("");
            let choice = kind.choice(text, &out["finish_reason"], true, first);
            first = false;
            serde_json::to_vec(&json!({"id": id, "object": kind.object(true),
                "created": created, "model": model, "choices": [choice]}))
            .ok()
        };
        let sse = crate::stream::events_mapped(
            &state,
            admission,
            index,
            "text-generation",
            request,
            Box::new(map),
        )
        .await?;
        return Ok(([(DEVICE_HEADER, device_of(&state, index))], sse).into_response());
    }
    let (out, tokens) = run_guest(
        &state,
        admission,
        index,
        "text-generation",
        request,
        Vec::new(),
    )
    .await?;
    let out: Value = serde_json::from_slice(&out).map_err(internal)?;
    let first = &out[0];
    let text = first["generated_text"]
        .as_str()
        .ok_or_else(|| internal("no generated text"))?;
    let completion = first["generated_tokens"].as_u64().unwrap_or(0) as usize;
    let choice = kind.choice(text, &first["finish_reason"], false, true);
    Ok((
        [(DEVICE_HEADER, device_of(&state, index))],
        axum::Json(json!({
            "id": id,
            "object": kind.object(false),
            "created": created,
            "model": model,
            "choices": [choice],
            "usage": {
                "prompt_tokens": tokens.saturating_sub(completion),
                "completion_tokens": completion,
                "total_tokens": tokens,
            },
        })),
    )
        .into_response())
}

/// `POST /v1/chat/completions`: OpenAI's chat completions, with the model's chat template.
pub(crate) async fn chat_completions(
    State(state): State<AppState>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let req: ChatRequest = parse_json_within(&bytes, state.limits.max_json_values)?;
    check_count(&state, usize::from(!req.messages.is_empty()))?;
    let messages = req
        .messages
        .into_iter()
        .map(|m| Ok(json!({"role": m.role, "content": m.content.text()?})))
        .collect::<Result<Vec<_>, ApiError>>()?;
    complete(state, Kind::Chat, Value::Array(messages), req.sampling).await
}

/// `POST /v1/completions`: OpenAI's (legacy) text completions: one prompt string.
pub(crate) async fn completions(
    State(state): State<AppState>,
    body: Body,
) -> Result<Response, ApiError> {
    let bytes = read_body(&state, body).await?;
    let req: CompletionRequest = parse_json_within(&bytes, state.limits.max_json_values)?;
    let prompt = match req.prompt {
        Value::String(s) => s,
        Value::Array(ref a) if a.len() == 1 && a[0].is_string() => {
            a[0].as_str().unwrap_or_default().to_owned()
        }
        _ => {
            return Err(ApiError::bad_request(
                "`prompt` must be a string (token arrays and several prompts are not supported)",
            ));
        }
    };
    complete(state, Kind::Text, json!(prompt), req.sampling).await
}
