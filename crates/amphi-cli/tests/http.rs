//! The HTTP API of `amphi serve`, as a client sees it: a real server process on loopback, a real
//! HTTP client. One server serves every scenario in order (loading models once).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use amphi_core::Task;
use amphi_tests::hosts::{Host, Streamed, streaming};
use amphi_tests::{
    GoldenTensor, artifact_path, assert_close, checks, fixture_model, golden, minilm_dir, python,
};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

struct Server {
    child: Child,
    base: String,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A small static site for `--www`.
fn www_dir() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("amphi-www-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub"))?;
    std::fs::write(
        dir.join("index.html"),
        "<!doctype html><title>amphi</title>",
    )?;
    std::fs::write(dir.join("sub/app.js"), "export const x = 1;")?;
    Ok(dir)
}

fn start() -> Result<Server> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amphi"));
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--debug-endpoints"])
        // Preemptive: `/debug/spin` never reaches a check between ops.
        .args(["--deadline-ms", "5000", "--preemptive-deadlines"])
        .args(["--queue-timeout-ms", "2000"])
        .args([
            "--instances",
            "2",
            "--max-waiting",
            "10",
            "--max-inputs",
            "64",
        ])
        // Small enough that an oversized body fits the socket buffers: the 413 can be read back.
        .args(["--max-body-bytes", "65536"])
        .arg("--www")
        .arg(www_dir()?)
        .arg("--artifact")
        .arg(artifact_path())
        .arg("--model")
        .arg(format!("all-MiniLM-L6-v2={}", minilm_dir().display()));
    for name in [
        "tiny-bert",
        "tiny-bert-seqcls",
        "tiny-roberta-seqcls",
        "tiny-xlmr",
        "tiny-bert-tokcls",
        "tiny-llama",
        "tiny-qwen2",
        "tiny-qwen3",
        "tiny-gemma3",
    ] {
        cmd.arg("--model")
            .arg(format!("{name}={}", fixture_model(name).display()));
    }
    spawn(cmd)
}

/// Starts `amphi serve` and waits for its "serving on" line.
fn spawn(mut cmd: Command) -> Result<Server> {
    let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let stderr = child.stderr.take().context("stderr")?;
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.strip_prefix("amphi serving on ") {
                let _ = tx.send(addr.to_owned());
            }
            sink.lock().expect("logs").push(line);
        }
    });
    let base = match rx.recv_timeout(Duration::from_secs(240)) {
        Ok(base) => base,
        Err(_) => bail!(
            "server did not start:\n{}",
            logs.lock().expect("logs").join("\n")
        ),
    };
    Ok(Server { child, base, logs })
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

struct Reply {
    status: u16,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body)
            .with_context(|| String::from_utf8_lossy(&self.body).into_owned())
    }

    fn error_code(&self) -> Result<String> {
        Ok(self.json()?["error"]["code"]
            .as_str()
            .context("error.code")?
            .to_owned())
    }
}

impl Server {
    fn post(&self, path: &str, body: impl AsRef<[u8]>) -> Result<Reply> {
        let mut r = agent()
            .post(format!("{}{path}", self.base))
            .content_type("application/json")
            .send(body.as_ref())?;
        Ok(Reply {
            status: r.status().as_u16(),
            body: r.body_mut().with_config().limit(64 << 20).read_to_vec()?,
        })
    }

    fn post_as(&self, path: &str, content_type: &str, body: &[u8]) -> Result<Reply> {
        let mut r = agent()
            .post(format!("{}{path}", self.base))
            .content_type(content_type)
            .send(body)?;
        Ok(Reply {
            status: r.status().as_u16(),
            body: r.body_mut().with_config().limit(64 << 20).read_to_vec()?,
        })
    }

