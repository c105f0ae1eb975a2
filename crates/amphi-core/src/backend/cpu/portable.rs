//! The portable microkernel, for targets without a hand-written one (and x86-64 CPUs without
//! AVX2): a 4 × 16 tile of plain arrays, which the compiler vectorizes for the target.

use super::gemm::Kernel;

pub(crate) const KERNEL: Kernel = Kernel {
    name: "portable 4x16",
    mr: 4,
    nr: 16,
    kc: 256,
    run: kernel_4x16,
};

/// # Safety
/// See [`super::gemm::MicroFn`].
unsafe fn kernel_4x16(k: usize, a: *const *const f32, b: *const f32, tile: *mut f32) {
    // SAFETY: the caller's contract (MicroFn): 4 rows of k values, k×16 values of B, 4×16 of
    // tile.
    unsafe {
        let rows: [&[f32]; 4] = std::array::from_fn(|r| std::slice::from_raw_parts(*a.add(r), k));
        let b = std::slice::from_raw_parts(b, k * 16);
        let mut acc = [[0f32; 16]; 4];
        for (p, bp) in b.chunks_exact(16).enumerate() {
            for (row, acc) in rows.iter().zip(acc.iter_mut()) {
                let x = row[p];
                for (c, &bv) in acc.iter_mut().zip(bp) {
                    *c += x * bv;
                }
            }
        }
        std::slice::from_raw_parts_mut(tile, 64).copy_from_slice(acc.as_flattened());
    }
}

/// Peak probe: `iters` rounds of sixteen independent `acc = acc·s + t` chains of four lanes,
/// 128 flops a round.
pub(crate) fn peak(iters: u32) -> f32 {
    let mut acc = [[1f32; 4]; 16];
    for _ in 0..iters {
        for a in acc.iter_mut().flatten() {
            *a = *a * 0.999_9 + 1e-3;
        }
    }
    acc.iter().map(|a| a[0]).sum()
}

pub(crate) const PEAK_FLOPS_PER_ITER: u64 = 128;
