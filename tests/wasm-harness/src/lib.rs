//! A wasm32-unknown-unknown module that runs the shared tokenizer parity test body
//! (`tests/support/tokenizer_parity.rs`) inside WebAssembly. `tests/wasm/harness.test.mjs`
//! instantiates it under Node with the `amphi_host` imports and checks the report.
//!
//! ABI (all sizes in bytes, pointers into the module's memory):
//! - `harness_alloc(len) -> ptr`: a buffer the host writes an input into (leaked; test-only).
//! - `harness_tokenizer_parity(tok_ptr, tok_len, golden_ptr, golden_len) -> failures`
//!   (`-1` if the inputs could not be read); the report is at `harness_report_ptr/len`.
//! - `harness_backend_ops() -> failures`: the CPU backend's decoder ops (SIMD128 here)
//!   against their f64 reference (`amphi_core::selftest`); the report (`checked`,
//!   `failures`, `kernel`) is at `harness_report_ptr/len`.

#[path = "../../support/tokenizer_parity.rs"]
mod parity;

use std::cell::RefCell;

thread_local! {
    static REPORT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Allocates `len` bytes for the host to write an input into.
#[unsafe(no_mangle)]
pub extern "C" fn harness_alloc(len: usize) -> *mut u8 {
    let mut buf = vec![0u8; len].into_boxed_slice();
    let ptr = buf.as_mut_ptr();
    std::mem::forget(buf);
    ptr
}

/// Runs the parity check on two host-written buffers.
///
/// # Safety
/// Both ranges must lie in buffers returned by [`harness_alloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn harness_tokenizer_parity(
    tok: *const u8,
    tok_len: usize,
    golden: *const u8,
    golden_len: usize,
) -> i32 {
    // SAFETY: the caller passes buffers it wrote through `harness_alloc`.
    let (tok, golden) = unsafe {
        (
            std::slice::from_raw_parts(tok, tok_len),
            std::slice::from_raw_parts(golden, golden_len),
        )
    };
    let (code, report) = match parity::run(tok, golden) {
        Ok(r) => (
            r.failures.len() as i32,
            serde_json::json!({"checked": r.checked, "failures": r.failures}),
        ),
        Err(e) => (-1, serde_json::json!({"error": e})),
    };
    REPORT.with(|cell| *cell.borrow_mut() = report.to_string().into_bytes());
    code
}

/// Runs the CPU backend's op checks.
#[unsafe(no_mangle)]
pub extern "C" fn harness_backend_ops() -> i32 {
    let (checked, failures, kernel) = amphi_core::selftest::cpu_backend_ops();
    let code = failures.len() as i32;
    let report = serde_json::json!({"checked": checked, "failures": failures, "kernel": kernel});
    REPORT.with(|cell| *cell.borrow_mut() = report.to_string().into_bytes());
    code
}

/// Pointer to the last report (JSON).
#[unsafe(no_mangle)]
pub extern "C" fn harness_report_ptr() -> *const u8 {
    REPORT.with(|cell| cell.borrow().as_ptr())
}

/// Length of the last report.
#[unsafe(no_mangle)]
pub extern "C" fn harness_report_len() -> usize {
    REPORT.with(|cell| cell.borrow().len())
}

// Randomness (getrandom's custom backend) and the panic hook come from the artifact crate, so the
// harness links the same `amphi_host` shim as `amphi.wasm`.
use amphi_wasm as _;
