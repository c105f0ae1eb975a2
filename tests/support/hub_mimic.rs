//! A local server that answers like a Hugging Face hub, for tests (the real hub is unreachable
//! here): `GET /{org}/{name}/resolve/{revision}/{file}` serves the fixture model folder
//! `{name}`. Small files come with their git blob sha1 as `ETag`; `model.safetensors` is
//! answered, like the hub does for LFS files, with a 302 to a CDN path carrying `X-Linked-Etag`
//! (sha256) and `X-Linked-Size`. Modes, by repo name prefix:
//! - `corrupt-*`: a flipped byte under the genuine checksum;
//! - `unverified-*`: no checksum at all (no `ETag`, no `X-Linked-Etag`);
//! - `unsized-*`: the CDN sends `model.safetensors` chunked, with no stated size anywhere;
//! - `overlong-*`: `X-Linked-Size` states 100 bytes less than the CDN sends (chunked);
//! - `ftp-redirect-*`: `model.safetensors` redirects to an `ftp://` URL.
//!
//! [`HubMimic::cut_next`] makes the next N file bodies stop half-way (the connection closes).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use sha1::Sha1;
use sha2::{Digest, Sha256};

/// A running mimic; stops when dropped.
#[derive(Debug)]
pub struct HubMimic {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Requests answered so far.
    pub requests: Arc<AtomicUsize>,
    /// Bodies of `model.safetensors` still to cut half-way (the server "dies" mid-download).
    pub cut_next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl Drop for HubMimic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.endpoint.trim_start_matches("http://"));
    }
}

fn respond(stream: &mut TcpStream, status: &str, headers: &[(String, String)], body: &[u8]) {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
}

/// A chunked 200 answer with no `Content-Length`.
fn respond_chunked(stream: &mut TcpStream, headers: &[(String, String)], body: &[u8]) {
    let mut head =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n".to_owned();
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    for chunk in body.chunks(8192) {
        let _ = stream.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
        let _ = stream.write_all(chunk);
        let _ = stream.write_all(b"\r\n");
    }
    let _ = stream.write_all(b"0\r\n\r\n");
}

const MODES: &[&str] = &[
    "corrupt-",
    "unverified-",
    "unsized-",
    "overlong-",
    "ftp-redirect-",
];

fn handle(mut stream: TcpStream, models: &std::path::Path, cut_next: &AtomicUsize) {
    let mut line = String::new();
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    if reader.read_line(&mut line).is_err() {
        return;
    }
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
            break;
        }
    }
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let parts: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let (cdn, parts) = match parts.first() {
        Some(&"cdn") => (
            true,
            path.trim_start_matches("/cdn/")
                .splitn(5, '/')
                .collect::<Vec<_>>(),
        ),
        _ => (false, parts),
    };
    let [_org, name, "resolve", _rev, file] = parts[..] else {
        return respond(&mut stream, "404 Not Found", &[], b"not found");
    };
    let mode = MODES
        .iter()
        .copied()
        .find(|m| name.starts_with(m))
        .unwrap_or("");
    let folder = &name[mode.len()..];
    let Ok(mut bytes) = std::fs::read(models.join(folder).join(file)) else {
        return respond(&mut stream, "404 Not Found", &[], b"Entry not found");
    };
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let mut git = Sha1::new();
    git.update(format!("blob {}\0", bytes.len()).as_bytes());
    git.update(&bytes);
    let git = hex::encode(git.finalize());
    if name.starts_with("corrupt-") {
        bytes[0] ^= 0x20;
    }
    if file == "model.safetensors" && !cdn {
        let location = match mode {
            "ftp-redirect-" => format!("ftp://127.0.0.1/{file}"),
            _ => format!("/cdn{path}"),
        };
        let mut headers = vec![("Location".to_owned(), location)];
        if mode != "unverified-" {
            headers.push(("X-Linked-Etag".to_owned(), format!("\"{sha256}\"")));
        }
        match mode {
            "unsized-" => {}
            "overlong-" => {
                headers.push(("X-Linked-Size".to_owned(), (bytes.len() - 100).to_string()))
            }
            _ => headers.push(("X-Linked-Size".to_owned(), bytes.len().to_string())),
        }
        return respond(&mut stream, "302 Found", &headers, b"");
    }
    let etag = if cdn {
        format!("\"{}\"", &sha256[..32])
    } else {
        format!("\"{git}\"")
    };
    let headers = match mode {
        "unverified-" => vec![],
        _ => vec![("ETag".to_owned(), etag)],
    };
    if cdn && matches!(mode, "unsized-" | "overlong-") {
        return respond_chunked(&mut stream, &headers, &bytes);
    }
    if file == "model.safetensors"
        && cut_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    {
        // Dies half-way: the full length announced, half the body sent, the connection closed.
        let mut head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n",
            bytes.len()
        );
        for (k, v) in &headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let _ = stream.write_all(head.as_bytes());
        let _ = stream.write_all(&bytes[..bytes.len() / 2]);
        let _ = stream.flush();
        let _ = stream.shutdown(std::net::Shutdown::Both);
        return;
    }
    respond(&mut stream, "200 OK", &headers, &bytes);
}

/// Starts a mimic serving the fixture models.
pub fn start() -> HubMimic {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let cut_next = Arc::new(AtomicUsize::new(0));
    let models: PathBuf = crate::fixtures().join("models");
    let (stop2, requests2, cut2) = (stop.clone(), requests.clone(), cut_next.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop2.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(stream) = stream {
                requests2.fetch_add(1, Ordering::SeqCst);
                // One thread per connection: concurrent downloads really overlap.
                let (models, cut) = (models.clone(), cut2.clone());
                std::thread::spawn(move || handle(stream, &models, &cut));
            }
        }
    });
    HubMimic {
        endpoint,
        requests,
        cut_next,
        stop,
    }
}
