//! `C = act(alpha · A·B + bias)` for linear layers and attention.
//!
//! `B` is packed once (weights: at load) into panels of `NR` columns stored k-major, so the inner
//! loop of a microkernel reads `B` contiguously and keeps an `MR × NR` tile of `C` in registers.
//! Natively `A` is read in place through row pointers (row stride `lda`), so attention can
//! multiply slices of the fused QKV activations without copying them; SIMD128's kernel reads it
//! packed per block, each value already broadcast to a vector ([`ALayout`]). The microkernels
//! live in one file per target (`simd128.rs`, `x86.rs`, `portable.rs`); this driver is the same
//! everywhere.

use super::math::Epilogue;

/// The widest tile any microkernel uses.
const MAX_MR: usize = 8;
const MAX_NR: usize = 32;

/// A register-tiled microkernel: for `r < mr`, `c < nr`:
/// `tile[r*ldt + c] = Σ_{p<k} a[r][p] · b[p*nr + c]`.
///
/// # Safety
/// `a` points to what the kernel's [`ALayout`] says, for `k` steps; `b` is valid for `k*nr`
/// reads and `tile` for `nr` writes at each of `tile + r*ldt`, `r < mr`.
pub(crate) type MicroFn =
    unsafe fn(k: usize, a: *const *const f32, b: *const f32, tile: *mut f32, ldt: usize);

/// How a microkernel reads `A`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum ALayout {
    /// In place: `a` points to `mr` row pointers, each valid for `k` reads.
    #[cfg_attr(
        all(target_arch = "wasm32", target_feature = "simd128"),
        allow(dead_code)
    )]
    Rows,
    /// Packed by the driver with every value repeated four times, one `f32x4` per value: `a`
    /// points to one pointer, to `k` steps of `mr` such vectors (`4·mr·k` values, step-major),
    /// which `pack` writes from `mr` rows. For SIMD128 under Cranelift: a plain vector load per
    /// row and step instead of a `load32_splat`, which wasmtime compiles to a scalar load, a
    /// move and a shuffle (see `simd128.rs`).
    #[cfg_attr(
        not(any(test, all(target_arch = "wasm32", target_feature = "simd128"))),
        allow(dead_code)
    )]
    Splat4 { pack: PackFn },
}

/// Writes `rows` (`mr` rows of `k` values) into `dst` (`4·mr·k` values) as
/// [`ALayout::Splat4`] lays them out.
pub(crate) type PackFn = fn(rows: &[&[f32]], dst: &mut [f32]);

/// A microkernel, its tile shape, and the blocking of its driver.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kernel {
    pub name: &'static str,
    pub mr: usize,
    pub nr: usize,
    /// `k` per pass over `B` (`KC` in BLIS's terms): each panel's `kc × nr` slice stays in L1
    /// while every row of a block runs over it; deeper products take several passes, adding into
    /// `C`.
    pub kc: usize,
    /// Rows of `A` per block (`MC`): the block's `mc × kc` slice of `A`, as the kernel reads it,
    /// stays in L2 while the panels of `B` stream past it, so a batch of thousands of rows does
    /// not re-read all of `A` from memory for every panel. A multiple of `mr`.
    pub mc: usize,
    pub a: ALayout,
    pub run: MicroFn,
}

/// The fastest microkernel this CPU runs (chosen once, by target and run-time CPU features).
pub(crate) fn kernel() -> Kernel {
    let k = select();
    debug_assert!(k.mr <= MAX_MR && k.nr <= MAX_NR);
    k
}

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
fn select() -> Kernel {
    super::simd128::KERNEL
}

#[cfg(target_arch = "x86_64")]
fn select() -> Kernel {
    super::x86::kernel().unwrap_or(super::portable::KERNEL)
}

#[cfg(not(any(
    target_arch = "x86_64",
    all(target_arch = "wasm32", target_feature = "simd128")
)))]
fn select() -> Kernel {
    super::portable::KERNEL
}

/// `B` `[k, n]` packed for [`kernel`], in the order [`gemm`] reads it: for each pass over `k`
/// (`kc` values of `p` from `p0`), panel `j` holds, for each of its `p`, the `nr` values
/// `B[p, j*nr ..][..nr]`, zero past `n`. So each pass reads one contiguous run of memory.
#[derive(Debug, Clone)]
pub(crate) struct Packed {
    k: usize,
    n: usize,
    kernel: Kernel,
    data: Vec<f32>,
}

impl Packed {
    /// An empty packing, to be filled by [`Packed::pack`] (attention reuses one per call).
    pub fn new() -> Self {
        Self {
            k: 0,
            n: 0,
            kernel: kernel(),
            data: Vec::new(),
        }
    }

