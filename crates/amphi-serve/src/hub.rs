//! Model folders from a Hugging Face-style hub: `{endpoint}/{repo}/resolve/{revision}/{file}`.
//!
//! Files land in `{cache}/hub/{org}--{name}/{revision}/` and are reused offline afterwards. Each
//! download is checked before it is kept: its length against `Content-Length`, and its content
//! against the hub's ETag — the sha256 of LFS files (`X-Linked-Etag`), or the git blob sha1 of
//! small files. A failed check leaves nothing in the cache.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// The public Hugging Face hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Written into a cached folder once a download pass has completed.
const COMPLETE: &str = ".amphi-complete";

/// Largest file accepted when the hub states no size (a guard against endless streams).
const MAX_UNSIZED: u64 = 16 << 30;

/// Files a model needs; a download fails without them.
/// Present in every model folder; the engine names any other missing file (`tokenizer.json`
/// of a text model, `preprocessor_config.json` of an image model) when it loads.
const REQUIRED: &[&str] = &["config.json", "model.safetensors"];

/// A hub endpoint and the local cache it fills.
#[derive(Debug, Clone)]
pub struct Hub {
    endpoint: String,
    cache: PathBuf,
    progress: bool,
}

/// A model reference: `org/name`, optionally `@revision` (default `main`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    /// `org/name`.
    pub repo: String,
    /// Branch, tag or commit.
    pub revision: String,
}

impl RepoRef {
    /// Parses `org/name[@revision]`; `None` when it is not shaped like a hub id.
    pub fn parse(s: &str) -> Option<Self> {
        let (repo, revision) = s.split_once('@').unwrap_or((s, "main"));
        // The hub's own naming rules: no `--` or `..`, no leading or trailing `-`/`.` (so that
        // `org/name` → `org--name` is a one-to-one cache folder name).
        let ok = |part: &str| {
            !part.is_empty()
                && !part.contains("--")
                && !part.contains("..")
                && !part.starts_with(['-', '.'])
                && !part.ends_with(['-', '.'])
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        let (org, name) = repo.split_once('/')?;
        (ok(org) && ok(name) && ok(revision)).then(|| Self {
            repo: repo.to_owned(),
            revision: revision.to_owned(),
        })
    }
}

fn hub_err(repo: &str, message: impl Into<String>) -> Error {
    Error::Model {
        name: repo.to_owned(),
        message: message.into(),
    }
}

impl Hub {
    /// A hub at `endpoint` caching under `cache`.
    pub fn new(endpoint: impl Into<String>, cache: impl Into<PathBuf>) -> Self {
        Self {
            endpoint: endpoint.into().trim_end_matches('/').to_owned(),
            cache: cache.into(),
            progress: false,
        }
    }

    /// The endpoint from `HF_ENDPOINT` (as the Hugging Face tools read it), else the public hub.
    pub fn from_env(cache: impl Into<PathBuf>) -> Self {
        let endpoint = std::env::var("HF_ENDPOINT").unwrap_or_else(|_| DEFAULT_ENDPOINT.to_owned());
        Self::new(endpoint, cache)
    }

    /// Prints a progress bar on stderr while downloading.
    pub fn with_progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// Where a repo's files are cached.
    pub fn folder(&self, r: &RepoRef) -> PathBuf {
        self.cache
            .join("hub")
            .join(r.repo.replace('/', "--"))
            .join(&r.revision)
    }

    /// Returns the local folder of `r`, downloading what is not cached yet. A folder counts as
    /// cached only once every file was fetched (or found absent) in one complete pass.
    pub fn fetch(&self, r: &RepoRef) -> Result<PathBuf, Error> {
        let dir = self.folder(r);
        let marker = dir.join(COMPLETE);
        if marker.is_file() && REQUIRED.iter().all(|f| dir.join(f).is_file()) {
            return Ok(dir);
        }
        std::fs::create_dir_all(&dir).map_err(|e| hub_err(&r.repo, e.to_string()))?;
        // Redirects are followed by hand: the hub's own answer carries the checksums
        // (`X-Linked-Etag`, `X-Linked-Size`) of files it redirects to a CDN.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .into();
        for file in amphi_core::ModelFiles::KNOWN {
            let dest = dir.join(file);
            if dest.is_file() {
                continue;
            }
            let required = REQUIRED.contains(file);
            match self.download(&agent, r, file, &dest)? {
                true => {}
                false if required => {
                    return Err(hub_err(
                        &r.repo,
                        format!("{file} not found at {}", self.url(r, file)),
                    ));
                }
                false => {}
            }
        }
        std::fs::write(&marker, b"").map_err(|e| hub_err(&r.repo, e.to_string()))?;
        Ok(dir)
    }

