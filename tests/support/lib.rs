//! Shared helpers for amphi's tests: where the fixtures are, golden-file parsing, comparisons.
//!
//! Fixtures live in `../shared/fixtures` beside the repository (override with
//! `AMPHI_FIXTURES`). The real all-MiniLM-L6-v2 model is fetched by `cargo xtask fetch-model`
//! into the amphi cache (override with `AMPHI_MINILM_DIR`); tests that need it fail with that
//! instruction when it is missing, they never skip.

pub mod checks;
pub mod generation;
pub mod hosts;
pub mod hub_mimic;
pub mod tokenizer_parity;

use std::path::{Path, PathBuf};

use amphi_core::ModelFiles;
use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `../shared/fixtures`, or `$AMPHI_FIXTURES`.
pub fn fixtures() -> PathBuf {
    std::env::var_os("AMPHI_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/fixtures"))
}

/// The amphi cache directory: `$AMPHI_CACHE_DIR`, else `$HOME/.cache/amphi`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AMPHI_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/amphi")
}

/// The all-MiniLM-L6-v2 folder (`$AMPHI_MINILM_DIR`, else in the cache). Panics with the setup
/// command when it is missing.
pub fn minilm_dir() -> PathBuf {
    let dir = std::env::var_os("AMPHI_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("models/all-MiniLM-L6-v2"));
    assert!(
        dir.join("model.safetensors").is_file(),
        "all-MiniLM-L6-v2 not found at {}: run `cargo xtask fetch-model` first \
         (or set AMPHI_MINILM_DIR)",
        dir.display()
    );
    dir
}

/// The converted EfficientNet-Lite0 folder (`$AMPHI_EFFICIENTNET_DIR`, else in the cache).
/// Panics with the setup command when it is missing.
pub fn efficientnet_dir() -> PathBuf {
    let dir = std::env::var_os("AMPHI_EFFICIENTNET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("models/efficientnet-lite0"));
    assert!(
        dir.join("model.safetensors").is_file(),
        "EfficientNet-Lite0 not found at {}: run `cargo xtask fetch-efficientnet` first \
         (or set AMPHI_EFFICIENTNET_DIR)",
        dir.display()
    );
    dir
}

/// The SmolLM2-135M-Instruct folder, one GGUF file (`$AMPHI_SMOLLM2_DIR`, else in the cache).
/// Panics with the setup command when it is missing.
pub fn smollm2_dir() -> PathBuf {
    let dir = std::env::var_os("AMPHI_SMOLLM2_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("models/SmolLM2-135M-Instruct"));
    assert!(
        dir.join("SmolLM2-135M-Instruct.Q4_1.gguf").is_file(),
        "SmolLM2-135M-Instruct not found at {}: run `cargo xtask fetch-smollm2` first \
         (or set AMPHI_SMOLLM2_DIR)",
        dir.display()
    );
    dir
}

/// The Python of `target/py`, the virtual environment `cargo xtask test` makes with the pinned
/// packages of `xtask/python-requirements.txt` (or `$AMPHI_PYTHON`). Panics with the setup
/// command when it is missing.
pub fn python() -> PathBuf {
    let python = std::env::var_os("AMPHI_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/py/bin/python"));
    assert!(
        python.is_file(),
        "{} not found: run `cargo xtask python` first (or set AMPHI_PYTHON)",
        python.display()
    );
    python
}

/// `target/amphi.wasm` (or `$AMPHI_WASM`). Panics with the build command when it is missing.
pub fn artifact_path() -> PathBuf {
    let path = std::env::var_os("AMPHI_WASM")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/amphi.wasm"));
    assert!(
        path.is_file(),
        "{} not found: run `cargo xtask artifact` first (or set AMPHI_WASM)",
        path.display()
    );
    path
}

/// A fixture model folder by name (`tiny-bert`, ...).
pub fn fixture_model(name: &str) -> PathBuf {
    fixtures().join("models").join(name)
}

/// Reads a model folder.
pub fn model_files(dir: &Path) -> Result<ModelFiles> {
    ModelFiles::from_dir(dir).with_context(|| format!("reading {}", dir.display()))
}

/// Parses a golden JSON file (`golden/<name>`).
pub fn golden(name: &str) -> Result<Value> {
    let path = fixtures().join("golden").join(name);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// A golden tensor object `{"shape", "dtype", "data"}` as f32.
#[derive(Debug, Clone)]
pub struct GoldenTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl GoldenTensor {
    pub fn parse(v: &Value) -> Result<Self> {
        let shape: Vec<usize> = serde_json::from_value(v["shape"].clone())?;
        let data: Vec<f64> = serde_json::from_value(v["data"].clone())?;
        ensure!(
            shape.iter().product::<usize>() == data.len(),
            "golden tensor shape {shape:?} does not match {} values",
            data.len()
        );
        Ok(Self {
            shape,
            data: data.into_iter().map(|x| x as f32).collect(),
        })
    }

    /// Row `i` of the outermost dimension.
    pub fn row(&self, i: usize) -> &[f32] {
        let n = self.data.len() / self.shape[0];
        &self.data[i * n..(i + 1) * n]
    }
}

/// Largest absolute difference (NaN if any value is NaN); errors when lengths differ.
pub fn max_abs_diff(got: &[f32], want: &[f32]) -> Result<f32> {
    ensure!(
        got.len() == want.len(),
        "length {} vs expected {}",
        got.len(),
        want.len()
    );
    Ok(got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, |worst, d| {
            if d.is_nan() || worst.is_nan() {
                f32::NAN
            } else {
                worst.max(d)
            }
        }))
}

/// Fails unless every value is within `tol` of the reference.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f32) -> Result<f32> {
    let diff = max_abs_diff(got, want).with_context(|| what.to_owned())?;
    if diff.is_nan() || diff > tol {
        bail!("{what}: max abs diff {diff:e} exceeds tolerance {tol:e}");
    }
    Ok(diff)
}

/// The inputs of a golden text case: texts, or text pairs.
pub fn case_inputs(case: &Value) -> Result<Vec<amphi_core::TextInput>> {
    let texts: Vec<String> = serde_json::from_value(case["texts"].clone())?;
    Ok(match case.get("text_pairs") {
        Some(pairs) => {
            let pairs: Vec<String> = serde_json::from_value(pairs.clone())?;
            texts
                .into_iter()
                .zip(pairs)
                .map(|(text, text_pair)| amphi_core::TextInput::Pair { text, text_pair })
                .collect()
        }
        None => texts.into_iter().map(amphi_core::TextInput::Text).collect(),
    })
}

/// `attention_mask` of a golden case, `[batch][seq]`.
pub fn case_mask(case: &Value) -> Result<Vec<Vec<u32>>> {
    Ok(serde_json::from_value(case["attention_mask"].clone())?)
}

/// One tensor of a safetensors file, as raw little-endian bytes.
#[derive(Debug, Clone)]
pub struct RawEntry {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

/// Splits a safetensors file into its tensors (an independent reader of the format: 8-byte
/// little-endian header length, JSON header, data).
pub fn read_safetensors(bytes: &[u8]) -> Result<Vec<RawEntry>> {
    let header_len = u64::from_le_bytes(bytes[..8].try_into()?) as usize;
    let header: serde_json::Map<String, Value> = serde_json::from_slice(&bytes[8..8 + header_len])?;
    let data = &bytes[8 + header_len..];
    let mut out = Vec::new();
    for (name, info) in &header {
        if name == "__metadata__" {
            continue;
        }
        let offsets: Vec<usize> = serde_json::from_value(info["data_offsets"].clone())?;
        out.push(RawEntry {
            name: name.clone(),
            dtype: info["dtype"].as_str().context("dtype")?.to_owned(),
            shape: serde_json::from_value(info["shape"].clone())?,
            bytes: data[offsets[0]..offsets[1]].to_vec(),
        });
    }
    Ok(out)
}

/// Writes tensors as a safetensors file.
pub fn write_safetensors(entries: &[RawEntry]) -> Result<Vec<u8>> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for e in entries {
        let start = data.len();
        data.extend_from_slice(&e.bytes);
        header.insert(
            e.name.clone(),
            serde_json::json!({"dtype": e.dtype, "shape": e.shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header_bytes = serde_json::to_vec(&header)?;
    while header_bytes.len() % 8 != 0 {
        header_bytes.push(b' ');
    }
    let mut out = (header_bytes.len() as u64).to_le_bytes().to_vec();
    out.extend(header_bytes);
    out.extend(data);
    Ok(out)
}

/// Rewrites an all-f32 safetensors file with every tensor in `dtype` (`F16` or `BF16`).
pub fn safetensors_to(bytes: &[u8], dtype: &str) -> Result<Vec<u8>> {
    let mut entries = read_safetensors(bytes)?;
    for e in &mut entries {
        ensure!(e.dtype == "F32", "{} is not F32", e.name);
        let mut converted = Vec::with_capacity(e.bytes.len() / 2);
        for chunk in e.bytes.chunks_exact(4) {
            let x = f32::from_le_bytes(chunk.try_into()?);
            converted.extend_from_slice(&match dtype {
                "F16" => half::f16::from_f32(x).to_le_bytes(),
                "BF16" => half::bf16::from_f32(x).to_le_bytes(),
                other => bail!("unsupported dtype {other}"),
            });
        }
        e.bytes = converted;
        e.dtype = dtype.to_owned();
    }
    write_safetensors(&entries)
}

/// The machine's GPU (one per test process), for tests that run on it. Fails, never skips, when
/// there is none: in CI the adapter is Mesa lavapipe (`apt-get install mesa-vulkan-drivers`).
pub fn gpu() -> Result<std::sync::Arc<dyn amphi_core::gpu::GpuHost>> {
    static GPU: std::sync::OnceLock<Result<std::sync::Arc<amphi_gpu::WgpuHost>, String>> =
        std::sync::OnceLock::new();
    let gpu = GPU.get_or_init(|| {
        amphi_gpu::WgpuHost::new()
            .map(std::sync::Arc::new)
            .map_err(|e| e.to_string())
    });
    match gpu {
        Ok(host) => Ok(host.clone()),
        Err(e) => bail!(
            "this test needs a GPU adapter (in CI: Mesa lavapipe, `apt-get install \
             mesa-vulkan-drivers`): {e}"
        ),
    }
}
