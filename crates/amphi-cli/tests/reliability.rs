//! The load and fault suite: real `amphi serve` processes on loopback, bounded in requests and
//! time. `cargo test` runs the short form; `AMPHI_RELIABILITY=long` multiplies every count by
//! ten (by hand). Each scenario prints one line, `reliability: …`, which the README's
//! "Reliability" table is made from (`cargo test -p amphi-cli --test reliability -- --nocapture`).
//!
//! What must hold throughout: `/healthz` answers within 200 ms; no 5xx but 503 (with
//! `Retry-After`); every admitted request gets its answer; the server's memory stays within
//! its bound; the pool is back to full size with no instance rebuilt.
#![allow(clippy::print_stderr)] // each scenario reports its figures

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use amphi_tests::{artifact_path, checks, fixture_model};
use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

/// The count multiplier: 1, or 10 with `AMPHI_RELIABILITY=long`.
fn scale() -> usize {
    match std::env::var("AMPHI_RELIABILITY").as_deref() {
        Ok("long") => 10,
        _ => 1,
    }
}

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(extra: &[&str], models: &[&str]) -> Result<Self> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_amphi"));
        cmd.args(["serve", "--addr", "127.0.0.1:0", "--no-cache"])
            .arg("--artifact")
            .arg(artifact_path())
            .args(extra);
        for name in models {
            cmd.arg("--model")
                .arg(format!("{name}={}", fixture_model(name).display()));
        }
        let mut child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("amphi serving on http://") {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(240))
            .context("the server did not start")?;
        Ok(Self { child, addr })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server process, in MiB.
    fn rss_mib(&self) -> Result<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .context("VmRSS")?
            .parse()?;
        Ok(kb / 1024.0)
    }
}

/// One HTTP/1.1 exchange on a fresh connection (`connection: close`): the status, headers and
/// body, or the I/O error (a connection refused or reset before an answer).
fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status"))?;
    Ok((status, head, raw[split + 4..].to_vec()))
}

fn embed_body(inputs: usize) -> Vec<u8> {
    let texts: Vec<String> = (0..inputs)
        .map(|i| format!("sentence number {i} for the load test"))
        .collect();
    serde_json::to_vec(&json!({"input": texts, "model": "tiny-bert"})).unwrap_or_default()
}

