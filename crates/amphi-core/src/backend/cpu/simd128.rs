//! The wasm32 SIMD128 microkernel (the artifact's CPU path): a 2 × 16 tile in eight `f32x4`
//! accumulators. SIMD128 has no fused multiply-add, so each step is a multiply and an add; two
//! rows keep the live vectors (8 accumulators, 4 of `B`, 2 of `A`) within the 16 registers of
//! the hosts' x86-64 code generators.

use core::arch::wasm32::{f32x4_add, f32x4_mul, f32x4_splat, v128, v128_load, v128_store};

use super::gemm::Kernel;

pub(crate) const KERNEL: Kernel = Kernel {
    name: "simd128 2x16",
    mr: 2,
    nr: 16,
    run: kernel_2x16,
};

/// # Safety
/// See [`super::gemm::MicroFn`].
unsafe fn kernel_2x16(k: usize, a: *const *const f32, b: *const f32, tile: *mut f32) {
    // SAFETY: the caller's contract (MicroFn): 2 rows of k values, k×16 values of B, 2×16 of
    // tile; v128_load/v128_store do not need alignment.
    unsafe {
        let (a0, a1) = (*a, *a.add(1));
        let z = f32x4_splat(0.0);
        let (mut c00, mut c01, mut c02, mut c03) = (z, z, z, z);
        let (mut c10, mut c11, mut c12, mut c13) = (z, z, z, z);
        // One step per iteration, on purpose: unrolled (by hand or by LLVM), the loads of
        // later steps get hoisted and the 16 live vectors spill in the engines' register
        // allocators (V8 measured 30 % slower).
        for p in 0..k {
            let bp = b.add(p * 16).cast::<v128>();
            let (b0, b1, b2, b3) = (
                v128_load(bp),
                v128_load(bp.add(1)),
                v128_load(bp.add(2)),
                v128_load(bp.add(3)),
            );
            let x0 = f32x4_splat(*a0.add(p));
            let x1 = f32x4_splat(*a1.add(p));
            c00 = f32x4_add(c00, f32x4_mul(x0, b0));
            c01 = f32x4_add(c01, f32x4_mul(x0, b1));
            c02 = f32x4_add(c02, f32x4_mul(x0, b2));
            c03 = f32x4_add(c03, f32x4_mul(x0, b3));
            c10 = f32x4_add(c10, f32x4_mul(x1, b0));
            c11 = f32x4_add(c11, f32x4_mul(x1, b1));
            c12 = f32x4_add(c12, f32x4_mul(x1, b2));
            c13 = f32x4_add(c13, f32x4_mul(x1, b3));
        }
        let t = tile.cast::<v128>();
        for (i, c) in [c00, c01, c02, c03, c10, c11, c12, c13]
            .into_iter()
            .enumerate()
        {
            v128_store(t.add(i), c);
        }
    }
}

/// Peak probe: the kernel itself on operands that stay in L1 (two rows of `A` and a panel of `B`,
/// 256 steps deep: 18 KiB), `iters` steps in all, so nothing but its own instruction stream
/// limits it. Loops of the same multiplies and adds with `B` held in registers were tried and
/// ran *slower* than the kernel itself (under wasmtime 21.7 against 24.1 GFLOP/s; in Chromium
/// 14.7 against 21.4), so they measured no ceiling.
pub(crate) fn peak(iters: u32) -> f32 {
    const DEPTH: usize = 256;
    let a: Vec<f32> = (0..2 * DEPTH).map(|i| 1e-3 * (i % 61) as f32).collect();
    let b: Vec<f32> = (0..16 * DEPTH).map(|i| 1e-3 * (i % 59) as f32).collect();
    let rows = [a.as_ptr(), a[DEPTH..].as_ptr()];
    let mut tile = [0f32; 32];
    let mut sum = 0.0;
    let mut left = iters as usize;
    while left > 0 {
        let k = left.min(DEPTH);
        // Through an opaque pointer, as the matrix multiply calls it: the same machine code,
        // not a copy inlined here (which, under wasmtime's deadline checks, compiles worse).
        let run = core::hint::black_box(KERNEL.run);
        // SAFETY: two rows of DEPTH ≥ k values, a panel of 16·DEPTH, a tile of 2×16.
        unsafe { run(k, rows.as_ptr(), b.as_ptr(), tile.as_mut_ptr()) };
        // Every result is used, so no accumulator can be dropped.
        sum += core::hint::black_box(&tile).iter().sum::<f32>();
        left -= k;
    }
    sum
}

pub(crate) const PEAK_FLOPS_PER_ITER: u64 = 64;
