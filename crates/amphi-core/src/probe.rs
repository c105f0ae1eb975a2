//! Microbenchmarks of the CPU matrix multiply, for `amphi bench` and the benchmark harness: the
//! host times the calls (amphi.wasm has no clock), so every host measures the same code the
//! same way. [`peak`] is the ceiling of the matrix-multiply kernel this build uses: in amphi.wasm
//! the SIMD128 kernel itself (`f32x4` multiply + add) on operands that stay in L1; natively
//! independent FMA chains of the kernel's width (AVX2 or AVX-512), as many as fit the registers.
//! [`matmul`] runs the real kernel on a linear layer's shapes.

use crate::backend::cpu;

/// The matrix-multiply kernel this build runs on this CPU (`simd128 2x16`, `avx2+fma 6x16`, …).
pub fn kernel() -> &'static str {
    cpu::kernel_name()
}

/// Floating-point operations one [`peak`] iteration performs.
pub fn peak_flops_per_iter() -> u64 {
    cpu::peak_flops_per_iter()
}

/// Runs `iters` iterations of the peak loop; the result is a checksum that keeps the loop from
/// being optimised away.
pub fn peak(iters: u32) -> f32 {
    cpu::peak(iters)
}

/// Multiplies an `[m, k]` matrix by a packed `[k, n]` one (a linear layer's shapes) `iters`
/// times: `2·m·n·k` flops each, on deterministic data packed before the loop. Returns a
/// checksum.
pub fn matmul(m: usize, n: usize, k: usize, iters: u32) -> f32 {
    cpu::matmul_probe(m, n, k, iters)
}
