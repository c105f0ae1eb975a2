//! The HTTP API: Hugging Face-shaped pipelines, models, health and metrics (the OpenAI-shaped
//! endpoints are `crate::openai`). Every error is JSON `{"error": {"code", "message", "type"}}` with a fitting status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::handler::HandlerWithoutStateExt as _;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use crate::metrics::Metrics;
use crate::pool::{Admission, Pool, PoolError};
use crate::runtime::ABI_VERSION;

/// Request limits enforced before anything reaches a guest. Together with the pool's size
/// they bound what one server holds (README, "Reliability"): at most `max_connections`
/// connections, each with a [`crate::listen::HEAD_BUFFER`] head buffer; at most `instances +
/// max_waiting` admitted requests, each with a body of at most `max_body_bytes` and a parse
/// of at most `max_json_values` JSON values.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct HttpLimits {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most inputs in one request.
    pub max_inputs: usize,
    /// Longest wait for a free instance.
    pub queue_timeout: Duration,
    /// Connections served at once; one more is answered 503 without being read.
    pub max_connections: usize,
    /// Longest time for a request head to arrive (and for a kept-alive connection to idle).
    pub header_timeout: Duration,
    /// Longest time for a request body to arrive (408 beyond).
    pub body_timeout: Duration,
    /// Longest stall while writing a response to a client that does not read it.
    pub write_timeout: Duration,
    /// Most JSON values (numbers, strings, arrays, objects …) in one request body (413
    /// beyond): bounds how far a parsed body may grow past its bytes.
    pub max_json_values: usize,
    /// On shutdown, how long the connections may take to finish the requests they have.
    pub drain_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            max_inputs: 64,
            queue_timeout: Duration::from_secs(30),
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_json_values: 1 << 16,
            drain_timeout: Duration::from_secs(60),
        }
    }
}

/// Shared state of the handlers.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub limits: HttpLimits,
    /// Whether `/debug/*` (guest panic and runaway hooks for tests) is served.
    pub debug_endpoints: bool,
    /// `(name, folder)` of each served model: `/models/{name}/{file}` serves its files, so that
    /// pages can load the same model in the browser.
    pub model_dirs: Arc<Vec<(String, std::path::PathBuf)>>,
    /// Static files (the playground) served at `/`.
    pub www: Option<std::path::PathBuf>,
}

/// An error response.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_input", message)
    }
}

/// The HTTP status for an engine error code.
fn status_for(code: &str) -> StatusCode {
    match code {
        "invalid_input" | "invalid_json" | "invalid_image" | "tokenizer_error"
        | "unsupported_task" => StatusCode::BAD_REQUEST,
        "input_too_large" | "payload_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "request_timeout" => StatusCode::REQUEST_TIMEOUT,
        "model_not_found" | "not_found" => StatusCode::NOT_FOUND,
        "method_not_allowed" => StatusCode::METHOD_NOT_ALLOWED,
        "overloaded" => StatusCode::TOO_MANY_REQUESTS,
        "unavailable" | "device_unavailable" => StatusCode::SERVICE_UNAVAILABLE,
        "deadline_exceeded" => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<PoolError> for ApiError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Overloaded(_) => {
                Self::new(StatusCode::TOO_MANY_REQUESTS, "overloaded", e.to_string())
            }
            PoolError::Busy(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                e.to_string(),
            ),
            PoolError::Guest(g) => Self::new(status_for(g.code()), g.code(), g.to_string()),
        }
    }
}

impl ApiError {
    /// `{"error": {"code", "message", "type"}}`.
    pub(crate) fn body(&self) -> Value {
        let kind = if self.status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        };
        json!({"error": {"code": self.code, "message": self.message, "type": kind}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        if matches!(
            self.status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response.extensions_mut().insert(ErrorCode(self.code));
        response
    }
}

#[derive(Clone)]
struct ErrorCode(String);

/// Reads the body within the size limit and the body timeout: 413 when it is larger, 408 when
/// it does not arrive in time, 400 when it breaks off.
pub(crate) async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let limits = state.limits;
    let read = axum::body::to_bytes(body, limits.max_body_bytes);
    let Ok(read) = tokio::time::timeout(limits.body_timeout, read).await else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} ms",
                limits.body_timeout.as_millis()
            ),
        ));
    };
    read.map_err(|e| {
        let too_large = std::iter::successors(
            std::error::Error::source(&e),
            |s: &&(dyn std::error::Error + 'static)| s.source(),
        )
        .any(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!("request body larger than {} bytes", limits.max_body_bytes),
            )
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })
}

