//! The portable microkernel, for targets without a hand-written one (and x86-64 CPUs without
//! AVX2): a 4 × 16 tile of plain arrays, which the compiler vectorizes for the target.

use super::gemm::{ALayout, Kernel};

pub(crate) const KERNEL: Kernel = Kernel {
    name: "portable 4x16",
    mr: 4,
    nr: 16,
    kc: 256,
    mc: 192,
    a: ALayout::Rows,
    run: kernel_4x16,
};

/// # Safety
/// See [`super::gemm::MicroFn`].
unsafe fn kernel_4x16(k: usize, a: *const *const f32, b: *const f32, tile: *mut f32, ldt: usize) {
    // SAFETY: the caller's contract (MicroFn): 4 rows of k values, k×16 values of B, 4 rows of
    // 16 in tile.
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
        for (r, acc) in acc.iter().enumerate() {
            std::slice::from_raw_parts_mut(tile.add(r * ldt), 16).copy_from_slice(acc);
        }
    }
}

/// The driver's [`ALayout::Splat4`] path, testable on every target: a 2 × 16 kernel that reads
/// `A` as SIMD128's does, and a block of 10 rows, so that tests cross blocks and ragged groups.
#[cfg(test)]
pub(crate) const SPLAT4_TEST: Kernel = Kernel {
    name: "portable 2x16 splat4 (test)",
    mr: 2,
    nr: 16,
    kc: 256,
    mc: 10,
    a: ALayout::Splat4 { pack: pack_splat4 },
    run: splat4_2x16,
};

/// [`super::gemm::PackFn`] for any `mr`, in plain Rust.
#[cfg(test)]
fn pack_splat4(rows: &[&[f32]], dst: &mut [f32]) {
    let mr = rows.len();
    for (r, src) in rows.iter().enumerate() {
        for (p, &v) in src.iter().enumerate() {
            dst[(p * mr + r) * 4..][..4].fill(v);
        }
    }
}

/// # Safety
/// See [`super::gemm::MicroFn`]: `*a` holds `k` steps of two `[a_r[p]; 4]`.
#[cfg(test)]
unsafe fn splat4_2x16(k: usize, a: *const *const f32, b: *const f32, tile: *mut f32, ldt: usize) {
    // SAFETY: the caller's contract (MicroFn, ALayout::Splat4).
    unsafe {
        let a = std::slice::from_raw_parts(*a, 8 * k);
        let b = std::slice::from_raw_parts(b, k * 16);
        let mut acc = [[0f32; 16]; 2];
        for (p, bp) in b.chunks_exact(16).enumerate() {
            for (r, acc) in acc.iter_mut().enumerate() {
                let lanes = &a[(2 * p + r) * 4..][..4];
                assert!(lanes.iter().all(|&v| v.to_bits() == lanes[0].to_bits()));
                for (c, &bv) in acc.iter_mut().zip(bp) {
                    *c += lanes[0] * bv;
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            std::slice::from_raw_parts_mut(tile.add(r * ldt), 16).copy_from_slice(acc);
        }
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
