//! HTTP requests through `amphi serve`'s router (`Server::router`, driven with
//! `tower::ServiceExt::oneshot`, no socket), with the tiny text classifier, token classifier and
//! ViT from the fixtures behind it, on one warm instance.
//!
//! The input is decoded into a method, a path (the real routes, or ones completed or made up by
//! the input, percent-encoded where needed), an optional query string, up to three headers
//! (content types, ranges, encodings …) and a body (the rest).
//!
//! Invariants, besides "never panics": no 500 (a guest trap or a host bug), and no other 5xx but
//! 503 and 504; every error response (4xx, 503, 504) is the documented JSON
//! `{"error": {"code", "message", "type"}}`; a successful `/v1/*` response is JSON.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderName, HeaderValue, Method, Request, StatusCode};
use tower::ServiceExt as _;

use crate::common::{Input, artifact, fixture_model, module_cache};

/// Paths of the real routes (and a few that are not).
const PATHS: [&str; 20] = [
    "/v1/embeddings",
    "/v1/pipelines/feature-extraction",
    "/v1/pipelines/text-classification",
    "/v1/pipelines/sentiment-analysis",
    "/v1/pipelines/token-classification",
    "/v1/pipelines/ner",
    "/v1/pipelines/image-classification",
    "/v1/pipelines/summarization",
    "/v1/models",
    "/healthz",
    "/metrics",
    "/amphi.wasm",
    "/debug/panic",
    "/debug/spin",
    "/models/seqcls/config.json",
    "/models/vit/preprocessor_config.json",
    "/models/tokcls/tokenizer.json",
    "/models/nope/config.json",
    "/",
    "/v1/pipelines/",
];

const METHODS: [Method; 8] = [
    Method::POST,
    Method::POST,
    Method::GET,
    Method::HEAD,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
    Method::PATCH,
];

const HEADERS: [&str; 12] = [
    "content-type",
    "content-type",
    "content-type",
    "content-length",
    "accept",
    "range",
    "if-none-match",
    "if-modified-since",
    "transfer-encoding",
    "content-encoding",
    "accept-encoding",
    "expect",
];

const CONTENT_TYPES: [&str; 10] = [
    "application/json",
    "image/png",
    "application/octet-stream",
    "multipart/form-data; boundary=X",
    "multipart/form-data; boundary=\"a b\"",
    "multipart/form-data",
    "text/plain",
    "APPLICATION/JSON; charset=utf-8",
    "",
    "image/jpeg",
];

struct Http {
    runtime: tokio::runtime::Runtime,
    router: axum::Router,
    /// Kept so that the state behind the router lives as long as the target.
    _server: amphi_serve::Server,
}

fn http() -> &'static Http {
    static HTTP: OnceLock<Http> = OnceLock::new();
    HTTP.get_or_init(|| {
        let runtime = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => panic!("tokio runtime: {e}"),
        };
        let mut limits = amphi_serve::HttpLimits::default();
        limits.max_body_bytes = 1 << 20;
        limits.queue_timeout = Duration::from_secs(10);
        let config = amphi_serve::ServeConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            artifact: artifact(),
            cache_dir: Some(module_cache()),
            models: [
                ("seqcls", "tiny-bert-seqcls"),
                ("tokcls", "tiny-bert-tokcls"),
                ("vit", "tiny-vit"),
            ]
            .into_iter()
            .map(|(name, dir)| (name.to_owned(), fixture_model(dir)))
            .collect(),
            device: "cpu".to_owned(),
            precision: "f32".to_owned(),
            max_tokens: None,
            max_image_pixels: Some(1 << 20),
            instances: 1,
            max_waiting: 4,
            guest: amphi_serve::GuestLimits {
                deadline: Duration::from_secs(10),
                ..amphi_serve::GuestLimits::default()
            },
            http: limits,
            debug_endpoints: false,
            www: None,
        };
        let server = match runtime.block_on(amphi_serve::Server::bind(&config)) {
            Ok(s) => s,
            // Set-up, not an input: the target cannot run without its server.
            Err(e) => panic!("starting the server: {e}"),
        };
        Http {
            router: server.router(),
            runtime,
            _server: server,
        }
    })
}

