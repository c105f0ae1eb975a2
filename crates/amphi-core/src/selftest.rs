//! Test harnesses only (feature `selftest`): the backend's op checks against an f64
//! reference, callable from outside the crate so that a harness can run them inside
//! WebAssembly with the SIMD128 kernels (`tests/wasm-harness`). Not a stable API.

/// What the CPU backend's op checks found: `(checks run, failures, the matrix-multiply
/// kernel they ran on)`.
pub fn cpu_backend_ops() -> (usize, Vec<String>, &'static str) {
    let report = crate::backend::checks::run(&crate::backend::cpu::Cpu, 2e-5);
    (
        report.checked,
        report.failures,
        crate::backend::cpu::kernel_name(),
    )
}