/// Polls `/healthz` every 50 ms until stopped: the slowest answer and the failures.
struct Health {
    stop: Arc<AtomicBool>,
    worst: Arc<Mutex<Duration>>,
    failures: Arc<Mutex<Vec<String>>>,
    polls: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Health {
    fn watch(addr: &str) -> Self {
        let (stop, worst, failures, polls) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(Mutex::new(Duration::ZERO)),
            Arc::new(Mutex::new(Vec::new())),
            Arc::new(AtomicUsize::new(0)),
        );
        let thread = {
            let (addr, stop, worst, failures, polls) = (
                addr.to_owned(),
                stop.clone(),
                worst.clone(),
                failures.clone(),
                polls.clone(),
            );
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = exchange(&addr, "GET", "/healthz", b"");
                    let took = t.elapsed();
                    polls.fetch_add(1, Ordering::Relaxed);
                    let mut w = worst.lock().expect("lock");
                    *w = (*w).max(took);
                    match r {
                        Ok((200, _, _)) => {}
                        Ok((s, _, b)) => failures
                            .lock()
                            .expect("lock")
                            .push(format!("{s}: {}", String::from_utf8_lossy(&b))),
                        Err(e) => failures.lock().expect("lock").push(e.to_string()),
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Self {
            stop,
            worst,
            failures,
            polls,
            thread: Some(thread),
        }
    }

    /// Stops polling and checks the invariant: every poll answered 200 within 200 ms.
    fn finish(mut self, what: &str) -> Result<Duration> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let worst = *self.worst.lock().expect("lock");
        let failures = self.failures.lock().expect("lock").clone();
        ensure!(failures.is_empty(), "{what}: /healthz failed: {failures:?}");
        ensure!(
            worst <= Duration::from_millis(200),
            "{what}: /healthz took {worst:?}"
        );
        ensure!(self.polls.load(Ordering::Relaxed) > 0, "{what}: no poll");
        Ok(worst)
    }
}

/// After a scenario: the pool is whole (every instance idle, none rebuilt, nothing in flight).
fn pool_whole(server: &Server, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, _, body) = exchange(&server.addr, "GET", "/healthz", b"")?;
        let h: Value = serde_json::from_slice(&body)?;
        let i = &h["instances"];
        if i["idle"] == i["size"] && i["in_flight"] == 0 {
            ensure!(i["restarts"] == 0, "{what}: instances were rebuilt: {h}");
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "{what}: the pool did not settle: {h}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get((v.len() * 99).div_ceil(100).saturating_sub(1))
        .copied()
        .unwrap_or_default()
}

/// Overload at 10× capacity (1 instance + 2 waiting = 3 admitted; 30 clients at once): each
/// answer is 200, or 429/503 with `Retry-After`; nothing else; the pool comes back whole.
#[test]
fn overload_sheds_with_429_and_keeps_health() -> Result<()> {
    let server = Server::start(
        &[
            "--instances",
            "1",
            "--max-waiting",
            "2",
            "--queue-timeout-ms",
            "5000",
        ],
        &["tiny-bert"],
    )?;
    let rss_before = server.rss_mib()?;
    let health = Health::watch(&server.addr);
    let clients = 30;
    let per_client = 10 * scale();
    let body = Arc::new(embed_body(16));
    let results: Vec<_> = (0..clients)
        .map(|_| {
            let (addr, body) = (server.addr.clone(), body.clone());
            std::thread::spawn(move || {
                (0..per_client)
                    .map(|_| {
                        let t = Instant::now();
                        let r = exchange(&addr, "POST", "/v1/embeddings", &body);
                        (r, t.elapsed())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let (mut ok, mut shed, mut latencies) = (0, 0, Vec::new());
    for t in results {
        for (r, took) in t.join().map_err(|_| anyhow::anyhow!("client panicked"))? {
            let (status, head, body) = r.context("a request got no answer")?;
            match status {
                200 => {
                    ok += 1;
                    latencies.push(took);
                }
                429 | 503 => {
                    ensure!(
                        head.contains("retry-after:"),
                        "{status} without Retry-After"
                    );
                    shed += 1;
                }
                other => bail!("status {other}: {}", String::from_utf8_lossy(&body)),
            }
        }
    }
    let rss_after = server.rss_mib()?;
    let worst = health.finish("overload")?;
    pool_whole(&server, "overload")?;
    ensure!(ok > 0, "nothing was served");
    eprintln!(
        "reliability: overload 10x: {} requests offered, {ok} served (p99 {:.1} ms), {shed} shed \
         with 429/503; /healthz worst {:.1} ms; RSS {rss_before:.0} -> {rss_after:.0} MiB",
        clients * per_client,
        p99(latencies).as_secs_f64() * 1e3,
        worst.as_secs_f64() * 1e3
    );
    Ok(())
}

/// Slow clients: heads trickled a byte at a time are cut at the header timeout, bodies trickled
/// get 408 at the body timeout, idle connections beyond the cap get 503 at once, unread; the
/// server meanwhile answers others and /healthz.
#[test]
fn slow_clients_and_the_connection_cap() -> Result<()> {
    let cap = 64;
    let server = Server::start(
        &[
            "--instances",
            "1",
            "--header-timeout-ms",
            "1000",
            "--body-timeout-ms",
            "1000",
            "--max-connections",
            &cap.to_string(),
        ],
        &["tiny-bert"],
    )?;
    let health = Health::watch(&server.addr);
    let started = Instant::now();
    // Slow heads: 20 connections that send a byte every 200 ms and never finish the head.
    let slow_heads: Vec<_> = (0..20)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || -> Result<Duration> {
                let mut s = TcpStream::connect(&addr)?;
                let t = Instant::now();
                for b in b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\nx-slow: "
                    .iter()
                    .cycle()
                {
                    if s.write_all(&[*b]).is_err() {
                        return Ok(t.elapsed());
                    }
                    std::thread::sleep(Duration::from_millis(200));
                    if t.elapsed() > Duration::from_secs(20) {
                        bail!("a slow head was never cut off");
                    }
                }
                unreachable!("cycle never ends")
            })
        })
        .collect();
    // Slow bodies: the head at once, the body a byte every 100 ms: 408.
    let slow_bodies: Vec<_> = (0..5)
        .map(|_| {
            let addr = server.addr.clone();
            std::thread::spawn(move || -> Result<u16> {
                let mut s = TcpStream::connect(&addr)?;
                s.set_read_timeout(Some(Duration::from_secs(20)))?;
                s.write_all(
                    b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
                      content-length: 1000\r\n\r\n{",
                )?;
                for _ in 0..40 {
                    if s.write_all(b" ").is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let mut raw = Vec::new();
                let _ = s.read_to_end(&mut raw);
                let head = String::from_utf8_lossy(&raw);
                head.split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .with_context(|| format!("no answer: {head}"))
            })
        })
        .collect();
    // Ordinary requests meanwhile.
    let body = embed_body(4);
    for _ in 0..10 * scale() {
        let (status, _, b) = exchange(&server.addr, "POST", "/v1/embeddings", &body)?;
        ensure!(status == 200, "{status}: {}", String::from_utf8_lossy(&b));
    }
    let mut cut = Vec::new();
    for t in slow_heads {
        cut.push(t.join().map_err(|_| anyhow::anyhow!("panicked"))??);
    }
    for t in slow_bodies {
        let status = t.join().map_err(|_| anyhow::anyhow!("panicked"))??;
        ensure!(status == 408, "a slow body got {status}");
    }
    let worst_cut = cut.iter().max().copied().unwrap_or_default();
    ensure!(
        worst_cut < Duration::from_secs(5),
        "a slow head held its connection for {worst_cut:?}"
    );
    // /healthz shares the cap: stop watching before the cap is filled.
    let worst = health.finish("slow clients")?;
    // The cap: `cap` idle connections held open, then one more is refused at once.
    let held: Vec<TcpStream> = (0..cap)
        .map(|_| TcpStream::connect(&server.addr))
        .collect::<std::io::Result<_>>()?;
    std::thread::sleep(Duration::from_millis(200));
    let mut refused = 0;
    let t = Instant::now();
    for _ in 0..5 {
        if let Ok((503, head, _)) = exchange(&server.addr, "GET", "/v1/models", b"") {
            ensure!(head.contains("retry-after:"), "503 without Retry-After");
            refused += 1;
        }
    }
    ensure!(
        refused >= 3,
        "only {refused} of 5 connections over the cap were refused"
    );
    let refuse_ms = t.elapsed().as_secs_f64() * 1e3 / 5.0;
    drop(held);
    std::thread::sleep(Duration::from_millis(300));
    pool_whole(&server, "slow clients")?;
    eprintln!(
        "reliability: slow clients: 20 trickled heads cut after <= {:.1} s (timeout 1 s), 5 \
         trickled bodies answered 408, {cap} connections at the cap: {refused}/5 more refused with \
         503 in {refuse_ms:.1} ms each; /healthz worst {:.1} ms; {:.1} s",
        worst_cut.as_secs_f64(),
        worst.as_secs_f64() * 1e3,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Early disconnects: clients that send a request and close before the answer, and clients
/// that never read their answer. The server keeps serving; nothing stays in flight.
#[test]
fn early_disconnects_free_everything() -> Result<()> {
    let server = Server::start(
        &["--instances", "1", "--write-timeout-ms", "1000"],
        &["tiny-bert"],
    )?;
    let health = Health::watch(&server.addr);
    let body = embed_body(64);
    let n = 30 * scale();
    for _ in 0..n {
        let mut s = TcpStream::connect(&server.addr)?;
        let head = format!(
            "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(&body)?;
        drop(s);
    }
    // Half a body, then gone.
    for _ in 0..n {
        let mut s = TcpStream::connect(&server.addr)?;
        s.write_all(
            b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-length: 5000\r\n\r\n{\"in",
        )?;
        drop(s);
    }
    let rss = server.rss_mib()?;
    let (status, _, _) = exchange(&server.addr, "POST", "/v1/embeddings", &body)?;
    ensure!(status == 200, "after disconnects: {status}");
    let worst = health.finish("disconnects")?;
    pool_whole(&server, "disconnects")?;
    eprintln!(
        "reliability: early disconnects: {n} requests dropped before their answer, {n} mid-body; \
         served next, pool whole, RSS {rss:.0} MiB; /healthz worst {:.1} ms",
        worst.as_secs_f64() * 1e3
    );
    Ok(())
}

/// A storm of inputs that used to trap the guest (extreme aspect ratios, capacity overflow):
/// all answered 200 or 413, no instance rebuilt.
#[test]
fn a_storm_of_formerly_trapping_images() -> Result<()> {
    let server = Server::start(&["--instances", "2"], &["tiny-vit"])?;
    let health = Health::watch(&server.addr);
    let images = [checks::png(1, 2_000_000)?, checks::png(2_000_000, 1)?];
    let n = 10 * scale();
    let mut statuses = std::collections::BTreeMap::new();
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let (addr, img) = (server.addr.clone(), images[t].clone());
            std::thread::spawn(move || -> Result<Vec<u16>> {
                (0..n)
                    .map(|_| {
                        let mut s = TcpStream::connect(&addr)?;
                        s.set_read_timeout(Some(Duration::from_secs(60)))?;
                        let head = format!(
                            "POST /v1/pipelines/image-classification?model=tiny-vit HTTP/1.1\r\n\
                             host: x\r\ncontent-type: image/png\r\ncontent-length: {}\r\n\
                             connection: close\r\n\r\n",
                            img.len()
                        );
                        s.write_all(head.as_bytes())?;
                        s.write_all(&img)?;
                        let mut raw = Vec::new();
                        s.read_to_end(&mut raw)?;
                        String::from_utf8_lossy(&raw)
                            .split_whitespace()
                            .nth(1)
                            .and_then(|c| c.parse().ok())
                            .context("no status")
                    })
                    .collect()
            })
        })
        .collect();
    for t in threads {
        for s in t.join().map_err(|_| anyhow::anyhow!("panicked"))?? {
            *statuses.entry(s).or_insert(0) += 1;
        }
    }
    let worst = health.finish("storm")?;
    pool_whole(&server, "storm")?;
    ensure!(
        statuses.keys().all(|s| [200, 413].contains(s)),
        "statuses {statuses:?}"
    );
    eprintln!(
        "reliability: trap storm: {} extreme PNGs (1x2M, 2Mx1 pixels): statuses {statuses:?}, 0 \
         rebuilds; /healthz worst {:.1} ms",
        2 * n,
        worst.as_secs_f64() * 1e3
    );
    Ok(())
}

/// SIGTERM under load: the listener closes, every request already admitted gets its answer
/// (200), the process exits 0 within the drain timeout.
#[test]
fn sigterm_under_load_answers_what_it_admitted() -> Result<()> {
    let server = Server::start(&["--instances", "2", "--max-waiting", "64"], &["tiny-bert"])?;
    let body = Arc::new(embed_body(32));
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (addr, body, stop) = (server.addr.clone(), body.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut answered = Vec::new();
                let mut refused = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    match exchange(&addr, "POST", "/v1/embeddings", &body) {
                        Ok((status, _, _)) => answered.push(status),
                        // Connecting after the listener closed, or the request written into a
                        // closed socket: never admitted.
                        Err(_) => {
                            refused += 1;
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                }
                (answered, refused)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let sent = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &server.pid().to_string()])
        .status()?;
    ensure!(status.success(), "kill failed");
    let mut server = server;
    let exit = loop {
        if let Some(s) = server.child.try_wait()? {
            break s;
        }
        ensure!(
            sent.elapsed() < Duration::from_secs(60),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let exit_ms = sent.elapsed().as_secs_f64() * 1e3;
    stop.store(true, Ordering::Relaxed);
    let (mut answered, mut refused) = (std::collections::BTreeMap::new(), 0);
    for t in threads {
        let (a, r) = t.join().map_err(|_| anyhow::anyhow!("panicked"))?;
        for s in a {
            *answered.entry(s).or_insert(0) += 1;
        }
        refused += r;
    }
    ensure!(exit.success(), "exit status {exit}");
    ensure!(
        answered.keys().all(|s| *s == 200),
        "answers during shutdown: {answered:?}"
    );
    eprintln!(
        "reliability: SIGTERM under load (8 clients): exit 0 after {exit_ms:.0} ms; answers \
         {answered:?}; {refused} attempts after the listener closed (never admitted)"
    );
    Ok(())
}

/// Admission comes before the body: with the only slot held by a request whose body is still
/// on its way, another request is refused 429 from its head alone, before it sends a byte of
/// its (large) body; the first then gets 408 at the body timeout and the slot comes back.
#[test]
fn admission_comes_before_the_body() -> Result<()> {
    let server = Server::start(
        &[
            "--instances",
            "1",
            "--max-waiting",
            "0",
            "--body-timeout-ms",
            "1500",
        ],
        &["tiny-bert"],
    )?;
    let head = |len: usize| {
        format!(
            "POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: {len}\r\n\r\n"
        )
    };
    let mut first = TcpStream::connect(&server.addr)?;
    first.write_all(head(100).as_bytes())?;
    first.write_all(b"{")?;
    std::thread::sleep(Duration::from_millis(300));
    let mut second = TcpStream::connect(&server.addr)?;
    second.set_read_timeout(Some(Duration::from_secs(5)))?;
    let t = Instant::now();
    second.write_all(head(10 << 20).as_bytes())?;
    let mut buf = [0u8; 512];
    let n = second.read(&mut buf)?;
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    ensure!(
        answer.starts_with("HTTP/1.1 429"),
        "the second request, body unsent: {answer}"
    );
    let refused_ms = t.elapsed().as_secs_f64() * 1e3;
    first.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut raw = Vec::new();
    let _ = first.read_to_end(&mut raw);
    let raw = String::from_utf8_lossy(&raw);
    ensure!(raw.starts_with("HTTP/1.1 408"), "the slow body: {raw}");
    let (status, _, _) = exchange(&server.addr, "POST", "/v1/embeddings", &embed_body(2))?;
    ensure!(status == 200, "after the 408: {status}");
    eprintln!(
        "reliability: admission before the body: a 10 MiB request refused 429 from its head in \
         {refused_ms:.1} ms while the slot was held; the held request 408 at the body timeout"
    );
    Ok(())
}