/// Counts the values of a JSON text without parsing it (strings skipped, escapes included),
/// stopping at `max + 1`: each value, container or scalar, costs one.
fn json_values(bytes: &[u8], max: usize) -> usize {
    let mut count = 0;
    let mut in_string = false;
    let mut escaped = false;
    let mut in_scalar = false;
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => {
                in_string = true;
                in_scalar = false;
                count += 1;
            }
            b'[' | b'{' => {
                in_scalar = false;
                count += 1;
            }
            b',' | b':' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r' => in_scalar = false,
            _ if !in_scalar => {
                in_scalar = true;
                count += 1;
            }
            _ => {}
        }
        if count > max {
            break;
        }
    }
    count
}

pub(crate) fn parse_json_within<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    max_values: usize,
) -> Result<T, ApiError> {
    if json_values(bytes, max_values) > max_values {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request has more than {max_values} JSON values"),
        ));
    }
    parse_json(bytes)
}

fn parse_json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_json", e.to_string()))
}

pub(crate) fn model_index(state: &AppState, name: Option<&str>) -> Result<usize, ApiError> {
    let models = state.pool.models();
    match name {
        None | Some("") => Ok(0),
        Some(name) => models.iter().position(|m| m.name == name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "model_not_found",
                format!(
                    "model `{name}` is not served here (available: {})",
                    models
                        .iter()
                        .map(|m| m.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        }),
    }
}

pub(crate) fn check_count(state: &AppState, n: usize) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad_request("no inputs given"));
    }
    if n > state.limits.max_inputs {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "input_too_large",
            format!(
                "{n} inputs in one request, the limit is {}",
                state.limits.max_inputs
            ),
        ));
    }
    Ok(())
}

/// Runs `task` on a free instance (with the request's binary attachments); returns the result
/// JSON and the tokens processed.
pub(crate) async fn run_guest(
    state: &AppState,
    admission: Admission,
    model: usize,
    task: &'static str,
    request: Vec<u8>,
    attachments: Vec<Bytes>,
) -> Result<(Vec<u8>, usize), ApiError> {
    let (body, tokens) = state
        .pool
        .run(admission, state.limits.queue_timeout, move |w| {
            let attachments: Vec<&[u8]> = attachments.iter().map(|b| &b[..]).collect();
            w.run(model, task, &request, &attachments)
        })
        .await?;
    state.metrics.tokens(tokens);
    Ok((body, tokens))
}

#[derive(Deserialize)]
struct ModelQuery {
    model: Option<String>,
    /// Image classification with a raw or multipart body: how many labels.
    top_k: Option<usize>,
}