    /// A PyTorch linear weight `w` `[n, k]` (`out × in`), as `B = wᵀ`.
    pub fn from_weight(w: &[f32], n: usize, k: usize) -> Self {
        Self::for_kernel(kernel(), w, n, k)
    }

    /// [`Packed::from_weight`] for a given microkernel.
    fn for_kernel(kernel: Kernel, w: &[f32], n: usize, k: usize) -> Self {
        let mut p = Self {
            kernel,
            ..Self::new()
        };
        p.pack(w, k, n, 1, k);
        p
    }

    /// Packs `B[p, j] = src[p*sp + j*sj]`, reusing this packing's buffer.
    pub fn pack(&mut self, src: &[f32], k: usize, n: usize, sp: usize, sj: usize) {
        let nr = self.kernel.nr;
        let panels = n.div_ceil(nr);
        self.k = k;
        self.n = n;
        self.data.clear();
        self.data.resize(panels * k * nr, 0.0);
        if self.data.is_empty() {
            return;
        }
        // Pass-major, not whole panels (`k` values each, one after another): then a pass over a
        // `k = 1536` weight read 24 KiB runs 96 KiB apart, which the hardware prefetcher does
        // not follow, and a product of few rows, which streams its weights from memory, ran at
        // half the speed (amphi.wasm in Node, m = 2 × n = 384 × k = 1536 from 100 MiB of
        // weights: 12 against 25 GFLOP/s; natively m = 8, 71 against 106). A 1×8 MiniLM
        // embedding, natively on one thread, went from 2.2 to 1.8 ms (its weights, 42 MB, do
        // not fit the 32 MiB L3).
        let depth = self.kernel.kc;
        for (pass, slice) in self.data.chunks_mut(depth * panels * nr).enumerate() {
            let p0 = pass * depth;
            let kc = depth.min(k - p0);
            for (jp, panel) in slice.chunks_exact_mut(kc * nr).enumerate() {
                let j0 = jp * nr;
                let cols = nr.min(n - j0);
                for (p, dst) in (p0..).zip(panel.chunks_exact_mut(nr)) {
                    for (c, d) in dst[..cols].iter_mut().enumerate() {
                        *d = src[p * sp + (j0 + c) * sj];
                    }
                }
            }
        }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    pub fn n(&self) -> usize {
        self.n
    }
}

/// `A`: `m` rows of `k` values, row `i` starting at `data[i*lda]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rows<'a> {
    pub data: &'a [f32],
    pub m: usize,
    pub lda: usize,
}

/// `C[i*ldc + j] = ep(Σ_p A[i,p]·B[p,j], j)` for `i < m`, `j < n`. `c` holds `m` rows of stride
/// `ldc`; other columns are left alone.
pub(crate) fn gemm(a: Rows<'_>, b: &Packed, c: &mut [f32], ldc: usize, ep: &Epilogue<'_>) {
    if checked(a, b, c, ldc, ep) {
        rows_parallel(a.m, ldc, c, b.k * b.n, &|r0, rows, c_rows| {
            block(a, r0, rows, b, c_rows, ldc, ep)
        });
    }
}

/// [`gemm`] on the calling thread only, for callers that already run in parallel (attention's
/// heads).
pub(crate) fn gemm_serial(a: Rows<'_>, b: &Packed, c: &mut [f32], ldc: usize, ep: &Epilogue<'_>) {
    if checked(a, b, c, ldc, ep) {
        block(a, 0, a.m, b, c, ldc, ep);
    }
}

/// Whether there is anything to compute; panics if an operand is too short for the shapes.
fn checked(a: Rows<'_>, b: &Packed, c: &[f32], ldc: usize, ep: &Epilogue<'_>) -> bool {
    let (m, n, k) = (a.m, b.n, b.k);
    if m == 0 || n == 0 {
        return false;
    }
    assert!((m - 1) * a.lda + k <= a.data.len(), "gemm: A is too short");
    assert!((m - 1) * ldc + n <= c.len(), "gemm: C is too short");
    assert!(ep.bias.is_none_or(|bias| bias.len() >= n));
    true
}

