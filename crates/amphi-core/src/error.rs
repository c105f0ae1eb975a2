//! The engine's one error type. Every variant has a stable [`Error::code`] that hosts put on the
//! wire (HTTP JSON, JS `Error.code`, the wasm ABI), so clients can branch on it.

/// Everything that can go wrong inside the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file the model needs was not provided.
    #[error("{file}: missing from the model files")]
    MissingFile { file: String },

    /// A JSON file could not be parsed or has the wrong shape.
    #[error("{file}: invalid JSON: {message}")]
    InvalidJson { file: String, message: String },

    /// A configuration value is out of range or inconsistent.
    #[error("{file}: invalid configuration: {message}")]
    InvalidConfig { file: String, message: String },

    /// The `architectures` / `model_type` of `config.json` is not one the engine implements.
    #[error("config.json: unsupported architecture `{architecture}` (supported: {supported})")]
    UnsupportedArchitecture {
        architecture: String,
        supported: String,
    },

    /// The weights file is not a valid safetensors file.
    #[error("{file}: not a valid safetensors file: {message}")]
    InvalidWeights { file: String, message: String },

    /// A tensor the architecture needs is absent from the weights.
    #[error("{file}: tensor `{tensor}` is missing")]
    MissingTensor { file: String, tensor: String },

    /// A tensor has a dtype that cannot be converted to f32.
    #[error("{file}: tensor `{tensor}` has unsupported dtype {dtype} (expected F32, F16 or BF16)")]
    UnsupportedDtype {
        file: String,
        tensor: String,
        dtype: String,
    },

    /// A tensor's shape disagrees with `config.json`.
    #[error("{file}: tensor `{tensor}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        file: String,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    /// The tokenizer file could not be loaded or an input could not be tokenized.
    #[error("tokenizer: {message}")]
    Tokenizer { message: String },

    /// The request itself is wrong: empty batch, unknown option value, wrong input shape.
    #[error("invalid input: {message}")]
    InvalidInput { message: String },

    /// An image could not be decoded (corrupt, truncated, unknown format or zero-sized).
    #[error("invalid image: {message}")]
    InvalidImage { message: String },

    /// An input exceeds a configured limit.
    #[error("input too large: {message}")]
    InputTooLarge { message: String },

    /// The task cannot run on this model (for example a classification task without a classifier).
    #[error("task `{task}` is not supported by this model: {reason}")]
    UnsupportedTask { task: String, reason: String },

    /// The requested device is not available.
    #[error("device `{device}` is not available: {reason}")]
    DeviceUnavailable { device: String, reason: String },

    /// A compute backend failed. This is a fault of the engine or the device, not of the input.
    #[error("backend error: {message}")]
    Backend { message: String },

    /// The host stopped the call between two ops ([`crate::set_interrupt_check`]), for example
    /// because its deadline passed. Nothing is left half done: the model can serve the next call.
    #[error("interrupted by the host")]
    Interrupted,
}

impl Error {
    /// A stable, machine-readable identifier (`snake_case`) for this error.
    pub fn code(&self) -> &'static str {
        match self {
            Error::MissingFile { .. } => "missing_file",
            Error::InvalidJson { .. } => "invalid_json",
            Error::InvalidConfig { .. } => "invalid_config",
            Error::UnsupportedArchitecture { .. } => "unsupported_architecture",
            Error::InvalidWeights { .. } => "invalid_weights",
            Error::MissingTensor { .. } => "missing_tensor",
            Error::UnsupportedDtype { .. } => "unsupported_dtype",
            Error::ShapeMismatch { .. } => "shape_mismatch",
            Error::Tokenizer { .. } => "tokenizer_error",
            Error::InvalidInput { .. } => "invalid_input",
            Error::InvalidImage { .. } => "invalid_image",
            Error::InputTooLarge { .. } => "input_too_large",
            Error::UnsupportedTask { .. } => "unsupported_task",
            Error::DeviceUnavailable { .. } => "device_unavailable",
            Error::Backend { .. } => "backend_error",
            Error::Interrupted => "interrupted",
        }
    }

    /// Whether the error is caused by what the caller sent (model files or request), as opposed
    /// to a fault of the engine. Hosts map this to 4xx vs 5xx.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Error::Backend { .. } | Error::Interrupted)
    }

    pub(crate) fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput {
            message: message.into(),
        }
    }

    pub(crate) fn json(file: &str, err: impl std::fmt::Display) -> Self {
        Error::InvalidJson {
            file: file.to_owned(),
            message: err.to_string(),
        }
    }
}

impl From<candle_core::Error> for Error {
    fn from(err: candle_core::Error) -> Self {
        Error::Backend {
            message: err.to_string(),
        }
    }
}

/// Result alias used throughout the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;