/// An image-classification body that is not JSON: the image itself (`image/*`,
/// `application/octet-stream`), or `multipart/form-data` with one or more file parts and
/// optional `model`, `top_k` and `parameters` (JSON) fields, or a `request` field holding the
/// whole JSON request whose inputs refer to the files as `{"blob": i}` (raw RGBA pixels with
/// `width` and `height`). Returns the JSON request and the attachments.
async fn image_body(
    content_type: &str,
    bytes: Bytes,
    query: &ModelQuery,
    max_json_values: usize,
) -> Result<(serde_json::Map<String, Value>, Vec<Bytes>), ApiError> {
    let mut req = serde_json::Map::new();
    let mut parameters = serde_json::Map::new();
    let mut explicit_inputs = None;
    let mut blobs = Vec::new();
    if content_type.starts_with("multipart/form-data") {
        let boundary = multer::parse_boundary(content_type)
            .map_err(|e| ApiError::bad_request(format!("multipart body: {e}")))?;
        let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(bytes) });
        let mut form = multer::Multipart::new(stream, boundary);
        let bad = |e: multer::Error| ApiError::bad_request(format!("multipart body: {e}"));
        while let Some(field) = form.next_field().await.map_err(bad)? {
            let name = field.name().unwrap_or("").to_owned();
            let is_file = field.file_name().is_some()
                || matches!(name.as_str(), "image" | "file" | "inputs" | "images");
            if is_file {
                blobs.push(field.bytes().await.map_err(bad)?);
                continue;
            }
            let text = field.text().await.map_err(bad)?;
            match name.as_str() {
                "model" => {
                    req.insert("model".into(), Value::String(text));
                }
                "top_k" => {
                    let k: usize = text
                        .trim()
                        .parse()
                        .map_err(|_| ApiError::bad_request("`top_k` must be a number"))?;
                    parameters.insert("top_k".into(), k.into());
                }
                "parameters" => parameters.extend(parse_json_within::<
                    serde_json::Map<String, Value>,
                >(
                    text.as_bytes(), max_json_values
                )?),
                "request" => {
                    let mut r: serde_json::Map<String, Value> =
                        parse_json_within(text.as_bytes(), max_json_values)?;
                    explicit_inputs = r.remove("inputs");
                    if let Some(Value::Object(p)) = r.remove("parameters") {
                        parameters.extend(p);
                    }
                    req.extend(r);
                }
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown multipart field `{other}` (expected image files, model, top_k, \
                         parameters or request)"
                    )));
                }
            }
        }
    } else {
        blobs.push(bytes);
    }
    if let (Some(k), false) = (query.top_k, parameters.contains_key("top_k")) {
        parameters.insert("top_k".into(), k.into());
    }
    let refs: Vec<Value> = (0..blobs.len()).map(|i| json!({"blob": i})).collect();
    let inputs = match (explicit_inputs, refs.as_slice()) {
        (Some(inputs), _) => inputs,
        (None, [one]) => one.clone(),
        (None, _) => Value::Array(refs),
    };
    req.insert("inputs".into(), inputs);
    req.insert("parameters".into(), Value::Object(parameters));
    Ok((req, blobs))
}

/// `POST /v1/pipelines/{task}`: `{"inputs": ..., "parameters": {...}, "model"?: name}`; for
/// `image-classification` also the image as the body, or a multipart form.
async fn pipeline(
    State(state): State<AppState>,
    Path(task): Path<String>,
    Query(query): Query<ModelQuery>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let task: &'static str = match task.as_str() {
        "feature-extraction" => "feature-extraction",
        "text-classification" | "sentiment-analysis" => "text-classification",
        "token-classification" | "ner" => "token-classification",
        "image-classification" => "image-classification",
        "text-generation" => "text-generation",
        other => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("unknown task `{other}`"),
            ));
        }
    };
    let admission = state.pool.admit()?;
    let bytes = read_body(&state, body).await?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_ascii_lowercase();
    let json_body = content_type.starts_with("application/json") || content_type.is_empty();
    let (mut req, attachments) = if task == "image-classification" && !json_body {
        image_body(&content_type, bytes, &query, state.limits.max_json_values).await?
    } else {
        (
            parse_json_within(&bytes, state.limits.max_json_values)?,
            Vec::new(),
        )
    };
    let name = match req.remove("model") {
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(ApiError::bad_request("`model` must be a string")),
        None => query.model,
    };
    let index = model_index(&state, name.as_deref())?;
    let count = match req.get("inputs") {
        Some(Value::Array(items)) => items.len(),
        Some(_) => 1,
        None => return Err(ApiError::bad_request("missing `inputs`")),
    };
    check_count(&state, count)?;
    let stream = match req.get("stream") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(_) => return Err(ApiError::bad_request("`stream` must be true or false")),
    };
    let request = serde_json::to_vec(&req).map_err(|e| ApiError::bad_request(e.to_string()))?;
    if stream {
        if !attachments.is_empty() || task == "image-classification" {
            return Err(ApiError::bad_request(
                "streaming is for text tasks (one result per input)",
            ));
        }
        let sse = crate::stream::events(&state, admission, index, task, request).await?;
        return Ok(([(DEVICE_HEADER, device_of(&state, index))], sse).into_response());
    }
    let (out, _) = run_guest(&state, admission, index, task, request, attachments).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (DEVICE_HEADER, device_of(&state, index)),
        ],
        out,
    )
        .into_response())
}