/// Rows `r0 .. r0 + rows` of `C` (`c` starts at row `r0`), all columns, `mc` rows at a time.
fn block(
    a: Rows<'_>,
    r0: usize,
    rows: usize,
    b: &Packed,
    c: &mut [f32],
    ldc: usize,
    ep: &Epilogue<'_>,
) {
    let Kernel {
        mr,
        nr,
        kc: depth,
        mc,
        a: layout,
        run,
        ..
    } = b.kernel;
    let (n, k) = (b.n, b.k);
    let mut tile = [0f32; MAX_MR * MAX_NR];
    let mut ptrs = [a.data.as_ptr(); MAX_MR];
    let passes = k.div_ceil(depth).max(1);
    SPLAT4.with_borrow_mut(|splat| {
        for m0 in (0..rows).step_by(mc) {
            let m1 = rows.min(m0 + mc);
            for pass in 0..passes {
                let p0 = pass * depth;
                let kc = depth.min(k - p0);
                // Row `i` of the block, clamped: rows past the end repeat the last one (their
                // results are dropped).
                let row = |i: usize| {
                    let i = r0 + i.min(m1 - 1);
                    &a.data[i * a.lda + p0..][..kc]
                };
                if let ALayout::Splat4 { pack } = layout {
                    pack_block(m1 - m0, mr, kc, |i| row(m0 + i), pack, splat);
                }
                let width = n.div_ceil(nr) * nr;
                let slice = &b.data[p0 * width..][..kc * width];
                for (jp, panel) in slice.chunks_exact(kc * nr).enumerate() {
                    let j0 = jp * nr;
                    let cols = nr.min(n - j0);
                    for i in (m0..m1).step_by(mr) {
                        let valid = mr.min(m1 - i);
                        match layout {
                            ALayout::Rows => {
                                for (r, p) in ptrs[..mr].iter_mut().enumerate() {
                                    *p = row(i + r).as_ptr();
                                }
                            }
                            ALayout::Splat4 { .. } => {
                                ptrs[0] = splat[(i - m0) * 4 * kc..][..4 * mr * kc].as_ptr();
                            }
                        }
                        if valid == mr && cols == nr && pass == 0 {
                            // A whole tile on the first pass: straight into C.
                            let dst = c[i * ldc + j0..].as_mut_ptr();
                            // SAFETY: every pointer was just taken from a slice of `kc` values
                            // (Rows) or `4·mr·kc` (Splat4), the panel slice is `kc*nr` values,
                            // and rows i..i+mr, columns j0..j0+nr are inside C (`gemm`'s
                            // asserts), which `dst` reaches as the rest of `c` from there.
                            unsafe { run(kc, ptrs.as_ptr(), panel.as_ptr(), dst, ldc) };
                            continue;
                        }
                        // SAFETY: as above, into the tile buffer (MAX_MR*MAX_NR ≥ mr*nr).
                        unsafe { run(kc, ptrs.as_ptr(), panel.as_ptr(), tile.as_mut_ptr(), nr) };
                        for r in 0..valid {
                            let dst = &mut c[(i + r) * ldc + j0..][..cols];
                            let sums = &tile[r * nr..][..cols];
                            if pass > 0 {
                                dst.iter_mut().zip(sums).for_each(|(d, s)| *d += *s);
                            } else {
                                dst.copy_from_slice(sums);
                            }
                        }
                    }
                }
            }
            // The block's rows are complete: scale, bias and activation over each whole row,
            // which vectorizes better than per tile (GELU: one long loop per row instead of a
            // call per 16 values).
            if !ep.is_identity() {
                for r in m0..m1 {
                    ep.apply(&mut c[r * ldc..][..n]);
                }
            }
        }
    });
}

std::thread_local! {
    /// The block of `A` packed for an [`ALayout::Splat4`] kernel, kept between calls so that a
    /// multiply allocates nothing (at most `mc · kc · 4` values: 1.1 MiB for SIMD128's kernel).
    static SPLAT4: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Packs `rows` rows (`row(i)`, each `kc` values, `i` up to `rows` rounded up to `mr`) for an
/// [`ALayout::Splat4`] kernel: group `g` of `mr` rows at `4·mr·kc·g` in `out`.
fn pack_block<'a>(
    rows: usize,
    mr: usize,
    kc: usize,
    row: impl Fn(usize) -> &'a [f32],
    pack: PackFn,
    out: &mut Vec<f32>,
) {
    let len = rows.div_ceil(mr) * mr * 4 * kc;
    if out.len() < len {
        out.resize(len, 0.0);
    }
    let mut group = [&[][..]; MAX_MR];
    for (g, dst) in out[..len].chunks_exact_mut(mr * 4 * kc).enumerate() {
        for (r, src) in group[..mr].iter_mut().enumerate() {
            *src = row(g * mr + r);
        }
        pack(&group[..mr], dst);
    }
}

/// What [`rows_parallel`] runs: `f(first_row, rows, c_from_first_row)`.
type RowsFn<'a> = dyn Fn(usize, usize, &mut [f32]) + Sync + 'a;

