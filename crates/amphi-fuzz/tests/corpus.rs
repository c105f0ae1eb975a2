//! Replays the kept fuzz corpus (`fuzz/corpus/<target>/`, minimized with `cargo fuzz cmin`) and
//! every regression case (`fuzz/regressions/<target>/`, one file per crash found) through the
//! target bodies, on stable, in the ordinary test run. CI replays; it does not fuzz.
//!
//! Each input runs under `catch_unwind`, so one failure does not hide the others: the test
//! fails listing every input that panicked.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The inputs kept for `target`, sorted by path; fails when there are none (a replay of
/// nothing would pass whatever the code does).
fn inputs(target: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let dir = fuzz_dir().join(kind).join(target);
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.path().is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    assert!(
        !files.is_empty(),
        "no kept inputs for {target} under {}",
        fuzz_dir().display()
    );
    files
}

fn replay(target: &str, body: fn(&[u8])) {
    let files = inputs(target);
    let mut failed = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
            failed.push(file.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} kept inputs failed:\n{}",
        failed.len(),
        files.len(),
        failed.join("\n")
    );
}

#[test]
fn image() {
    replay("image", amphi_fuzz::image);
}

#[test]
fn model_files() {
    replay("model_files", amphi_fuzz::model_files);
}

#[test]
fn wasm_request() {
    replay("wasm_request", amphi_fuzz::wasm_request);
}

#[test]
fn http_request() {
    replay("http_request", amphi_fuzz::http_request);
}

/// Needs a GPU adapter (Mesa lavapipe in CI); without one every input fails, so the test does.
#[test]
fn gpu_imports() {
    replay("gpu_imports", amphi_fuzz::gpu_imports);
}
