//! # amphi-fuzz
//!
//! The bodies of amphi's fuzz targets. Each `pub fn` takes arbitrary bytes and must return
//! without panicking, aborting or trapping, whatever the bytes are: a refusal is a typed error,
//! which the target ignores. `fuzz/` (cargo-fuzz, nightly, outside the workspace) calls these
//! functions from libFuzzer; `tests/corpus.rs` replays the kept corpus (`fuzz/corpus/<target>/`)
//! and every regression case (`fuzz/regressions/<target>/`) on stable in the ordinary test run.
//!
//! ```no_run
//! amphi_fuzz::image(b"\x89PNG\r\n\x1a\n...");
//! ```

mod common;
pub mod gpu_imports;
pub mod http_request;
pub mod image;
pub mod model_files;
pub mod wasm_request;
pub use gpu_imports::gpu_imports;
pub use http_request::http_request;
pub use image::image;
pub use model_files::model_files;
pub use wasm_request::wasm_request;