/// Splits `C`'s `m` rows into ranges and runs `f` on each, on several threads where there are
/// any and the work (`m × work_per_row`) is worth it.
#[cfg(not(target_arch = "wasm32"))]
fn rows_parallel(m: usize, ldc: usize, c: &mut [f32], work_per_row: usize, f: &RowsFn<'_>) {
    use rayon::prelude::*;
    let threads = rayon::current_num_threads();
    if threads <= 1 || m * work_per_row < 1 << 18 {
        return f(0, m, c);
    }
    // Multiples of 24 rows: every kernel's MR divides 24.
    let per = m.div_ceil(threads).next_multiple_of(24);
    c.par_chunks_mut(per * ldc)
        .enumerate()
        .for_each(|(t, chunk)| {
            let r0 = t * per;
            if r0 < m {
                f(r0, per.min(m - r0), chunk)
            }
        });
}

/// wasm32 has one thread.
#[cfg(target_arch = "wasm32")]
fn rows_parallel(m: usize, _ldc: usize, c: &mut [f32], _work_per_row: usize, f: &RowsFn<'_>) {
    f(0, m, c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Activation;
    use crate::backend::tests::random;

    /// Every microkernel this machine can run.
    fn kernels() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut all = vec![kernel()];
        #[cfg(target_arch = "x86_64")]
        all.extend(super::super::x86::kernels());
        #[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
        all.extend([
            super::super::portable::KERNEL,
            super::super::portable::SPLAT4_TEST,
        ]);
        all
    }

    /// Against a plain f64 triple loop, for every kernel this machine runs:
    /// |c − ref| ≤ 1e-6·(1 + Σ|a·b|) (f32 rounding over k products in any order stays well
    /// inside that).
    #[test]
    fn matches_a_plain_f64_product_on_ragged_shapes() {
        for kernel in kernels() {
            plain_product(kernel);
        }
    }

    fn plain_product(kernel: Kernel) {
        for (i, &(m, n, k)) in [
            (1, 1, 1),
            (1, 17, 3),
            (7, 5, 9),
            (13, 33, 64),
            (37, 130, 65),
            (128, 384, 384),
            (9, 2, 1536),
            (19, 40, 600),
            (kernel.mc + 37, 20, 300),
        ]
        .iter()
        .enumerate()
        {
            let (lda, ldc) = (k + 3, n + 5);
            let a = random(m * lda, i as u64);
            let w = random(n * k, 100 + i as u64);
            let packed = Packed::for_kernel(kernel, &w, n, k);
            let mut c = vec![7.0f32; m * ldc];
            let ep = Epilogue {
                alpha: 1.0,
                bias: None,
                act: Activation::None,
            };
            gemm(Rows { data: &a, m, lda }, &packed, &mut c, ldc, &ep);
            for r in 0..m {
                for j in 0..ldc {
                    let got = c[r * ldc + j];
                    if j >= n {
                        assert_eq!(got, 7.0, "column {j} past n is untouched");
                        continue;
                    }
                    let (mut want, mut mag) = (0f64, 0f64);
                    for p in 0..k {
                        let t = f64::from(a[r * lda + p]) * f64::from(w[j * k + p]);
                        want += t;
                        mag += t.abs();
                    }
                    let tol = 1e-6 * (1.0 + mag);
                    assert!(
                        (f64::from(got) - want).abs() <= tol,
                        "{m}x{n}x{k} [{r},{j}]: {got} vs {want} ({})",
                        kernel.name
                    );
                }
            }
        }
    }

    #[test]
    fn scale_bias_and_activation_are_applied_on_store() {
        // k deeper than one pass, so the epilogue sees the sum of every pass.
        let (m, n, k) = (5, 20, kernel().kc + 44);
        let a = random(m * k, 1);
        let w = random(n * k, 2);
        let bias = random(n, 3);
        let packed = Packed::from_weight(&w, n, k);
        // A large scale for ReLU6, so that some results pass 6 and are clipped.
        for (alpha, act) in [(0.5, Activation::Relu), (8.0, Activation::Relu6)] {
            let mut c = vec![0f32; m * n];
            let ep = Epilogue {
                alpha,
                bias: Some(&bias),
                act,
            };
            gemm(
                Rows {
                    data: &a,
                    m,
                    lda: k,
                },
                &packed,
                &mut c,
                n,
                &ep,
            );
            let mut clipped = 0;
            for r in 0..m {
                for j in 0..n {
                    let dot: f32 = (0..k).map(|p| a[r * k + p] * w[j * k + p]).sum();
                    let pre = alpha * dot + bias[j];
                    let want = match act {
                        Activation::Relu6 => pre.clamp(0.0, 6.0),
                        _ => pre.max(0.0),
                    };
                    clipped += usize::from(pre > 6.0);
                    assert!((c[r * n + j] - want).abs() < 1e-4, "{act:?} [{r},{j}]");
                }
            }
            if act == Activation::Relu6 {
                assert!(clipped > 0, "some ReLU6 inputs are above 6");
            }
        }
    }
}
