//! Model files in the Hugging Face layout, handed to the engine as bytes by the host.
//!
//! The engine never touches a filesystem or the network: a host (the CLI, the serverless host,
//! the browser) reads or downloads the files listed in [`ModelFiles::KNOWN`] and inserts them.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// The files of one model, keyed by their path inside the model folder (`"config.json"`,
/// `"1_Pooling/config.json"`, ...).
#[derive(Default, Clone)]
pub struct ModelFiles {
    files: BTreeMap<String, Vec<u8>>,
}

impl std::fmt::Debug for ModelFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (name, bytes) in &self.files {
            map.entry(name, &format_args!("{} bytes", bytes.len()));
        }
        map.finish()
    }
}

impl ModelFiles {
    /// Every file the engine may read. `config.json`, `model.safetensors` and `tokenizer.json`
    /// are required for text models, `preprocessor_config.json` for image models; the others
    /// refine defaults when present.
    pub const KNOWN: &'static [&'static str] = &[
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "preprocessor_config.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "generation_config.json",
        "chat_template.jinja",
        "model.gguf",
    ];

    /// An empty set of files.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a file.
    pub fn insert(&mut self, name: impl Into<String>, bytes: Vec<u8>) -> &mut Self {
        self.files.insert(name.into(), bytes);
        self
    }

    /// Appends a piece to a file, creating it: hosts that read a large file in pieces (a
    /// stream, an ABI call per piece) never hold it whole twice. `total_len`, when not 0, is the
    /// file's final size: the first piece reserves it, and pieces beyond it are refused.
    pub fn append(&mut self, name: &str, piece: &[u8], total_len: usize) -> Result<()> {
        let too_large = |message: String| Error::InputTooLarge { message };
        let file = self.files.entry(name.to_owned()).or_default();
        let end = file.len().saturating_add(piece.len());
        if total_len != 0 && end > total_len {
            return Err(too_large(format!(
                "{name}: pieces add up to more than the announced {total_len} bytes"
            )));
        }
        // Beyond the length: a no-op once the first piece has reserved the whole file.
        let additional = if file.is_empty() && total_len != 0 {
            total_len
        } else {
            piece.len()
        };
        file.try_reserve_exact(additional)
            .map_err(|_| too_large(format!("{name}: no memory for {additional} more bytes")))?;
        file.extend_from_slice(piece);
        Ok(())
    }

    /// Builder form of [`ModelFiles::insert`].
    pub fn with(mut self, name: impl Into<String>, bytes: Vec<u8>) -> Self {
        self.insert(name, bytes);
        self
    }

    /// The bytes of a file, if present.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// Removes a file and returns its bytes (used to drop the weights once they are loaded).
    pub fn take(&mut self, name: &str) -> Option<Vec<u8>> {
        self.files.remove(name)
    }

    /// The names of the files present.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// Reads the [`ModelFiles::KNOWN`] files present in a local model folder, or a GGUF file
    /// (a `*.gguf` path, or a folder without `model.safetensors` holding one `*.gguf` under any
    /// name, as llama.cpp's files are published), read as `model.gguf`. A convenience for
    /// native hosts; the engine itself never touches a filesystem (absent on wasm32).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn from_dir(dir: impl AsRef<std::path::Path>) -> std::io::Result<Self> {
        let dir = dir.as_ref();
        if dir.is_file() && dir.extension().is_some_and(|e| e == "gguf") {
            return Ok(Self::new().with("model.gguf", std::fs::read(dir)?));
        }
        if !dir.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not a model folder",
            ));
        }
        let mut files = Self::new();
        for name in Self::KNOWN {
            match std::fs::read(dir.join(name)) {
                Ok(bytes) => {
                    files.insert(*name, bytes);
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        if files.get("model.gguf").is_none()
            && let Some(path) = Self::local_path(dir, "model.gguf")
        {
            files.insert("model.gguf", std::fs::read(path)?);
        }
        Ok(files)
    }

    /// Where the file the engine knows as `name` is in a local model (a folder or a `*.gguf`
    /// file, as [`ModelFiles::from_dir`] reads it), if it is there: `model.gguf` may be any
    /// one `*.gguf` file of a folder without `model.safetensors`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn local_path(model: &std::path::Path, name: &str) -> Option<std::path::PathBuf> {
        let is_gguf =
            |p: &std::path::Path| p.is_file() && p.extension().is_some_and(|e| e == "gguf");
        if is_gguf(model) {
            return (name == "model.gguf").then(|| model.to_path_buf());
        }
        if !Self::KNOWN.contains(&name) {
            return None;
        }
        let direct = model.join(name);
        if direct.is_file() {
            return Some(direct);
        }
        if name != "model.gguf" || model.join("model.safetensors").is_file() {
            return None;
        }
        let ggufs: Vec<std::path::PathBuf> = std::fs::read_dir(model)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_gguf(p))
            .collect();
        match <[_; 1]>::try_from(ggufs) {
            Ok([one]) => Some(one),
            Err(_) => None,
        }
    }

    pub(crate) fn require(&self, name: &str) -> Result<&[u8]> {
        self.get(name).ok_or_else(|| Error::MissingFile {
            file: name.to_owned(),
        })
    }

    /// Parses a required JSON file.
    pub(crate) fn json<T: DeserializeOwned>(&self, name: &str) -> Result<T> {
        serde_json::from_slice(self.require(name)?).map_err(|e| Error::json(name, e))
    }

    /// Parses an optional JSON file: `Ok(None)` when absent, an error when present but invalid.
    pub(crate) fn optional_json<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        match self.get(name) {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(bytes)
                .map(Some)
                .map_err(|e| Error::json(name, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ModelFiles;

    #[test]
    fn pieces_add_up_to_the_file() {
        let mut files = ModelFiles::new();
        files.append("model.safetensors", b"abc", 7).expect("first");
        files
            .append("model.safetensors", b"defg", 7)
            .expect("second");
        assert_eq!(files.get("model.safetensors"), Some(&b"abcdefg"[..]));
        let e = files
            .append("model.safetensors", b"h", 7)
            .expect_err("past the announced size");
        assert_eq!(e.code(), "input_too_large");
        files.append("config.json", b"{}", 0).expect("size unknown");
        assert_eq!(files.get("config.json"), Some(&b"{}"[..]));
    }
}