    fn url(&self, r: &RepoRef, file: &str) -> String {
        format!("{}/{}/resolve/{}/{file}", self.endpoint, r.repo, r.revision)
    }

    /// Downloads one file; `Ok(false)` when the hub has no such file (404).
    fn download(
        &self,
        agent: &ureq::Agent,
        r: &RepoRef,
        file: &str,
        dest: &Path,
    ) -> Result<bool, Error> {
        let mut url = self.url(r, file);
        let err = |m: String| hub_err(&r.repo, format!("{file}: {m}"));
        let header = |response: &ureq::http::Response<ureq::Body>, name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| {
                    v.trim_matches('"')
                        .trim_start_matches("W/")
                        .trim_matches('"')
                        .to_owned()
                })
        };
        let (mut etag, mut expected_len): (Option<String>, Option<u64>) = (None, None);
        let mut response = None;
        for _ in 0..5 {
            let r = agent
                .get(&url)
                .call()
                .map_err(|e| err(format!("{url}: {e}")))?;
            etag = etag.or_else(|| header(&r, "x-linked-etag"));
            expected_len =
                expected_len.or_else(|| header(&r, "x-linked-size").and_then(|v| v.parse().ok()));
            match r.status().as_u16() {
                200 => {
                    response = Some(r);
                    break;
                }
                301 | 302 | 303 | 307 | 308 => {
                    let location = header(&r, "location")
                        .ok_or_else(|| err("redirect without a location".into()))?;
                    url = resolve_location(&url, &location);
                }
                404 => return Ok(false),
                s => return Err(err(format!("{url}: HTTP {s}"))),
            }
        }
        let mut response = response.ok_or_else(|| err("too many redirects".into()))?;
        let etag = etag.or_else(|| header(&response, "etag"));
        let expected_len = expected_len
            .or_else(|| header(&response, "content-length").and_then(|v| v.parse().ok()));

        let part = dest.with_extension("part");
        if let Some(parent) = part.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err(e.to_string()))?;
        }
        // Stream to disk, hashing as the bytes pass; only small (git-tracked, sha1-checked) files
        // are also kept in memory, for the `blob <len>\0` header.
        let keep = etag.as_deref().is_some_and(|e| e.len() == 40);
        let limit = expected_len.map_or(MAX_UNSIZED, |n| n.saturating_add(1));
        let streamed = (|| -> Result<(u64, Sha256, Vec<u8>), String> {
            let mut out = std::fs::File::create(&part).map_err(|e| e.to_string())?;
            let mut reader = response.body_mut().with_config().limit(limit).reader();
            let (mut sha256, mut content) = (Sha256::new(), Vec::new());
            let mut buf = vec![0u8; 1 << 16];
            let (mut done, mut last) = (0u64, Instant::now());
            loop {
                let n = reader.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                sha256.update(&buf[..n]);
                if keep {
                    content.extend_from_slice(&buf[..n]);
                }
                done += n as u64;
                if self.progress && last.elapsed() > Duration::from_millis(200) {
                    progress(file, done, expected_len);
                    last = Instant::now();
                }
            }
            out.flush().map_err(|e| e.to_string())?;
            Ok((done, sha256, content))
        })();
        let (done, sha256, content) = match streamed {
            Ok(v) => v,
            Err(m) => {
                let _ = std::fs::remove_file(&part);
                return Err(err(m));
            }
        };
        if self.progress {
            progress(file, done, expected_len);
            progress_end();
        }

        let check = || -> Result<(), String> {
            if let Some(len) = expected_len
                && len != done
            {
                return Err(format!("received {done} bytes, expected {len}"));
            }
            match etag.as_deref() {
                Some(e) if e.len() == 64 => {
                    let got = hex::encode(sha256.finalize());
                    (got == e.to_ascii_lowercase())
                        .then_some(())
                        .ok_or(format!("sha256 {got}, expected {e}"))
                }
                Some(e) if e.len() == 40 => {
                    let mut h = Sha1::new();
                    h.update(format!("blob {}\0", content.len()).as_bytes());
                    h.update(&content);
                    let got = hex::encode(h.finalize());
                    (got == e.to_ascii_lowercase())
                        .then_some(())
                        .ok_or(format!("git blob sha1 {got}, expected {e}"))
                }
                _ => Ok(()), // no checksum offered: the length check above is all there is
            }
        };
        if let Err(m) = check() {
            let _ = std::fs::remove_file(&part);
            return Err(err(format!("integrity check failed: {m}")));
        }
        std::fs::rename(&part, dest).map_err(|e| err(e.to_string()))?;
        Ok(true)
    }
}