    /// A `multipart/form-data` POST of `(name, file name, bytes)` parts.
    fn post_multipart(&self, path: &str, parts: &[(&str, Option<&str>, Vec<u8>)]) -> Result<Reply> {
        const BOUNDARY: &str = "amphi-test-boundary-7d1f";
        let mut body = Vec::new();
        for (name, file, bytes) in parts {
            body.extend_from_slice(format!("--{BOUNDARY}\r\n").as_bytes());
            let disposition = match file {
                Some(f) => format!("form-data; name=\"{name}\"; filename=\"{f}\""),
                None => format!("form-data; name=\"{name}\""),
            };
            body.extend_from_slice(
                format!("Content-Disposition: {disposition}\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        self.post_as(
            path,
            &format!("multipart/form-data; boundary={BOUNDARY}"),
            &body,
        )
    }

    fn get(&self, path: &str) -> Result<Reply> {
        let mut r = agent().get(format!("{}{path}", self.base)).call()?;
        Ok(Reply {
            status: r.status().as_u16(),
            body: r.body_mut().with_config().limit(64 << 20).read_to_vec()?,
        })
    }

    fn expect(&self, reply: Reply, status: u16, code: &str) -> Result<()> {
        ensure!(
            reply.status == status,
            "expected {status}, got {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        ensure!(
            reply.error_code()? == code,
            "code {} vs {code}",
            reply.error_code()?
        );
        Ok(())
    }
}

/// The pipelines endpoint as a [`Host`]: models are addressed by their folder name.
impl Host for Server {
    fn name(&self) -> String {
        "http".into()
    }

    fn run_with(
        &self,
        task: Task,
        model: &Path,
        request: &Value,
        attachments: &[Vec<u8>],
    ) -> Result<Value> {
        let name = if model == minilm_dir() {
            "all-MiniLM-L6-v2".to_owned()
        } else {
            model
                .file_name()
                .context("name")?
                .to_string_lossy()
                .into_owned()
        };
        let path = format!("/v1/pipelines/{}?model={name}", task.as_str());
        let reply = if attachments.is_empty() {
            self.post(&path, serde_json::to_vec(request)?)?
        } else {
            // The request as a multipart field, the images as file parts.
            let mut parts = vec![("request", None, serde_json::to_vec(request)?)];
            parts.extend(
                attachments
                    .iter()
                    .map(|a| ("image", Some("image.bin"), a.clone())),
            );
            self.post_multipart(&path, &parts)?
        };
        ensure!(
            reply.status == 200,
            "{}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        reply.json()
    }

    /// `"stream": true`: the Server-Sent Events, parsed.
    fn stream(&self, task: Task, model: &Path, request: &Value) -> Result<Streamed> {
        let name = model.file_name().context("name")?.to_string_lossy();
        let path = format!("/v1/pipelines/{}?model={name}", task.as_str());
        let mut r = agent()
            .post(format!("{}{path}", self.base))
            .content_type("application/json")
            .send(serde_json::to_vec(&streaming(request))?.as_slice())?;
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let body = r.body_mut().with_config().limit(64 << 20).read_to_vec()?;
        let reply = Reply { status, body };
        let mut out = Streamed::default();
        if status != 200 {
            out.error = Some(reply.error_code()?);
            return Ok(out);
        }
        ensure!(
            content_type == "text/event-stream",
            "content type {content_type}"
        );
        let text = String::from_utf8(reply.body)?;
        let mut done = false;
        for event in text.split("\n\n").filter(|e| !e.is_empty()) {
            ensure!(!done, "an event after [DONE]: {event}");
            let (mut kind, mut data) = ("message", "");
            for line in event.lines() {
                if let Some(k) = line.strip_prefix("event: ") {
                    kind = k;
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = d;
                }
            }
            match (kind, data) {
                ("message", "[DONE]") => done = true,
                ("message", json) => out.chunks.push(serde_json::from_str(json)?),
                ("error", json) => {
                    let v: Value = serde_json::from_str(json)?;
                    out.error = v["error"]["code"].as_str().map(str::to_owned);
                    done = true;
                }
                other => bail!("unexpected event {other:?}"),
            }
        }
        ensure!(done, "the stream ended without [DONE] or an error");
        Ok(out)
    }
}

fn tokens_total(server: &Server) -> Result<u64> {
    let metrics = String::from_utf8(server.get("/metrics")?.body)?;
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("amphi_tokens_total "))
        .context("amphi_tokens_total")?
        .trim()
        .parse()
        .context("tokens")
}

/// A client that goes away mid-stream cancels the session: of 32 inputs, the server
/// computes a few past the chunk the client read (the tokens counted say how many), and the
/// instances keep serving.
fn a_disconnected_stream_stops(server: &Server) -> Result<()> {
    use std::io::{Read, Write};
    let text = "the quick brown fox jumps over the lazy dog ".repeat(4);
    let request = json!({"inputs": vec![text; 32], "model": "all-MiniLM-L6-v2"});
    let before = tokens_total(server)?;
    let reply = server.post("/v1/pipelines/feature-extraction", request.to_string())?;
    ensure!(
        reply.status == 200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let full = tokens_total(server)? - before;

    let mut body = request;
    body["stream"] = true.into();
    let body = body.to_string();
    let addr = server.base.trim_start_matches("http://");
    let mut socket = std::net::TcpStream::connect(addr)?;
    write!(
        socket,
        "POST /v1/pipelines/feature-extraction HTTP/1.1\r\nhost: {addr}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )?;
    socket.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&seen).contains("data: {") {
        let n = socket.read(&mut buf)?;
        ensure!(n > 0, "closed before the first chunk");
        seen.extend_from_slice(&buf[..n]);
    }
    ensure!(String::from_utf8_lossy(&seen).contains("text/event-stream"));
    drop(socket);

    // The next request is served; by then the cancelled session has ended.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut probes = 0;
    loop {
        probes += 1;
        let reply = server.post(
            "/v1/embeddings",
            json!({"input": "hello world", "model": "all-MiniLM-L6-v2"}).to_string(),
        )?;
        ensure!(
            reply.status == 200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        let stats = server.get("/healthz")?.json()?;
        if stats["instances"]["in_flight"] == json!(0) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let streamed = tokens_total(server)? - before - full - 4 * probes; // "hello world": 4 tokens
    ensure!(
        streamed < full / 2,
        "a cancelled stream computed {streamed} of {full} tokens"
    );
    #[allow(clippy::print_stderr)] // the figure for the issue notes
    {
        eprintln!("cancelled stream: {streamed} of {full} tokens computed");
    }
    Ok(())
}

fn golden_embedding(case: usize) -> Result<GoldenTensor> {
    GoldenTensor::parse(&golden("minilm-hello-world.json")?["cases"][case]["embedding"])
}

fn embeddings(server: &Server) -> Result<()> {
    let reply = server.post(
        "/v1/embeddings",
        json!({"input": "hello world", "model": "all-MiniLM-L6-v2"}).to_string(),
    )?;
    ensure!(
        reply.status == 200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json()?;
    ensure!(body["object"] == "list" && body["model"] == "all-MiniLM-L6-v2");
    ensure!(
        body["usage"]["prompt_tokens"] == 4,
        "usage {}",
        body["usage"]
    );
    let got: Vec<f32> = serde_json::from_value(body["data"][0]["embedding"].clone())?;
    assert_close("http embedding", &got, &golden_embedding(0)?.data, 1e-5)?;

    // Batch, base64 (little-endian f32), default model.
    let texts = golden("minilm-hello-world.json")?["cases"][1]["texts"].clone();
    let reply = server.post(
        "/v1/embeddings",
        json!({"input": texts, "encoding_format": "base64"}).to_string(),
    )?;
    let body = reply.json()?;
    let want = golden_embedding(1)?;
    for (i, item) in body["data"].as_array().context("data")?.iter().enumerate() {
        ensure!(item["index"] == i);
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(item["embedding"].as_str().context("b64")?)?;
        let v: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        assert_close("http base64 embedding", &v, want.row(i), 1e-5)?;
    }
    Ok(())
}

fn models_health_metrics_artifact(server: &Server) -> Result<()> {
    let models = server.get("/v1/models")?.json()?;
    let ids: Vec<&str> = models["data"]
        .as_array()
        .context("data")?
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    ensure!(
        ids == [
            "all-MiniLM-L6-v2",
            "tiny-bert",
            "tiny-bert-seqcls",
            "tiny-roberta-seqcls",
            "tiny-xlmr",
            "tiny-bert-tokcls",
            "tiny-llama",
            "tiny-qwen2",
            "tiny-qwen3",
            "tiny-gemma3"
        ],
        "{ids:?}"
    );
    let qwen = &models["data"][7];
    ensure!(
        qwen["tasks"] == json!(["text-generation"]) && qwen["chat_template"] == true,
        "{qwen}"
    );
    ensure!(models["data"][2]["tasks"] == json!(["feature-extraction", "text-classification"]));
    ensure!(models["data"][3]["tasks"] == json!(["feature-extraction", "text-classification"]));
    ensure!(models["data"][4]["tasks"] == json!(["feature-extraction"]));

    // The served module is the artifact, byte for byte.
    let on_disk = amphi_serve::Artifact::read(&artifact_path())?;
    let health = server.get("/healthz")?.json()?;
    ensure!(health["status"] == "ok");
    ensure!(
        health["artifact_sha256"] == on_disk.sha256.as_str(),
        "{} vs {}",
        health["artifact_sha256"],
        on_disk.sha256
    );
    let served = server.get("/amphi.wasm")?;
    ensure!(
        served.status == 200 && served.body == *on_disk.bytes,
        "served bytes differ from target/amphi.wasm"
    );

    let metrics = String::from_utf8(server.get("/metrics")?.body)?;
    for needle in [
        "amphi_requests_total{route=\"/v1/embeddings\",status=\"200\"}",
        "amphi_request_duration_seconds_bucket{route=\"/v1/embeddings\",le=\"+Inf\"}",
        "amphi_instances{state=\"idle\"}",
        "amphi_info{artifact_sha256=",
        "device=\"cpu\"",
        "amphi_tokens_total",
    ] {
        ensure!(
            metrics.contains(needle),
            "metrics lack {needle}:\n{metrics}"
        );
    }
    Ok(())
}

/// `--www` static files and `/models/{name}/{file}`, with cross-origin isolation headers.
fn static_and_model_files(server: &Server) -> Result<()> {
    let index = agent().get(format!("{}/", server.base)).call()?;
    ensure!(index.status() == 200, "GET / {}", index.status());
    ensure!(index.headers()["cross-origin-embedder-policy"] == "require-corp");
    ensure!(index.headers()["cross-origin-opener-policy"] == "same-origin");
    let js = agent().get(format!("{}/sub/app.js", server.base)).call()?;
    ensure!(
        js.headers()["content-type"]
            .to_str()?
            .contains("javascript")
    );

    let config = server.get("/models/tiny-bert/config.json")?;
    ensure!(config.status == 200);
    ensure!(config.body == std::fs::read(fixture_model("tiny-bert").join("config.json"))?);
    let mut weights = agent()
        .get(format!(
            "{}/models/all-MiniLM-L6-v2/model.safetensors",
            server.base
        ))
        .call()?;
    let served = weights
        .body_mut()
        .with_config()
        .limit(1 << 30)
        .read_to_vec()?;
    ensure!(served == std::fs::read(minilm_dir().join("model.safetensors"))?);

    server.expect(
        server.get("/models/nope/config.json")?,
        404,
        "model_not_found",
    )?;
    server.expect(server.get("/models/tiny-bert/vocab.txt")?, 404, "not_found")?;
    server.expect(
        server.get("/models/tiny-bert/..%2F..%2Fconfig.json")?,
        404,
        "not_found",
    )?;
    server.expect(server.get("/no/such/page.html")?, 404, "not_found")?;
    Ok(())
}

fn error_codes(server: &Server) -> Result<()> {
    server.expect(
        server.post("/v1/embeddings", "{not json")?,
        400,
        "invalid_json",
    )?;
    server.expect(
        server.post("/v1/embeddings", r#"{"model": "all-MiniLM-L6-v2"}"#)?,
        400,
        "invalid_json",
    )?;
    server.expect(
        server.post("/v1/embeddings", r#"{"input": [1, 2, 3]}"#)?,
        400,
        "invalid_input",
    )?;
    server.expect(
        server.post(
            "/v1/embeddings",
            r#"{"input": "x", "encoding_format": "int8"}"#,
        )?,
        400,
        "invalid_input",
    )?;
    server.expect(
        server.post("/v1/embeddings", r#"{"input": []}"#)?,
        400,
        "invalid_input",
    )?;
    server.expect(
        server.post("/v1/embeddings", r#"{"input": "x", "model": "gpt-9"}"#)?,
        404,
        "model_not_found",
    )?;
    server.expect(server.get("/v1/nothing")?, 404, "not_found")?;
    server.expect(
        server.post("/v1/pipelines/summarization", r#"{"inputs": "x"}"#)?,
        404,
        "not_found",
    )?;
    // Task the model has no head for; unknown option; engine-side limits.
    server.expect(
        server.post(
            "/v1/pipelines/text-classification?model=tiny-bert",
            r#"{"inputs": "x"}"#,
        )?,
        400,
        "unsupported_task",
    )?;
    server.expect(
        server.post(
            "/v1/pipelines/feature-extraction",
            r#"{"inputs": "x", "parameters": {"poolin": "mean"}}"#,
        )?,
        400,
        "invalid_input",
    )?;
    let many: Vec<String> = (0..65).map(|i| i.to_string()).collect();
    server.expect(
        server.post("/v1/embeddings", json!({"input": many}).to_string())?,
        413,
        "input_too_large",
    )?;
    let huge = "x".repeat(100_000);
    server.expect(
        server.post("/v1/embeddings", json!({"input": huge}).to_string())?,
        413,
        "payload_too_large",
    )?;
    Ok(())
}

fn traps_never_take_the_server_down(server: &Server) -> Result<()> {
    let reply = server.post("/debug/spin", "")?;
    server.expect(reply, 504, "deadline_exceeded")?;
    let reply = server.post("/debug/panic", "")?;
    ensure!(reply.status == 500, "{}", reply.status);
    let body = reply.json()?;
    ensure!(body["error"]["code"] == "internal_error");
    ensure!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("amphi_debug_panic called"),
        "{body}"
    );
    // The next request succeeds (the trapped instances are rebuilt in the background).
    for _ in 0..3 {
        let reply = server.post("/v1/embeddings", r#"{"input": "hello world"}"#)?;
        ensure!(
            reply.status == 200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    // Both trapped instances come back (rebuilt in the background).
    let started = Instant::now();
    loop {
        let health = server.get("/healthz")?.json()?;
        if health["instances"]["restarts"].as_u64() >= Some(2) && health["instances"]["idle"] == 2 {
            break;
        }
        ensure!(
            started.elapsed() < Duration::from_secs(120),
            "instances not rebuilt: {health}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn overload_gives_429(server: &Server) -> Result<()> {
    // 2 instances + 10 waiting slots: of 16 simultaneous runaway requests, 4 are refused at once
    // (429), the 2 running ones hit the 5 s deadline (504), the 10 waiting ones give up after the
    // 2 s queue timeout (503).
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let base = server.base.clone();
            std::thread::spawn(move || -> Result<(u16, String)> {
                let mut r = agent().post(format!("{base}/debug/spin")).send("")?;
                let status = r.status().as_u16();
                let body: Value =
                    serde_json::from_slice(&r.body_mut().read_to_vec()?).unwrap_or(Value::Null);
                Ok((
                    status,
                    body["error"]["code"].as_str().unwrap_or("").to_owned(),
                ))
            })
        })
        .collect();
    let results: Vec<(u16, String)> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect::<Result<_>>()?;
    ensure!(
        results.iter().any(|(s, c)| *s == 429 && c == "overloaded"),
        "{results:?}"
    );
    ensure!(
        results
            .iter()
            .any(|(s, c)| *s == 504 && c == "deadline_exceeded"),
        "{results:?}"
    );
    ensure!(
        results.iter().all(|(s, _)| [429, 503, 504].contains(s)),
        "{results:?}"
    );
    // And it recovers.
    std::thread::sleep(Duration::from_secs(1));
    let reply = server.post("/v1/embeddings", r#"{"input": "after the storm"}"#)?;
    ensure!(
        reply.status == 200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    Ok(())
}

fn concurrent_requests_are_not_mixed_up(server: &Server) -> Result<()> {
    let texts: Vec<String> = (0..12)
        .map(|i| format!("sentence number {i} about topic {}", i * 7))
        .collect();
    let expected: Vec<Value> = texts
        .iter()
        .map(|t| {
            Ok(server
                .post("/v1/embeddings", json!({"input": t}).to_string())?
                .json()?["data"][0]["embedding"]
                .clone())
        })
        .collect::<Result<_>>()?;
    let handles: Vec<_> = texts
        .iter()
        .cloned()
        .map(|t| {
            let base = server.base.clone();
            std::thread::spawn(move || -> Result<Value> {
                let mut r = agent()
                    .post(format!("{base}/v1/embeddings"))
                    .send(json!({"input": t}).to_string())?;
                ensure!(r.status() == 200);
                Ok(r.body_mut().read_json::<Value>()?["data"][0]["embedding"].clone())
            })
        })
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let got = h.join().expect("thread")?;
        ensure!(
            got == expected[i],
            "response {i} does not belong to its request"
        );
    }
    Ok(())
}

/// The events of a Server-Sent Events body: each `data:` JSON, up to `[DONE]`.
fn sse_events(body: &[u8]) -> Result<Vec<Value>> {
    let text = std::str::from_utf8(body)?;
    let mut out = Vec::new();
    let mut done = false;
    for event in text.split("\n\n").filter(|e| !e.is_empty()) {
        ensure!(!done, "an event after [DONE]: {event}");
        let data = event.strip_prefix("data: ").context(event.to_owned())?;
        if data == "[DONE]" {
            done = true;
        } else {
            out.push(serde_json::from_str(data)?);
        }
    }
    ensure!(done, "no [DONE]");
    Ok(out)
}

/// The pipeline's reply (6 new tokens) to the tiny-qwen2 golden chat case, which the OpenAI
/// endpoints must give too.
fn pipeline_reply(server: &Server, case: &Value) -> Result<Value> {
    let out = server
        .post(
            "/v1/pipelines/text-generation?model=tiny-qwen2",
            serde_json::to_vec(&json!({"inputs": case["messages"],
                "parameters": {"max_new_tokens": 6, "return_full_text": false}}))?,
        )?
        .json()?;
    Ok(out[0]["generated_text"].clone())
}

/// OpenAI's own Python client (`openai` from PyPI, pinned in `xtask/python-requirements.txt`)
/// parses amphi's chat completion, streamed chat completion, completion and model list: the
/// same reply as the pipeline, one `role` delta first, a `finish_reason` last, consistent usage.
fn openai_python_client(server: &Server) -> Result<()> {
    let case = &golden("tiny-qwen2.json")?["chat_template_case"];
    let want = &pipeline_reply(server, case)?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai_client.py");
    let out = Command::new(python())
        .arg(script)
        .args([
            &server.base,
            "tiny-qwen2",
            &case["messages"].to_string(),
            "6",
        ])
        .output()?;
    ensure!(
        out.status.success(),
        "the openai client failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        got["content"] == *want && got["role"] == "assistant" && got["streamed"] == *want,
        "{got} vs {want}"
    );
    ensure!(got["stream_roles"] == json!(["assistant"]), "{got}");
    let reason = &got["finish_reason"];
    ensure!(
        (reason == "stop" || reason == "length") && got["stream_finish_reason"] == *reason,
        "{got}"
    );
    let usage = &got["usage"];
    let prompt = case["input_ids"].as_array().context("ids")?.len() as u64;
    ensure!(
        usage["prompt_tokens"] == prompt
            && usage["total_tokens"].as_u64()
                == usage["completion_tokens"].as_u64().map(|c| c + prompt),
        "{got}"
    );
    ensure!(
        got["completion_text"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
            && got["completion_tokens"]
                .as_u64()
                .is_some_and(|n| (1..=6).contains(&n)),
        "{got}"
    );
    ensure!(
        got["models"]
            .as_array()
            .is_some_and(|m| m.iter().any(|id| id == "tiny-qwen2")),
        "{got}"
    );
    Ok(())
}

/// `/v1/chat/completions` and `/v1/completions`: the same text as the pipeline, OpenAI's
/// shapes (choices, usage, chunk objects with a first `role` delta and a last
/// `finish_reason`), and refusals.
fn openai_completions(server: &Server) -> Result<()> {
    let g = golden("tiny-qwen2.json")?;
    let case = &g["chat_template_case"];
    let expected = pipeline_reply(server, case)?;
    let want = expected.as_str().context("text")?;
    let request = json!({"model": "tiny-qwen2", "messages": case["messages"], "max_tokens": 6});
    let reply = server.post("/v1/chat/completions", serde_json::to_vec(&request)?)?;
    ensure!(
        reply.status == 200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let chat = reply.json()?;
    ensure!(chat["object"] == "chat.completion", "{chat}");
    ensure!(
        chat["choices"][0]["message"]["role"] == "assistant",
        "{chat}"
    );
    ensure!(
        chat["choices"][0]["message"]["content"] == want,
        "{chat} vs {want:?}"
    );
    let prompt_tokens = case["input_ids"].as_array().context("ids")?.len();
    ensure!(
        chat["usage"]["prompt_tokens"] == json!(prompt_tokens),
        "{chat}"
    );
    let completion = chat["usage"]["completion_tokens"]
        .as_u64()
        .context("usage")?;
    ensure!((1..=6).contains(&completion), "{chat}");
    ensure!(
        chat["usage"]["total_tokens"] == json!(prompt_tokens as u64 + completion),
        "{chat}"
    );

    let mut streamed = request.clone();
    streamed["stream"] = true.into();
    let reply = server.post("/v1/chat/completions", serde_json::to_vec(&streamed)?)?;
    ensure!(
        reply.status == 200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let events = sse_events(&reply.body)?;
    ensure!(events.len() >= 2, "{events:?}");
    let mut text = String::new();
    for (i, e) in events.iter().enumerate() {
        ensure!(
            e["object"] == "chat.completion.chunk" && e["id"] == events[0]["id"],
            "{e}"
        );
        let choice = &e["choices"][0];
        ensure!((i == 0) == (choice["delta"]["role"] == "assistant"), "{e}");
        ensure!(
            (i + 1 == events.len()) != choice["finish_reason"].is_null(),
            "{e}"
        );
        text.push_str(choice["delta"]["content"].as_str().context("content")?);
    }
    ensure!(text == want, "streamed {text:?} vs {want:?}");

    let llama = golden("tiny-llama.json")?;
    let p = &llama["prompts"][0];
    let reply = server.post(
        "/v1/completions",
        serde_json::to_vec(
            &json!({"model": "tiny-llama", "prompt": p["prompt"], "max_tokens": 20}),
        )?,
    )?;
    let done = reply.json()?;
    ensure!(done["object"] == "text_completion", "{done}");
    ensure!(done["choices"][0]["text"] == p["greedy_text"], "{done}");
    ensure!(done["choices"][0]["finish_reason"] == "length", "{done}");

    for (path, body, code) in [
        (
            "/v1/chat/completions",
            json!({"model": "tiny-bert", "messages": case["messages"]}),
            "invalid_input",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny-qwen2", "messages": case["messages"], "n": 2}),
            "invalid_input",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny-qwen2", "messages": []}),
            "invalid_input",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny-qwen2", "messages": [{"role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "invalid_input",
        ),
        (
            "/v1/completions",
            json!({"model": "tiny-llama", "prompt": [1, 2, 3]}),
            "invalid_input",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tiny-qwen2", "messages": case["messages"], "temperature": -1}),
            "invalid_input",
        ),
    ] {
        let reply = server.post(path, serde_json::to_vec(&body)?)?;
        server
            .expect(reply, 400, code)
            .with_context(|| format!("{path} {body}"))?;
    }
    Ok(())
}

#[test]
fn http_api() -> Result<()> {
    let server = start()?;
    checks::tiny_bert_hidden_states(&server)?;
    checks::tiny_seqcls(&server)?;
    checks::tiny_roberta_seqcls(&server)?;
    checks::tiny_xlmr(&server)?;
    checks::streaming(&server)?;
    checks::tiny_tokcls(&server)?;
    checks::minilm(&server, &minilm_dir())?;
    embeddings(&server)?;
    amphi_tests::generation::all(&server)?;
    openai_completions(&server)?;
    openai_python_client(&server)?;
    error_codes(&server)?;
    concurrent_requests_are_not_mixed_up(&server)?;
    a_disconnected_stream_stops(&server)?;
    traps_never_take_the_server_down(&server)?;
    overload_gives_429(&server)?;
    models_health_metrics_artifact(&server)?;
    static_and_model_files(&server)?;

    // Structured logs: one JSON object per line, with a request event.
    let logs = server.logs.lock().expect("logs").clone();
    ensure!(
        logs.iter()
            .any(|l| serde_json::from_str::<Value>(l)
                .is_ok_and(|v| v["fields"]["message"] == "request")),
        "no JSON request log line"
    );

    // Graceful shutdown on SIGTERM.
    let mut server = server;
    let status = Command::new("kill")
        .arg(server.child.id().to_string())
        .status()?;
    ensure!(status.success());
    let exit = server.child.wait()?;
    ensure!(exit.success(), "server exited with {exit}");
    Ok(())
}

/// `amphi serve --device gpu`: the artifact's kernels on the machine's GPU (lavapipe in CI;
/// fails without an adapter), the same embeddings, and the device in /v1/models and /metrics.
#[test]
fn http_api_on_the_gpu() -> Result<()> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amphi"));
    cmd.args([
        "serve",
        "--addr",
        "127.0.0.1:0",
        "--device",
        "gpu",
        "--instances",
        "1",
    ])
    .arg("--artifact")
    .arg(artifact_path())
    .arg("--model")
    .arg(format!("all-MiniLM-L6-v2={}", minilm_dir().display()));
    let server = spawn(cmd)?;
    embeddings(&server)?;
    let models = server.get("/v1/models")?.json()?;
    ensure!(models["data"][0]["device"] == "gpu", "{models}");
    let metrics = String::from_utf8(server.get("/metrics")?.body)?;
    ensure!(metrics.contains("device=\"gpu\""), "{metrics}");
    for (path, body) in [
        ("/v1/pipelines/feature-extraction", r#"{"inputs": "hi"}"#),
        ("/v1/embeddings", r#"{"input": "hi"}"#),
    ] {
        let reply = agent()
            .post(format!("{}{path}", server.base))
            .content_type("application/json")
            .send(body.as_bytes())?;
        ensure!(reply.status() == 200, "{path}: {}", reply.status());
        ensure!(
            reply
                .headers()
                .get("x-amphi-device")
                .is_some_and(|d| d == "gpu"),
            "{path}: {:?}",
            reply.headers()
        );
    }
    Ok(())
}

/// CRC-32 (PNG chunks), for hand-made headers.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A PNG whose header claims `w×h` pixels, followed by the first bytes of its data: a
/// decompression bomb's header (the pixel limit must refuse it before anything is decoded).
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend_from_slice(&13u32.to_be_bytes());
    png.extend_from_slice(&ihdr);
    png.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // The start of a zlib stream: a decoder has the whole header once it meets IDAT.
    let idat = b"IDAT\x78\x9c\x63\x60";
    png.extend_from_slice(&4u32.to_be_bytes());
    png.extend_from_slice(idat);
    png.extend_from_slice(&crc32(idat).to_be_bytes());
    png
}

/// Image classification over HTTP: the goldens through multipart uploads (the same check
/// bodies as every other host), the image as the raw body, base64 in JSON, and bad images.
#[test]
fn http_image_classification() -> Result<()> {
    let effnet = amphi_tests::efficientnet_dir();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_amphi"));
    cmd.args(["serve", "--addr", "127.0.0.1:0", "--instances", "1"])
        .args([
            "--max-body-bytes",
            "4000000",
            "--max-image-pixels",
            "1000000",
        ])
        .arg("--artifact")
        .arg(artifact_path())
        .arg("--model")
        .arg(format!("tiny-vit={}", fixture_model("tiny-vit").display()))
        .arg("--model")
        .arg(format!(
            "{}={}",
            effnet.file_name().context("name")?.to_string_lossy(),
            effnet.display()
        ));
    let server = spawn(cmd)?;
    checks::tiny_vit(&server)?;
    checks::efficientnet(&server, &effnet)?;
    // Extreme aspect ratios at this server's pixel limit (1 M): 200 or 413, never a 500.
    checks::hostile_images(&server, &effnet, 1_000_000)?;

    let png = std::fs::read(amphi_tests::fixtures().join("images/chelsea.png"))?;
    let path = "/v1/pipelines/image-classification?model=tiny-vit";
    // The raw body, with top_k from the query.
    let reply = server.post_as(&format!("{path}&top_k=1"), "image/png", &png)?;
    ensure!(
        reply.status == 200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let out = reply.json()?;
    ensure!(
        out.as_array().map(Vec::len) == Some(1) && out[0]["label"] == "cat",
        "{out}"
    );
    // Multipart without a request field: the files are the inputs.
    let reply = server.post_multipart(
        path,
        &[
            ("image", Some("a.png"), png.clone()),
            ("top_k", None, b"2".to_vec()),
        ],
    )?;
    ensure!(
        reply.status == 200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    ensure!(reply.json()?.as_array().map(Vec::len) == Some(2));

    // Bad images: typed errors, and the server keeps serving.
    let cases: [(&str, Vec<u8>, u16, &str); 6] = [
        (
            "garbage",
            b"definitely not an image".to_vec(),
            400,
            "invalid_image",
        ),
        ("empty", Vec::new(), 400, "invalid_image"),
        (
            "truncated",
            png[..png.len() / 3].to_vec(),
            400,
            "invalid_image",
        ),
        ("zero-sized", png_header(0, 7), 400, "invalid_image"),
        ("bomb", png_header(50_000, 50_000), 413, "input_too_large"),
        (
            "over the pixel limit",
            png_header(1001, 1000),
            413,
            "input_too_large",
        ),
    ];
    for (what, body, status, code) in cases {
        let reply = server.post_as(path, "application/octet-stream", &body)?;
        server
            .expect(reply, status, code)
            .with_context(|| what.to_owned())?;
    }
    let reply = server.post(path, json!({"inputs": "%%% not base64"}).to_string())?;
    server.expect(reply, 400, "invalid_input")?;
    let reply = server.post(path, json!({"inputs": {"blob": 3}}).to_string())?;
    server.expect(reply, 400, "invalid_input")?;
    let reply = server.post_as(path, "multipart/form-data; boundary=x", b"--x\r\nbroken")?;
    server.expect(reply, 400, "invalid_input")?;
    let reply = server.post(
        "/v1/pipelines/text-classification?model=tiny-vit",
        json!({"inputs": "hello"}).to_string(),
    )?;
    server.expect(reply, 400, "unsupported_task")?;
    let reply = server.post_as(&format!("{path}&top_k=1"), "image/png", &png)?;
    ensure!(reply.status == 200, "still serving after bad images");
    Ok(())
}
