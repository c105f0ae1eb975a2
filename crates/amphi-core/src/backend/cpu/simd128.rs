//! The wasm32 SIMD128 microkernel (the artifact's CPU path): a 2 × 16 tile in eight `f32x4`
//! accumulators. SIMD128 has no fused multiply-add, so each step is a multiply and an add; two
//! rows keep the live vectors (8 accumulators, 4 of `B`, 2 of `A`) within the 16 registers of
//! the hosts' x86-64 code generators.
//!
//! The loop is shaped for Cranelift (wasmtime), which emits close to one machine instruction per
//! wasm instruction, so the step's instruction count bounds its speed: `A` comes packed with each
//! value broadcast to a vector ([`ALayout::Splat4`], by [`pack_2`]), so a step reads it with two
//! plain loads instead of two `load32_splat`s (each a scalar load, a move and a shuffle under
//! Cranelift), every load carries its offset, and the loop ends on a pointer compare. Together
//! these took the kernel from 49 to 61 GFLOP/s under wasmtime on its L1 ceiling (AMD EPYC,
//! Zen 5); V8's stayed at 62–63. Relaxed SIMD's fused multiply-add was tried and was slower under
//! wasmtime (41 GFLOP/s: Cranelift ties the multiplicand, not the accumulator, to the result and
//! copies registers around every `vfmadd213ps`), and Node 20 rejects it.

use core::arch::wasm32::{
    f32x4_add, f32x4_mul, f32x4_splat, i32x4_shuffle, v128, v128_load, v128_store,
};

use super::gemm::{ALayout, Kernel};

pub(crate) const KERNEL: Kernel = Kernel {
    name: "simd128 2x16",
    mr: 2,
    nr: 16,
    // 24 KiB of B per pass, so that MiniLM's products (k = 384 but for the FFN output) take
    // one: at 256 the second pass's reload and re-store of every tile of C cost 6 % of an
    // embedding in Node (1×128: 57 against 61 ms).
    kc: 384,
    // 192 × 384 × 16 B = 1.1 MiB of packed A (wasmtime: 64 rows 54.0 GFLOP/s, 128 or 192 55.8).
    mc: 192,
    a: ALayout::Splat4 { pack: pack_2 },
    run: kernel_2x16,
};

/// Steps per turn of the kernel's outer loop. The steps run in two nested loops, not one, for
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
/// See [`super::gemm::MicroFn`] and [`ALayout::Splat4`].
unsafe fn kernel_2x16(k: usize, a: *const *const f32, b: *const f32, tile: *mut f32, ldt: usize) {
    // SAFETY: the caller's contract (MicroFn, Splat4): k steps of 2 vectors of A, k×16 values of
    // B, 2 rows of 16 in tile; v128_load/v128_store do not need alignment.
    unsafe {
        let mut x = (*a).cast::<v128>();
        let mut bp = b.cast::<v128>();
        let mut c = [f32x4_splat(0.0); 8];
        let mut left = k;
        while left > 0 {
            let n = left.min(STEPS);
            left -= n;
            // The inner loop ends on a pointer compare, not a count, and every load is one
            // pointer plus a constant, which wasm carries in the load (memarg offset): under
            // wasmtime these two took the kernel from 49 to 59 GFLOP/s on its L1 ceiling (a
            // hand-written wat loop; Cranelift issues each instruction it is given, and this
            // loop was limited by their number). The pointers advance through integers: as
            // pointer arithmetic, LLVM's loop strength reduction rewrites every load's address
            // as a base plus a counter and adds the constant with an `i32.add` of its own.
            let stop = bp.add(4 * n);
            while bp != stop {
                step(&mut c, x, bp);
                x = core::ptr::with_exposed_provenance(x.expose_provenance() + 32);
                bp = core::ptr::with_exposed_provenance(bp.expose_provenance() + 64);
            }
        }
        for (r, c) in c.chunks_exact(4).enumerate() {
            let t = tile.add(r * ldt).cast::<v128>();
            for (q, &c) in c.iter().enumerate() {
                v128_store(t.add(q), c);
            }
        }
    }
}