/// Percent-encodes what may not stand in a URI path or query as is.
fn encode(bytes: &[u8], out: &mut String) {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/%?".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

fn request(input: &mut Input<'_>) -> Option<Request<Body>> {
    let m = input.u8();
    let method = if m >= 0xf0 {
        Method::from_bytes(input.chunk()).unwrap_or(Method::POST)
    } else {
        METHODS[usize::from(m) % METHODS.len()].clone()
    };
    let p = input.u8();
    let mut uri = String::new();
    match p % 32 {
        k @ 0..20 => uri.push_str(PATHS[usize::from(k)]),
        20..24 => {
            uri.push_str("/v1/pipelines/");
            encode(input.chunk(), &mut uri);
        }
        24..28 => {
            uri.push_str("/models/");
            uri.push_str(["seqcls/", "vit/", "tokcls/", ""][usize::from(p % 4)]);
            encode(input.chunk(), &mut uri);
        }
        _ => {
            uri.push('/');
            encode(input.chunk(), &mut uri);
        }
    }
    if p >= 0x80 {
        uri.push('?');
        encode(input.chunk(), &mut uri);
    }
    let mut builder = Request::builder().method(method).uri(uri);
    for _ in 0..input.u8() % 4 {
        let h = input.u8();
        let name = if h >= 0xf0 {
            match HeaderName::from_bytes(input.chunk()) {
                Ok(n) => n,
                Err(_) => continue,
            }
        } else {
            HeaderName::from_static(HEADERS[usize::from(h) % HEADERS.len()])
        };
        let v = input.u8();
        let value = if v < 0xc0 && name == "content-type" {
            HeaderValue::from_static(CONTENT_TYPES[usize::from(v) % CONTENT_TYPES.len()])
        } else {
            match HeaderValue::from_bytes(input.chunk()) {
                Ok(v) => v,
                Err(_) => continue,
            }
        };
        builder = builder.header(name, value);
    }
    // An invalid URI never reaches the router from a socket (hyper refuses it first).
    builder.body(Body::from(input.rest().to_vec())).ok()
}

/// Whether a body is the documented error object.
fn is_error_json(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| {
        v["error"]["code"].is_string()
            && v["error"]["message"].is_string()
            && v["error"]["type"].is_string()
    })
}

/// The target.
pub fn http_request(data: &[u8]) {
    let mut input = Input(data);
    let Some(request) = request(&mut input) else {
        return;
    };
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let http = http();
    let (status, body) = http.runtime.block_on(async {
        let response = match http.router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let status = response.status();
        match axum::body::to_bytes(response.into_body(), 64 << 20).await {
            Ok(b) => (status, b),
            Err(e) => panic!("{method} {path}: {status}, and the body failed: {e}"),
        }
    });
    let shown = || String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
    if status.is_server_error() {
        assert!(
            matches!(
                status,
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT
            ),
            "{method} {path}: {status} (only 503 and 504 may be server errors): {}",
            shown()
        );
    }
    if method != Method::HEAD && (status.is_client_error() || status.is_server_error()) {
        assert!(
            is_error_json(&body),
            "{method} {path}: {status} without the JSON error body: {:?}",
            shown()
        );
    }
    if status.is_success() && path.starts_with("/v1/") && method != Method::HEAD {
        assert!(
            serde_json::from_slice::<serde_json::Value>(&body).is_ok(),
            "{method} {path}: {status} with a body that is not JSON: {:?}",
            shown()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_routes_answer() {
        http_request(b"\x02\x08\x00");
        http_request(b"\x00\x02\x00{\"inputs\": \"great\"}");
        http_request(b"\x00\x00\x00{\"input\": \"hello world\"}");
    }
}
