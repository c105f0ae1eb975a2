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