#[allow(clippy::print_stderr)] // the progress bar is for the person at the terminal
fn progress_end() {
    eprintln!();
}

#[allow(clippy::print_stderr)] // the progress bar is for the person at the terminal
fn progress(file: &str, done: u64, total: Option<u64>) {
    let mb = |b: u64| b as f64 / 1e6;
    match total {
        Some(t) if t > 0 => {
            let filled = (done * 30 / t.max(1)) as usize;
            eprint!(
                "\r{file:<24} [{:<30}] {:5.1}% {:.1}/{:.1} MB",
                "#".repeat(filled.min(30)),
                done as f64 * 100.0 / t as f64,
                mb(done),
                mb(t)
            );
        }
        _ => eprint!("\r{file:<24} {:.1} MB", mb(done)),
    }
}

/// Resolves a model source: an existing folder, `hub:org/name[@rev]`, or a bare `org/name[@rev]`
/// when no such folder exists. Hub models are downloaded into `cache` (with a progress bar on
/// stderr when `progress`).
pub fn resolve(source: &str, cache: &Path, progress: bool) -> Result<PathBuf, Error> {
    let path = Path::new(source);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let id = source.strip_prefix("hub:").unwrap_or(source);
    match RepoRef::parse(id) {
        Some(r) => Hub::from_env(cache).with_progress(progress).fetch(&r),
        None => Err(hub_err(
            source,
            "neither a model folder nor a hub id (org/name[@revision])",
        )),
    }
}

/// Resolves a redirect's `Location` against the URL that answered it (absolute, scheme-relative,
/// host-relative or path-relative).
fn resolve_location(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_owned();
    }
    let (scheme, rest) = base.split_once("://").unwrap_or(("https", base));
    if let Some(authority_path) = location.strip_prefix("//") {
        return format!("{scheme}://{authority_path}");
    }
    let host_end = rest.find('/').unwrap_or(rest.len());
    let origin = format!("{scheme}://{}", &rest[..host_end]);
    if location.starts_with('/') {
        return format!("{origin}{location}");
    }
    let path = rest[host_end..].split(['?', '#']).next().unwrap_or("");
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    let dir = if dir.is_empty() { "/" } else { dir };
    format!("{origin}{dir}{location}")
}

#[cfg(test)]
mod tests {
    use super::resolve_location;

    #[test]
    fn redirects_resolve_against_the_answering_url() {
        let base = "https://hub.example/hf/org/m/resolve/main/config.json";
        assert_eq!(
            resolve_location(base, "https://cdn.example/x"),
            "https://cdn.example/x"
        );
        assert_eq!(
            resolve_location(base, "//cdn.example/x"),
            "https://cdn.example/x"
        );
        assert_eq!(
            resolve_location(base, "/api/resolve-cache/x"),
            "https://hub.example/api/resolve-cache/x"
        );
        assert_eq!(
            resolve_location(base, "other.json"),
            "https://hub.example/hf/org/m/resolve/main/other.json"
        );
    }
}
