//! Model folders from a Hugging Face-style hub: `{endpoint}/{repo}/resolve/{revision}/{file}`.
//!
//! Files land in `{cache}/hub/{org}--{name}/{revision}/` and are reused offline afterwards.
//!
//! What a download must pass before it is kept:
//! - every path component (org, name, revision, file name) is checked ([`RepoRef::validate`]):
//!   no `..`, no separators, no NUL, no leading `.`, bounded length, so nothing lands outside
//!   the cache folder;
//! - redirects stay on https (from a plain-http endpoint, e.g. a local mirror, they may also
//!   stay on http; https → http is [`Error::InsecureRedirect`]), at most 5;
//! - a file over [`Hub::with_max_file_bytes`] is refused from its stated size, and a stream that
//!   runs past the cap or past its stated length is cut ([`Error::DownloadTooLarge`],
//!   [`Error::Integrity`]);
//! - its length matches `Content-Length`/`X-Linked-Size`, and its content the hub's checksum:
//!   the sha256 of LFS files (`X-Linked-Etag`), or the git blob sha1 of small files (`ETag`).
//!   A file with neither is refused ([`Error::Unverified`]) unless [`Hub::allow_unverified`].
//!
//! Writes are atomic and safe against a second process filling the same cache: each download
//! streams into its own temporary file in the destination folder (`.{file}.{pid}.{random}.part`,
//! created exclusively), is fsynced and verified, then renamed into place. A reader sees either
//! no file or a whole, verified one; two writers never share a temporary file, and the last
//! rename of identical verified content wins. A failed check or a dropped connection leaves
//! nothing behind. Cache folders are created private to the user (0700 on Unix).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::error::Error;

/// The public Hugging Face hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The default cap on one downloaded file (16 GiB): larger files are refused.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 << 30;

/// Written into a cached folder once a download pass has completed.
const COMPLETE: &str = ".amphi-complete";

/// Redirects followed per file.
const MAX_REDIRECTS: usize = 5;

/// Longest org or repo name (the hub's own limit is 96).
const MAX_NAME: usize = 96;
/// Longest revision (a branch or tag name, or a 40-hex commit).
const MAX_REVISION: usize = 128;
/// Longest component of a file name, and whole file name.
const MAX_FILE_COMPONENT: usize = 255;
const MAX_FILE: usize = 1024;

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
    allow_unverified: bool,
    max_file_bytes: u64,
}

/// A model reference: `org/name`, optionally `@revision` (default `main`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRef {
    /// `org/name`.
    pub repo: String,
    /// Branch, tag or commit.
    pub revision: String,
}

/// Why a name is not a safe path component, `None` when it is. The hub's own naming rules: ASCII
/// letters, digits, `-`, `_`, `.`; no `--` or `..`; no leading or trailing `-`/`.` (so that
/// `org/name` → `org--name` is a one-to-one cache folder name and nothing is hidden or relative).
fn bad_name(part: &str, max: usize) -> Option<&'static str> {
    if part.is_empty() {
        return Some("empty");
    }
    if part.len() > max {
        return Some("too long");
    }
    if part.contains('\0') {
        return Some("contains NUL");
    }
    if part.contains(['/', '\\']) {
        return Some("contains a path separator");
    }
    if part.contains("..") {
        return Some("contains `..`");
    }
    if part.contains("--") {
        return Some("contains `--`");
    }
    if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) {
        return Some("starts or ends with `-` or `.`");
    }
    if !part
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Some("only ASCII letters, digits, `-`, `_` and `.` are allowed");
    }
    None
}

/// Why a file name inside a repo (`name` or `dir/name`) is unsafe, `None` when it is safe.
fn bad_file(file: &str) -> Option<&'static str> {
    if file.is_empty() {
        return Some("empty");
    }
    if file.len() > MAX_FILE {
        return Some("too long");
    }
    if file.contains('\0') {
        return Some("contains NUL");
    }
    if file.contains('\\') {
        return Some("contains a backslash");
    }
    if file.starts_with('/') {
        return Some("is absolute");
    }
    for part in file.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Some("has an empty, `.` or `..` component");
        }
        if part.len() > MAX_FILE_COMPONENT {
            return Some("has a component that is too long");
        }
        if part.starts_with('.') {
            return Some("has a hidden component (leading `.`)");
        }
        if !part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Some("only ASCII letters, digits, `-`, `_`, `.` and `/` are allowed");
        }
    }
    None
}

