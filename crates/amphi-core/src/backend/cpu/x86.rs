//! x86-64 microkernels, chosen at run time by CPU feature:
//! - AVX-512F: an 8 × 32 tile in sixteen `__m512` accumulators (of 32 registers; eight rows also
//!   cover a whole 8-token sequence in one pass over the weights);
//! - AVX2 + FMA: a 6 × 16 tile in twelve `__m256` accumulators (two of `B` and one broadcast of
//!   `A` make 15 of the 16 registers).

use std::arch::x86_64::{
    __m256, __m512, _MM_HINT_T0, _mm_prefetch, _mm256_broadcast_ss, _mm256_fmadd_ps,
    _mm256_loadu_ps, _mm256_setzero_ps, _mm256_storeu_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

use super::gemm::{ALayout, Kernel};

const AVX512: Kernel = Kernel {
    name: "avx512f 8x32",
    mr: 8,
    nr: 32,
    // 32 KiB of B per pass.
    kc: 256,
    mc: 192,
    a: ALayout::Rows,
    run: avx512_8x32,
};

const AVX2_FMA: Kernel = Kernel {
    name: "avx2+fma 6x16",
    mr: 6,
    nr: 16,
    kc: 256,
    mc: 192,
    a: ALayout::Rows,
    run: avx2_6x16,
};

/// The best kernel this CPU has, if any beats the portable one.
pub(crate) fn kernel() -> Option<Kernel> {
    if is_x86_feature_detected!("avx512f") {
        Some(AVX512)
    } else if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        Some(AVX2_FMA)
    } else {
        None
    }
}

/// Every x86 kernel this CPU can run (tests run each).
#[cfg(test)]
pub(crate) fn kernels() -> Vec<Kernel> {
    let mut all = Vec::new();
    if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
        all.push(AVX2_FMA);
    }
    if is_x86_feature_detected!("avx512f") {
        all.push(AVX512);
    }
    all
}

/// # Safety
/// See [`super::gemm::MicroFn`]; only selected where the CPU has AVX-512F.
unsafe fn avx512_8x32(k: usize, a: *const *const f32, b: *const f32, tile: *mut f32, ldt: usize) {
    // SAFETY: `kernel` selects this only where AVX-512F is present.
    unsafe { avx512_8x32_impl(k, a, b, tile, ldt) }
}

#[target_feature(enable = "avx512f")]
unsafe fn avx512_8x32_impl(
    k: usize,
    a: *const *const f32,
    b: *const f32,
    tile: *mut f32,
    ldt: usize,
) {
    // SAFETY: the caller's contract (MicroFn): 8 rows of k values, k×32 values of B, 8 rows of
    // 32 in tile; the loads and stores are unaligned ones.
    unsafe {
        let rows: [*const f32; 8] = std::array::from_fn(|r| *a.add(r));
        let mut c: [[__m512; 2]; 8] = [[_mm512_setzero_ps(); 2]; 8];
        for p in 0..k {
            // The panel streams from memory when few rows share it (short inputs): ask for it
            // 16 steps (2 KiB) ahead.
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(p * 32 + 512).cast());
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(p * 32 + 528).cast());
            let b0 = _mm512_loadu_ps(b.add(p * 32));
            let b1 = _mm512_loadu_ps(b.add(p * 32 + 16));
            for (row, acc) in rows.iter().zip(c.iter_mut()) {
                let x = _mm512_set1_ps(*row.add(p));
                acc[0] = _mm512_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm512_fmadd_ps(x, b1, acc[1]);
            }
        }
        for (r, acc) in c.iter().enumerate() {
            _mm512_storeu_ps(tile.add(r * ldt), acc[0]);
            _mm512_storeu_ps(tile.add(r * ldt + 16), acc[1]);
        }
    }
}

/// # Safety
/// See [`super::gemm::MicroFn`]; only selected where the CPU has AVX2 and FMA.
unsafe fn avx2_6x16(k: usize, a: *const *const f32, b: *const f32, tile: *mut f32, ldt: usize) {
    // SAFETY: `kernel` selects this only where AVX2 and FMA are present.
    unsafe { avx2_6x16_impl(k, a, b, tile, ldt) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn avx2_6x16_impl(
    k: usize,
    a: *const *const f32,
    b: *const f32,
    tile: *mut f32,
    ldt: usize,
) {
    // SAFETY: the caller's contract (MicroFn): 6 rows of k values, k×16 values of B, 6 rows of
    // 16 in tile; the loads and stores are unaligned ones.
    unsafe {
        let rows: [*const f32; 6] = std::array::from_fn(|r| *a.add(r));
        let mut c: [[__m256; 2]; 6] = [[_mm256_setzero_ps(); 2]; 6];
        for p in 0..k {
            // As in the AVX-512 kernel: the panel 2 KiB ahead.
            _mm_prefetch::<_MM_HINT_T0>(b.wrapping_add(p * 16 + 512).cast());
            let b0 = _mm256_loadu_ps(b.add(p * 16));
            let b1 = _mm256_loadu_ps(b.add(p * 16 + 8));
            for (row, acc) in rows.iter().zip(c.iter_mut()) {
                let x = _mm256_broadcast_ss(&*row.add(p));
                acc[0] = _mm256_fmadd_ps(x, b0, acc[0]);
                acc[1] = _mm256_fmadd_ps(x, b1, acc[1]);
            }
        }
        for (r, acc) in c.iter().enumerate() {
            _mm256_storeu_ps(tile.add(r * ldt), acc[0]);
            _mm256_storeu_ps(tile.add(r * ldt + 8), acc[1]);
        }
    }
}

/// Peak probe of the kernel in use: `iters` rounds of twelve independent `acc = fma(acc, s, t)`
/// chains (`__m512`: 384 flops a round; `__m256`: 192). `None` without AVX2 + FMA.
pub(crate) fn peak(iters: u32) -> Option<f32> {
    match kernel()?.name {
        // SAFETY: the kernel in use says which features the CPU has.
        n if n == AVX512.name => Some(unsafe { peak_avx512(iters) }),
        _ => Some(unsafe { peak_avx2(iters) }),
    }
}

/// Flops per [`peak`] round, `None` without AVX2 + FMA.
pub(crate) fn peak_flops_per_iter() -> Option<u64> {
    match kernel()?.name {
        n if n == AVX512.name => Some(384),
        _ => Some(192),
    }
}

#[target_feature(enable = "avx512f")]
fn peak_avx512(iters: u32) -> f32 {
    use std::arch::x86_64::_mm512_reduce_add_ps;
    let (s, t) = (_mm512_set1_ps(0.999_9), _mm512_set1_ps(1e-3));
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..iters {
        for a in &mut acc {
            *a = _mm512_fmadd_ps(*a, s, t);
        }
    }
    acc.iter().map(|&a| _mm512_reduce_add_ps(a)).sum()
}

#[target_feature(enable = "avx2,fma")]
fn peak_avx2(iters: u32) -> f32 {
    use std::arch::x86_64::{_mm256_cvtss_f32, _mm256_set1_ps};
    let (s, t) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-3));
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for a in &mut acc {
            *a = _mm256_fmadd_ps(*a, s, t);
        }
    }
    acc.iter().map(|&a| _mm256_cvtss_f32(a)).sum()
}
