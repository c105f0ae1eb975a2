//! The serverless host's error types.

use std::path::PathBuf;

/// Failures of the host itself (set-up, model files, the wasm runtime).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The artifact could not be read or does not fit this host.
    #[error("{}: {message}", path.display())]
    Artifact { path: PathBuf, message: String },
    /// wasmtime failed outside a guest call.
    #[error("wasm runtime: {0}")]
    Wasmtime(String),
    /// A model folder could not be read.
    #[error("model `{name}`: {message}")]
    Model { name: String, message: String },
    /// A guest call failed while setting up.
    #[error("model `{name}`: {source}")]
    Guest {
        name: String,
        #[source]
        source: GuestError,
    },
    /// A hub redirect would leave HTTPS (or, from a plain-http endpoint, leave http/https).
    #[error(
        "model `{repo}`: {file}: refused redirect from {from} to {to} (downloads never leave https)"
    )]
    InsecureRedirect {
        repo: String,
        file: String,
        from: String,
        to: String,
    },
    /// A download is larger than the configured cap (stated up front or while streaming).
    #[error("model `{repo}`: {file}: larger than the download limit of {limit} bytes")]
    DownloadTooLarge {
        repo: String,
        file: String,
        limit: u64,
    },
    /// The hub offered no checksum to verify a download against, and unverified downloads are
    /// not allowed.
    #[error(
        "model `{repo}`: {file}: the hub sent no sha256 or git blob sha1 to check it against; \
         refusing an unverified download (--allow-unverified-downloads accepts it)"
    )]
    Unverified { repo: String, file: String },
    /// A download's length or content does not match what the hub stated.
    #[error("model `{repo}`: {file}: integrity check failed: {message}")]
    Integrity {
        repo: String,
        file: String,
        message: String,
    },
    /// A repo id, revision or file name that is not a safe path component.
    #[error("hub path `{value}`: {reason}")]
    InvalidHubPath { value: String, reason: &'static str },
    /// The cache could not be written (full disk, permissions) or is not trusted.
    #[error("cache {}: {source}", path.display())]
    Cache {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `--device gpu` and no GPU could be opened.
    #[error("no GPU available: {0}")]
    Gpu(String),
    /// The HTTP server failed.
    #[error("server: {0}")]
    Server(#[from] std::io::Error),
}

/// How a call into a guest can fail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum GuestError {
    /// The engine returned a typed error (bad input, bad model files, ...).
    #[error("{message}")]
    Engine { code: String, message: String },
    /// The call ran past its deadline and was stopped: between two ops by the engine, or
    /// anywhere by epoch interruption (`trapped`, after which the instance must be replaced).
    #[error("the request ran past its deadline and was interrupted")]
    Deadline { trapped: bool },
    /// The guest trapped (a panic, out of memory): a fault of the engine.
    #[error("the engine failed: {message}")]
    Trap { message: String },
}

impl GuestError {
    /// Whether the instance is unusable afterwards and must be replaced.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            GuestError::Engine { .. } | GuestError::Deadline { trapped: false }
        )
    }

    /// The stable error code.
    pub fn code(&self) -> &str {
        match self {
            GuestError::Engine { code, .. } => code,
            GuestError::Deadline { .. } => "deadline_exceeded",
            GuestError::Trap { .. } => "internal_error",
        }
    }
}