fn invalid(value: &str, reason: &'static str) -> Error {
    Error::InvalidHubPath {
        value: value.chars().take(200).collect(),
        reason,
    }
}

impl RepoRef {
    /// Parses `org/name[@revision]`; `None` when it is not shaped like a hub id (see
    /// [`RepoRef::validate`]).
    pub fn parse(s: &str) -> Option<Self> {
        let (repo, revision) = s.split_once('@').unwrap_or((s, "main"));
        let r = Self {
            repo: repo.to_owned(),
            revision: revision.to_owned(),
        };
        r.validate().is_ok().then_some(r)
    }

    /// Checks that the repo id and revision are safe cache path components: `org/name` with
    /// each part following the hub's naming rules (at most 96 characters), and a revision by
    /// the same rules (at most 128 characters; a `/` in a revision, as in `refs/pr/1`, is not
    /// supported).
    pub fn validate(&self) -> Result<(), Error> {
        let (org, name) = self
            .repo
            .split_once('/')
            .ok_or_else(|| invalid(&self.repo, "a repo id is `org/name`"))?;
        for part in [org, name] {
            if let Some(reason) = bad_name(part, MAX_NAME) {
                return Err(invalid(&self.repo, reason));
            }
        }
        if let Some(reason) = bad_name(&self.revision, MAX_REVISION) {
            return Err(invalid(&self.revision, reason));
        }
        Ok(())
    }
}

fn hub_err(repo: &str, message: impl Into<String>) -> Error {
    Error::Model {
        name: repo.to_owned(),
        message: message.into(),
    }
}

fn cache_err(path: &Path, source: std::io::Error) -> Error {
    Error::Cache {
        path: path.to_path_buf(),
        source,
    }
}

/// The lower-case scheme of an absolute URL.
fn scheme(url: &str) -> Option<String> {
    let (scheme, _) = url.split_once(':')?;
    let ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    ok.then(|| scheme.to_ascii_lowercase())
}

/// Whether a redirect from `from` to `to` keeps the transport as safe as the endpoint's: https
/// always; plain http only from an http endpoint and an http URL (never back from https); any
/// other scheme never.
fn redirect_allowed(endpoint_is_http: bool, from: &str, to: &str) -> bool {
    match scheme(to).as_deref() {
        Some("https") => true,
        Some("http") => endpoint_is_http && scheme(from).as_deref() == Some("http"),
        _ => false,
    }
}

/// A checksum the hub offered for a file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Checksum {
    /// Hex sha256 of the content (LFS files).
    Sha256(String),
    /// Hex sha1 of `blob {len}\0{content}` (git-tracked files).
    GitSha1(String),
}

impl Checksum {
    fn parse(etag: Option<&str>) -> Option<Self> {
        let e = etag?.to_ascii_lowercase();
        if !e.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        match e.len() {
            64 => Some(Self::Sha256(e)),
            40 => Some(Self::GitSha1(e)),
            _ => None,
        }
    }
}

/// Creates `dir` and its missing parents private to the current user (mode 0700 on Unix;
/// existing folders keep theirs).
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// A random suffix for temporary names (the OS's generator; the clock if it fails).
fn random_suffix() -> u64 {
    let mut bytes = [0u8; 8];
    match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    }
}