/// Every computed response names the device that ran it.
pub(crate) const DEVICE_HEADER: header::HeaderName =
    header::HeaderName::from_static("x-amphi-device");

pub(crate) fn device_of(state: &AppState, index: usize) -> &'static str {
    let gpu = state
        .pool
        .models()
        .get(index)
        .is_some_and(|m| m.info["device"] == "gpu");
    if gpu { "gpu" } else { "cpu" }
}

/// `GET /v1/models`.
async fn models(State(state): State<AppState>) -> Response {
    let data: Vec<Value> = state
        .pool
        .models()
        .iter()
        .map(|m| {
            let mut entry =
                json!({"id": m.name, "object": "model", "created": 0, "owned_by": "amphi"});
            if let (Some(obj), Some(info)) = (entry.as_object_mut(), m.info.as_object()) {
                obj.extend(info.clone());
            }
            entry
        })
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// `GET /healthz`.
async fn healthz(State(state): State<AppState>) -> Response {
    let stats = state.pool.stats();
    let runtime = state.pool.runtime();
    axum::Json(json!({
        "status": if stats.rebuilding == 0 { "ok" } else { "degraded" },
        "abi_version": ABI_VERSION,
        "artifact_sha256": runtime.artifact().sha256,
        "instances": stats,
        "models": state.pool.models().iter().map(|m| &m.name).collect::<Vec<_>>(),
    }))
    .into_response()
}

/// `GET /metrics`: Prometheus text.
async fn metrics(State(state): State<AppState>) -> Response {
    let device = state
        .pool
        .models()
        .first()
        .and_then(|m| m.info["device"].as_str())
        .unwrap_or("cpu")
        .to_owned();
    let sha = state.pool.runtime().artifact().sha256.clone();
    let text = state.metrics.render(
        state.pool.stats(),
        &[("artifact_sha256", &sha), ("device", &device)],
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// `GET /amphi.wasm`: the exact artifact bytes this host runs (browsers load the same file).
async fn artifact(State(state): State<AppState>) -> Response {
    let runtime = state.pool.runtime();
    let bytes = Bytes::from(runtime.artifact().bytes.to_vec());
    (
        [
            (header::CONTENT_TYPE, "application/wasm".to_owned()),
            (header::ETAG, format!("\"{}\"", runtime.artifact().sha256)),
        ],
        bytes,
    )
        .into_response()
}

async fn debug_hook(
    State(state): State<AppState>,
    Path(what): Path<String>,
) -> Result<Response, ApiError> {
    if !state.debug_endpoints {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "debug endpoints are off",
        ));
    }
    let spin = match what.as_str() {
        "panic" => false,
        "spin" => true,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "unknown hook",
            ));
        }
    };
    let admission = state.pool.admit()?;
    state
        .pool
        .run(admission, state.limits.queue_timeout, move |w| {
            Err::<(), _>(if spin {
                w.guest().debug_spin()
            } else {
                w.guest().debug_panic()
            })
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// A known path with another method: the documented JSON error, not axum's empty 405 (found
/// by the http_request fuzz target; `fuzz/regressions/http_request/options-405-without-json`).
async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

async fn fallback() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

/// `GET /models/{name}/{file}`: a file of a served model, for browsers that run it themselves.
/// Only the files the engine reads are served.
async fn model_file(
    State(state): State<AppState>,
    Path((name, file)): Path<(String, String)>,
    request: Request,
) -> Response {
    let Some((_, dir)) = state.model_dirs.iter().find(|(n, _)| *n == name) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("no model named {name}"),
        )
        .into_response();
    };
    let Some(path) = amphi_core::ModelFiles::local_path(dir, &file) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{name} has no file {file}"),
        )
        .into_response();
    };
    match tower_http::services::ServeFile::new(path)
        .oneshot(request)
        .await
    {
        Ok(response) => response.into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            e.to_string(),
        )
        .into_response(),
    }
}