/// One step: `c[4r + q] += x_r · B[p, 4q .. 4q + 4]` for the two rows `r` (`x_r`: row `r`'s
/// value at `p`, in every lane) and the four vectors `q` of the panel's 16 columns.
///
/// # Safety
/// `x` is valid for 2 vector reads, `bp` for 4.
#[inline(always)]
unsafe fn step(c: &mut [v128; 8], x: *const v128, bp: *const v128) {
    // SAFETY: the caller's bounds.
    unsafe {
        let bs = [
            v128_load(bp),
            v128_load(bp.add(1)),
            v128_load(bp.add(2)),
            v128_load(bp.add(3)),
        ];
        let xs = [v128_load(x), v128_load(x.add(1))];
        for (r, x) in xs.into_iter().enumerate() {
            for (q, b) in bs.into_iter().enumerate() {
                c[4 * r + q] = f32x4_add(c[4 * r + q], f32x4_mul(x, b));
            }
        }
    }
}

/// Packs two rows of `A` as the kernel reads them ([`ALayout::Splat4`]): four values of each
/// row at a time, each broadcast by a shuffle.
fn pack_2(rows: &[&[f32]], dst: &mut [f32]) {
    let [r0, r1] = rows else {
        unreachable!("the 2 x 16 kernel packs two rows")
    };
    let k = r0.len();
    assert!(
        r1.len() == k && dst.len() >= 8 * k,
        "pack_2: short rows or destination"
    );
    let d = dst.as_mut_ptr().cast::<v128>();
    let mut p = 0;
    // SAFETY: p + 4 ≤ k values of each row are read, and 2(p + 4) ≤ 2k vectors of dst written;
    // v128_load/v128_store do not need alignment.
    unsafe {
        while p + 4 <= k {
            let a = v128_load(r0.as_ptr().add(p).cast());
            let b = v128_load(r1.as_ptr().add(p).cast());
            let d = d.add(2 * p);
            v128_store(d, i32x4_shuffle::<0, 0, 0, 0>(a, a));
            v128_store(d.add(1), i32x4_shuffle::<0, 0, 0, 0>(b, b));
            v128_store(d.add(2), i32x4_shuffle::<1, 1, 1, 1>(a, a));
            v128_store(d.add(3), i32x4_shuffle::<1, 1, 1, 1>(b, b));
            v128_store(d.add(4), i32x4_shuffle::<2, 2, 2, 2>(a, a));
            v128_store(d.add(5), i32x4_shuffle::<2, 2, 2, 2>(b, b));
            v128_store(d.add(6), i32x4_shuffle::<3, 3, 3, 3>(a, a));
            v128_store(d.add(7), i32x4_shuffle::<3, 3, 3, 3>(b, b));
            p += 4;
        }
        for p in p..k {
            v128_store(d.add(2 * p), f32x4_splat(r0[p]));
            v128_store(d.add(2 * p + 1), f32x4_splat(r1[p]));
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
    // Two rows of A as the kernel reads them (ALayout::Splat4): DEPTH steps of two vectors.
    let a: Vec<f32> = (0..8 * DEPTH)
        .map(|i| 1e-3 * ((i / 4) % 61) as f32)
        .collect();
    let b: Vec<f32> = (0..16 * DEPTH).map(|i| 1e-3 * (i % 59) as f32).collect();
    let packed = a.as_ptr();
    let mut tile = [0f32; 32];
    let mut sum = 0.0;
    let mut left = iters as usize;
    while left > 0 {
        let k = left.min(DEPTH);
        // Through an opaque pointer, as the matrix multiply calls it: the same machine code,
        // not a copy inlined here (which, under wasmtime's deadline checks, compiles worse).
        let run = core::hint::black_box(KERNEL.run);
        // SAFETY: DEPTH ≥ k steps of two vectors of A, a panel of 16·DEPTH, a tile of 2×16.
        unsafe { run(k, &packed, b.as_ptr(), tile.as_mut_ptr(), 16) };
        // Every result is used, so no accumulator can be dropped.
        sum += core::hint::black_box(&tile).iter().sum::<f32>();
        left -= k;
    }
    sum
}

pub(crate) const PEAK_FLOPS_PER_ITER: u64 = 64;