/// A temporary file beside its destination, created exclusively (`O_EXCL`, 0600) under a name
/// no other process uses (`.{name}.{pid}.{random}.part`); removed on drop unless persisted.
#[derive(Debug)]
pub(crate) struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// Creates the temporary file for `dest` (its folder must exist).
    pub(crate) fn new(dest: &Path) -> std::io::Result<Self> {
        let dir = dest.parent().unwrap_or_else(|| Path::new("."));
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut last = None;
        for _ in 0..8 {
            let path = dir.join(format!(
                ".{name}.{}.{:016x}.part",
                std::process::id(),
                random_suffix()
            ));
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(&path) {
                Ok(file) => {
                    return Ok(Self {
                        path,
                        file: Some(file),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("no unique temporary name")))
    }

    /// The temporary file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes bytes to the temporary file.
    pub(crate) fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.write_all(bytes),
            None => Err(std::io::Error::other("temporary file already closed")),
        }
    }

    /// Flushes the content to disk (fsync) and closes the file.
    pub(crate) fn sync(&mut self) -> std::io::Result<()> {
        if let Some(f) = self.file.take() {
            f.sync_all()?;
        }
        Ok(())
    }

    /// Syncs, then renames the file into place at `dest` (atomic within a filesystem) and syncs
    /// the folder so that the rename survives a crash.
    pub(crate) fn persist(mut self, dest: &Path) -> std::io::Result<()> {
        self.sync()?;
        std::fs::rename(&self.path, dest)?;
        self.path = PathBuf::new();
        #[cfg(unix)]
        if let Some(dir) = dest.parent()
            && let Ok(d) = File::open(dir)
        {
            let _ = d.sync_all(); // best effort: the data itself is already on disk
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.file = None;
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Writes `bytes` to `dest` atomically: a unique temporary file, fsync, rename.
pub(crate) fn write_atomically(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = TempFile::new(dest)?;
    tmp.write_all(bytes)?;
    tmp.persist(dest)
}

impl Hub {
    /// A hub at `endpoint` caching under `cache`. Downloads must carry a checksum and be at most
    /// [`DEFAULT_MAX_FILE_BYTES`].
    pub fn new(endpoint: impl Into<String>, cache: impl Into<PathBuf>) -> Self {
        Self {
            endpoint: endpoint.into().trim_end_matches('/').to_owned(),
            cache: cache.into(),
            progress: false,
            allow_unverified: false,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
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

    /// Accepts files the hub sends without a checksum (no sha256 `X-Linked-Etag`, no sha256 or
    /// git blob sha1 `ETag`); their length is still checked. Off by default: such a download is
    /// [`Error::Unverified`].
    pub fn allow_unverified(mut self, on: bool) -> Self {
        self.allow_unverified = on;
        self
    }

    /// The largest file accepted, in bytes (default [`DEFAULT_MAX_FILE_BYTES`]): a larger stated
    /// size is refused before any byte is read, and a stream that runs past it is cut.
    pub fn with_max_file_bytes(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// Where a repo's files are cached; an error when the repo id or revision is not a safe path
    /// component ([`RepoRef::validate`]).
    pub fn folder(&self, r: &RepoRef) -> Result<PathBuf, Error> {
        r.validate()?;
        Ok(self
            .cache
            .join("hub")
            .join(r.repo.replace('/', "--"))
            .join(&r.revision))
    }

    /// Returns the local folder of `r`, downloading what is not cached yet. A folder counts as
    /// cached only once every file was fetched (or found absent) in one complete pass.
    pub fn fetch(&self, r: &RepoRef) -> Result<PathBuf, Error> {
        let dir = self.folder(r)?;
        if !matches!(scheme(&self.endpoint).as_deref(), Some("https" | "http")) {
            return Err(hub_err(
                &r.repo,
                format!("hub endpoint {} is neither https nor http", self.endpoint),
            ));
        }
        let marker = dir.join(COMPLETE);
        if marker.is_file() && REQUIRED.iter().all(|f| dir.join(f).is_file()) {
            return Ok(dir);
        }
        create_private_dir(&dir).map_err(|e| cache_err(&dir, e))?;
        // Redirects are followed by hand: the hub's own answer carries the checksums
        // (`X-Linked-Etag`, `X-Linked-Size`) of files it redirects to a CDN, and each hop's
        // scheme is checked.
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .into();
        for file in amphi_core::ModelFiles::KNOWN {
            if let Some(reason) = bad_file(file) {
                return Err(invalid(file, reason));
            }
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
        write_atomically(&marker, b"").map_err(|e| cache_err(&marker, e))?;
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
        let endpoint_is_http = scheme(&self.endpoint).as_deref() == Some("http");
        let err = |m: String| hub_err(&r.repo, format!("{file}: {m}"));
        let integrity = |message: String| Error::Integrity {
            repo: r.repo.clone(),
            file: file.to_owned(),
            message,
        };
        let too_large = || Error::DownloadTooLarge {
            repo: r.repo.clone(),
            file: file.to_owned(),
            limit: self.max_file_bytes,
        };
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
        for _ in 0..=MAX_REDIRECTS {
            let answer = agent
                .get(&url)
                .call()
                .map_err(|e| err(format!("{url}: {e}")))?;
            etag = etag.or_else(|| header(&answer, "x-linked-etag"));
            expected_len = expected_len
                .or_else(|| header(&answer, "x-linked-size").and_then(|v| v.parse().ok()));
            match answer.status().as_u16() {
                200 => {
                    response = Some(answer);
                    break;
                }
                301 | 302 | 303 | 307 | 308 => {
                    let location = header(&answer, "location")
                        .ok_or_else(|| err("redirect without a location".into()))?;
                    let next = resolve_location(&url, &location);
                    if !redirect_allowed(endpoint_is_http, &url, &next) {
                        return Err(Error::InsecureRedirect {
                            repo: r.repo.clone(),
                            file: file.to_owned(),
                            from: url,
                            to: next,
                        });
                    }
                    url = next;
                }
                404 => return Ok(false),
                s => return Err(err(format!("{url}: HTTP {s}"))),
            }
        }
        let mut response = response.ok_or_else(|| err("too many redirects".into()))?;
        let etag = etag.or_else(|| header(&response, "etag"));
        let content_len: Option<u64> =
            header(&response, "content-length").and_then(|v| v.parse().ok());
        if let (Some(stated), Some(sent)) = (expected_len, content_len)
            && stated != sent
        {
            return Err(integrity(format!(
                "the hub states {stated} bytes, the server sends {sent}"
            )));
        }
        let expected_len = expected_len.or(content_len);
        // Refused before a byte of the body is read: no checksum, or too large.
        let checksum = Checksum::parse(etag.as_deref());
        if checksum.is_none() && !self.allow_unverified {
            return Err(Error::Unverified {
                repo: r.repo.clone(),
                file: file.to_owned(),
            });
        }
        if expected_len.is_some_and(|n| n > self.max_file_bytes) {
            return Err(too_large());
        }

        if let Some(parent) = dest.parent() {
            create_private_dir(parent).map_err(|e| cache_err(parent, e))?;
        }
        let mut tmp = TempFile::new(dest).map_err(|e| cache_err(dest, e))?;
        // Stream to disk, hashing as the bytes pass; the stream is cut once it runs past the
        // stated length or the cap (ureq's own limit is set past both, so the count here decides).
        let mut reader = response
            .body_mut()
            .with_config()
            .limit(self.max_file_bytes.saturating_add(1))
            .reader();
        let mut sha256 = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let (mut done, mut last) = (0u64, Instant::now());
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| err(format!("{url}: {e}")))?;
            if n == 0 {
                break;
            }
            done += n as u64;
            if let Some(len) = expected_len
                && done > len
            {
                return Err(integrity(format!("more than the stated {len} bytes")));
            }
            if done > self.max_file_bytes {
                return Err(too_large());
            }
            tmp.write_all(&buf[..n])
                .map_err(|e| cache_err(tmp.path(), e))?;
            sha256.update(&buf[..n]);
            if self.progress && last.elapsed() > Duration::from_millis(200) {
                progress(file, done, expected_len);
                last = Instant::now();
            }
        }
        tmp.sync().map_err(|e| cache_err(tmp.path(), e))?;
        if self.progress {
            progress(file, done, expected_len);
            progress_end();
        }

        if let Some(len) = expected_len
            && len != done
        {
            return Err(integrity(format!("received {done} bytes, expected {len}")));
        }
        match &checksum {
            Some(Checksum::Sha256(want)) => {
                let got = hex::encode(sha256.finalize());
                if &got != want {
                    return Err(integrity(format!("sha256 {got}, expected {want}")));
                }
            }
            Some(Checksum::GitSha1(want)) => {
                // The blob header needs the length first: hash what was written, from disk.
                let got = git_blob_sha1(tmp.path(), done).map_err(|e| cache_err(tmp.path(), e))?;
                if &got != want {
                    return Err(integrity(format!("git blob sha1 {got}, expected {want}")));
                }
            }
            None => {} // accepted unverified (`allow_unverified`): the length check is all
        }
        tmp.persist(dest).map_err(|e| cache_err(dest, e))?;
        Ok(true)
    }
}

/// The git blob sha1 (`sha1("blob {len}\0" + content)`) of a file of `len` bytes.
fn git_blob_sha1(path: &Path, len: u64) -> std::io::Result<String> {
    let mut h = Sha1::new();
    h.update(format!("blob {len}\0").as_bytes());
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
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
/// stderr when `progress`), verified (see [`Hub::allow_unverified`] for [`resolve_with`]).
pub fn resolve(source: &str, cache: &Path, progress: bool) -> Result<PathBuf, Error> {
    resolve_with(source, &Hub::from_env(cache).with_progress(progress))
}

/// [`resolve`] with a configured [`Hub`] (endpoint, cache, checks).
pub fn resolve_with(source: &str, hub: &Hub) -> Result<PathBuf, Error> {
    let path = Path::new(source);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    let id = source.strip_prefix("hub:").unwrap_or(source);
    match RepoRef::parse(id) {
        Some(r) => hub.fetch(&r),
        None => Err(hub_err(
            source,
            "neither a model folder nor a hub id (org/name[@revision])",
        )),
    }
}

/// Resolves a redirect's `Location` against the URL that answered it (absolute with any scheme,
/// scheme-relative, host-relative or path-relative).
fn resolve_location(base: &str, location: &str) -> String {
    if scheme(location).is_some() {
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
    use super::{Checksum, RepoRef, bad_file, redirect_allowed, resolve_location};

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
        // Any scheme is absolute (and then judged by `redirect_allowed`), in any case.
        assert_eq!(resolve_location(base, "ftp://x/y"), "ftp://x/y");
        assert_eq!(resolve_location(base, "HTTP://x/y"), "HTTP://x/y");
        assert_eq!(
            resolve_location(base, "file:///etc/passwd"),
            "file:///etc/passwd"
        );
    }

    #[test]
    fn redirects_never_leave_https() {
        let https = "https://hub.example/a";
        let http = "http://127.0.0.1:8000/a";
        // From an https endpoint: https only.
        assert!(redirect_allowed(false, https, "https://cdn.example/x"));
        assert!(!redirect_allowed(false, https, "http://cdn.example/x"));
        assert!(!redirect_allowed(false, https, "HTTP://cdn.example/x"));
        // From a plain-http endpoint: http may stay http, or upgrade; never come back down.
        assert!(redirect_allowed(true, http, "http://127.0.0.1:8000/cdn/x"));
        assert!(redirect_allowed(true, http, "https://cdn.example/x"));
        assert!(!redirect_allowed(true, https, "http://cdn.example/x"));
        for other in ["ftp://x/y", "file:///etc/passwd", "data:,x", "javascript:x"] {
            assert!(!redirect_allowed(true, http, other), "{other}");
            assert!(!redirect_allowed(false, https, other), "{other}");
        }
    }

    #[test]
    fn unsafe_path_components_are_refused() {
        let r = |repo: &str, revision: &str| RepoRef {
            repo: repo.into(),
            revision: revision.into(),
        };
        assert!(r("org/name", "main").validate().is_ok());
        assert!(
            r("org/name", "0123456789abcdef0123456789abcdef01234567")
                .validate()
                .is_ok()
        );
        for (repo, revision) in [
            ("org/name", ".."),
            ("org/name", "../../etc"),
            ("org/name", "a/b"),
            ("org/name", "a\\b"),
            ("org/name", "/abs"),
            ("org/name", "a\0b"),
            ("org/name", ""),
            ("org/name", &"x".repeat(129)),
            ("../x", "main"),
            ("org/../x", "main"),
            ("/org/x", "main"),
            ("org/x\\y", "main"),
            ("org\0/x", "main"),
            (&format!("org/{}", "x".repeat(97)), "main"),
        ] {
            assert!(
                r(repo, revision).validate().is_err(),
                "{repo:?}@{revision:?}"
            );
        }
        assert!(bad_file("1_Pooling/config.json").is_none());
        for f in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "a\\b",
            "a\0b",
            ".amphi-complete",
            "./x",
        ] {
            assert!(bad_file(f).is_some(), "{f:?}");
        }
        assert!(bad_file(&"x".repeat(256)).is_some());
    }

    #[test]
    fn checksums_are_hex_of_the_right_length() {
        let sha = "a".repeat(64);
        assert_eq!(
            Checksum::parse(Some(&sha)),
            Some(Checksum::Sha256(sha.clone()))
        );
        assert_eq!(
            Checksum::parse(Some(&"B".repeat(40))),
            Some(Checksum::GitSha1("b".repeat(40)))
        );
        assert_eq!(Checksum::parse(Some(&"a".repeat(32))), None);
        assert_eq!(Checksum::parse(Some(&"z".repeat(64))), None);
        assert_eq!(Checksum::parse(None), None);
    }
}