/// The code of an error answered by something else than a handler (axum's extractors,
/// `ServeFile`'s ranges): by its status.
fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => "invalid_input",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::RANGE_NOT_SATISFIABLE => "range_not_satisfiable",
        StatusCode::TOO_MANY_REQUESTS => "overloaded",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        StatusCode::GATEWAY_TIMEOUT => "deadline_exceeded",
        s if s.is_client_error() => "invalid_request",
        _ => "internal_error",
    }
}

/// Gives an error response that no handler built (a rejected path or query, an unsatisfiable
/// range) the documented JSON body with a stable code, keeping its status and headers (`Allow`,
/// `Content-Range`); found by the http_request fuzz target
/// (`fuzz/regressions/http_request/path-not-utf8`, `range-416-without-json`).
async fn typed_error(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error())
        || response.extensions().get::<ErrorCode>().is_some()
    {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // The original text (axum's rejections explain themselves); a few KiB at most.
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_owned()
    } else {
        text
    };
    let mut typed = ApiError::new(status, code_for(status), message).into_response();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.remove(header::CONTENT_TYPE);
    for (name, value) in typed.headers() {
        parts.headers.insert(name.clone(), value.clone());
    }
    parts
        .extensions
        .extend(std::mem::take(typed.extensions_mut()));
    Response::from_parts(parts, typed.into_body())
}

/// Request log, metrics, and the cross-origin isolation headers pages need for wasm threads.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().clone();
    let started = Instant::now();
    let mut response = typed_error(next.run(request).await).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state.metrics.request(&route, status, elapsed);
    let code = response
        .extensions()
        .get::<ErrorCode>()
        .map(|c| c.0.clone());
    if let Some(code) = &code {
        state.metrics.error(code);
    }
    tracing::info!(
        method = %method,
        route = %route,
        status,
        ms = elapsed.as_secs_f64() * 1e3,
        error = code.as_deref().unwrap_or(""),
        "request"
    );
    let headers = response.headers_mut();
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-embedder-policy",
        HeaderValue::from_static("require-corp"),
    );
    response
}

/// The router.
pub fn router(state: AppState) -> Router {
    let router = Router::new()
        .route("/v1/embeddings", post(crate::openai::embeddings))
        .route(
            "/v1/chat/completions",
            post(crate::openai::chat_completions),
        )
        .route("/v1/completions", post(crate::openai::completions))
        .route("/v1/pipelines/{task}", post(pipeline))
        .route("/v1/models", get(models))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/amphi.wasm", get(artifact))
        .route("/debug/{what}", post(debug_hook))
        .route("/models/{name}/{*file}", get(model_file))
        .method_not_allowed_fallback(method_not_allowed);
    let router = match &state.www {
        Some(dir) => router.fallback_service(
            tower_http::services::ServeDir::new(dir)
                .call_fallback_on_method_not_allowed(true)
                .not_found_service(fallback.into_service()),
        ),
        None => router.fallback(fallback),
    };
    router
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::json_values;

    /// The pre-parse count: one per value, strings (with escaped quotes) skipped whole, and it
    /// stops one past the limit.
    #[test]
    fn json_values_are_counted_without_parsing() {
        for (text, want) in [
            ("1", 1),
            ("[]", 1),
            (r#"{"a": [1, 2.5e3, true, null], "b": "x,\"y\"[{"}"#, 9),
            ("  [ -1 , 2 ]  ", 3),
            (r#""\\""#, 1),
        ] {
            assert_eq!(json_values(text.as_bytes(), 100), want, "{text}");
            let parsed: serde_json::Value = serde_json::from_str(text).expect("valid");
            fn count(v: &serde_json::Value) -> usize {
                1 + match v {
                    serde_json::Value::Array(a) => a.iter().map(count).sum(),
                    // Keys count as values too in the scan.
                    serde_json::Value::Object(o) => o.values().map(|v| 1 + count(v)).sum(),
                    _ => 0,
                }
            }
            assert_eq!(count(&parsed), want, "{text}: against serde_json");
        }
        let many = format!("[{}0]", "0,".repeat(10_000));
        assert_eq!(json_values(many.as_bytes(), 50), 51);
    }
}
