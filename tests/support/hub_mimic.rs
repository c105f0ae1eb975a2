//! A local server that answers like a Hugging Face hub, for tests (the real hub is unreachable
//! here): `GET /{org}/{name}/resolve/{revision}/{file}` serves the fixture model folder
//! `{name}`. Small files come with their git blob sha1 as `ETag`; `model.safetensors` is
//! answered, like the hub does for LFS files, with a 302 to a CDN path carrying `X-Linked-Etag`
//! (sha256) and `X-Linked-Size`. Repos named `corrupt-*` serve a flipped byte under the genuine
//! checksum.

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

fn handle(mut stream: TcpStream, models: &std::path::Path) {
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
    let folder = name.strip_prefix("corrupt-").unwrap_or(name);
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
        let headers = [
            ("Location".to_owned(), format!("/cdn{path}")),
            ("X-Linked-Etag".to_owned(), format!("\"{sha256}\"")),
            ("X-Linked-Size".to_owned(), bytes.len().to_string()),
        ];
        return respond(&mut stream, "302 Found", &headers, b"");
    }
    let etag = if cdn {
        format!("\"{}\"", &sha256[..32])
    } else {
        format!("\"{git}\"")
    };
    respond(&mut stream, "200 OK", &[("ETag".to_owned(), etag)], &bytes);
}

/// Starts a mimic serving the fixture models.
pub fn start() -> HubMimic {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = Arc::new(AtomicBool::new(false));
    let requests = Arc::new(AtomicUsize::new(0));
    let models: PathBuf = crate::fixtures().join("models");
    let (stop2, requests2) = (stop.clone(), requests.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stop2.load(Ordering::SeqCst) {
                break;
            }
            if let Ok(stream) = stream {
                requests2.fetch_add(1, Ordering::SeqCst);
                handle(stream, &models);
            }
        }
    });
    HubMimic {
        endpoint,
        requests,
        stop,
    }
}
