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
    // 24 KiB of B per pass, so that MiniLM's products (k = 384 but for the FFN output) take
    // one: at 256 the second pass's reload and re-store of every tile of C cost 6 % of an
    // embedding in Node (1×128: 57 against 61 ms).
    kc: 384,
    run: kernel_2x16,
};

/// Steps per turn of the kernel's inner loop. The steps run in two nested loops, not one, for
/// V8: in Node 20 the kernel ran 20 % faster so (62 against 52 GFLOP/s on its L1 ceiling, 58
/// against 48 on MiniLM's shapes; AMD EPYC, Zen 5), while wasmtime compiled both forms to the
/// same speed (presumably V8's loop unrolling treats a nested innermost loop differently; not
/// verified in its code). The inner loop does one step per turn: with 2, 4 or 8 steps a turn,
/// written out in Rust or by hand in the wat, both engines emit every load of the turn before
/// any of its arithmetic (loads keep their order; Cranelift places the pure multiplies and adds
/// at their first use, the accumulators at the back edge), so the vectors spill: 27–38 GFLOP/s
/// under wasmtime and 34–38 in V8, against 48 and 62 with one step.
const STEPS: usize = 32;

/// # Safety
/// See [`super::gemm::MicroFn`].
unsafe fn kernel_2x16(k: usize, a: *const *const f32, b: *const f32, tile: *mut f32) {
    // SAFETY: the caller's contract (MicroFn): 2 rows of k values, k×16 values of B, 2×16 of
    // tile; v128_load/v128_store do not need alignment.
    unsafe {
        let (a0, a1) = (*a, *a.add(1));
        let mut c = [f32x4_splat(0.0); 8];
        let mut p = 0;
        while p < k {
            let end = k.min(p + STEPS);
            while p < end {
                step(&mut c, a0, a1, b, p);
                p += 1;
            }
        }
        let t = tile.cast::<v128>();
        for (i, c) in c.into_iter().enumerate() {
            v128_store(t.add(i), c);
        }
    }
}

/// One step: `c[4r + q] += a_r[p] · B[p, 4q .. 4q + 4]` for the two rows `r` and the four
/// vectors `q` of the panel's 16 columns.
///
/// # Safety
/// `a0` and `a1` are valid for `p + 1` reads, `b` for `16 (p + 1)`.
#[inline(always)]
unsafe fn step(c: &mut [v128; 8], a0: *const f32, a1: *const f32, b: *const f32, p: usize) {
    // SAFETY: the caller's bounds.
    unsafe {
        let bp = b.add(p * 16).cast::<v128>();
        let bs = [
            v128_load(bp),
            v128_load(bp.add(1)),
            v128_load(bp.add(2)),
            v128_load(bp.add(3)),
        ];
        let x = [f32x4_splat(*a0.add(p)), f32x4_splat(*a1.add(p))];
        for (r, x) in x.into_iter().enumerate() {
            for (q, b) in bs.into_iter().enumerate() {
                c[4 * r + q] = f32x4_add(c[4 * r + q], f32x4_mul(x, b));
            }
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
