//! Element-wise and row-wise CPU kernels: activations, softmax, layer norm.
//!
//! Written as straight-line, branch-free scalar code over slices so that the compiler
//! vectorizes them for every target (SIMD128 on wasm32, SSE/AVX natively): `exp` and `erf` are
//! polynomial approximations (no libm calls, which would stop vectorization), and reductions keep
//! one partial sum per lane.

use crate::backend::Activation;

/// What the matrix multiply does to each result before storing it:
/// `act(alpha · acc + bias[j])`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    pub alpha: f32,
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
}

impl Epilogue<'_> {
    pub const NONE: Epilogue<'static> = Epilogue {
        alpha: 1.0,
        bias: None,
        act: Activation::None,
    };

    /// Whether [`Epilogue::apply`] leaves values as they are.
    pub fn is_identity(&self) -> bool {
        self.alpha == 1.0 && self.bias.is_none() && self.act == Activation::None
    }

    /// Applies the epilogue in place to a row of results (columns `0..row.len()`).
    pub fn apply(&self, row: &mut [f32]) {
        match self.bias {
            Some(b) => {
                let b = &b[..row.len()];
                for (v, &b) in row.iter_mut().zip(b) {
                    *v = self.alpha * *v + b;
                }
            }
            None if self.alpha != 1.0 => row.iter_mut().for_each(|v| *v *= self.alpha),
            None => {}
        }
        activate(row, self.act);
    }
}

/// Applies an activation in place.
pub(crate) fn activate(x: &mut [f32], act: Activation) {
    match act {
        Activation::None => {}
        Activation::GeluErf => map(x, gelu_erf),
        Activation::GeluTanh => map(x, gelu_tanh),
        Activation::Relu => map(x, |v| max(v, 0.0)),
        Activation::Tanh => map(x, tanh),
        Activation::Relu6 => map(x, |v| v.clamp(0.0, 6.0)),
        Activation::Silu => map(x, silu),
    }
}

/// `x[i] = f(x[i])`, four at a time: a fixed group of four becomes one `f32x4` expression, also
/// on rows too short for the loop vectorizer's body (it left a 16-value tile row, as the
/// epilogue once ran per tile, to its scalar remainder).
#[inline(always)]
fn map(x: &mut [f32], f: impl Fn(f32) -> f32) {
    let mut fours = x.chunks_exact_mut(4);
    for four in &mut fours {
        for v in four {
            *v = f(*v);
        }
    }
    for v in fours.into_remainder() {
        *v = f(*v);
    }
}

/// The larger of `a` and `b` (`b` if either is NaN). Unlike `f32::max` this lowers to a compare
/// and select, which vectorize; `f32::max` is a call to `fmaxf` in amphi.wasm (wasm's `f32.max`
/// treats NaN differently), one call per value.
#[inline(always)]
pub(crate) fn max(a: f32, b: f32) -> f32 {
    if a > b { a } else { b }
}

/// `eˣ`, relative error < 3e-7 (2.5 ulp); `x` is clamped to [−87.3, 88] (results 1.2e-38 and 1.65e38).
/// Cody–Waite range reduction `x = n·ln2 + r`, |r| ≤ ln2/2, and a degree-6 polynomial.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5·2²³: adding and subtracting it rounds to the nearest integer without a libm call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2ⁿ through the exponent bits. `t`'s low mantissa bits hold n (t = 1.5·2²³ + n), so n is
    // read with integer ops only: a float-to-int conversion does not vectorize everywhere. The
    // clamp above keeps n in [−126, 127].
    let n = t.to_bits().wrapping_sub(ROUND.to_bits());
    let scale = f32::from_bits(n.wrapping_add(127) << 23);
    p * scale
}

/// `erf(x)`, absolute error < 5e-7 in f32 (1.5e-7 in exact arithmetic; Abramowitz & Stegun 7.1.26; the WGSL kernels use the same).
#[inline(always)]
pub(crate) fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_72 + t * (1.421_413_8 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// `tanh(x)` as `1 − 2/(e²ˣ + 1)`, absolute error < 3e-7.
#[inline(always)]
pub(crate) fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// Exact GELU, `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub(crate) fn gelu_erf(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// SiLU, `x · sigmoid(x) = x / (1 + e⁻ˣ)` (0 for x below −87, where e⁻ˣ is clamped).
#[inline(always)]
pub(crate) fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// GELU, tanh approximation (`gelu_new`).
#[inline(always)]
pub(crate) fn gelu_tanh(x: f32) -> f32 {
    const C: f32 = 0.797_884_6; // √(2/π)
    0.5 * x * (1.0 + tanh(C * (x + 0.044_715 * x * x * x)))
}

const LANES: usize = 8;

/// Σ xᵢ with one partial sum per lane (vectorizes; the order differs from a serial sum only by
/// rounding).
#[inline]
fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Σ (xᵢ − mean)².
#[inline]
fn sum_sq_dev(x: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks
        .remainder()
        .iter()
        .map(|v| (v - mean) * (v - mean))
        .sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += (v - mean) * (v - mean);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `out = LayerNorm(x + residual)` for one row.
pub(crate) fn layer_norm_row(
    x: &[f32],
    residual: Option<&[f32]>,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    out: &mut [f32],
) {
    match residual {
        Some(r) => {
            for ((o, a), b) in out.iter_mut().zip(x).zip(r) {
                *o = a + b;
            }
        }
        None => out.copy_from_slice(x),
    }
    let n = out.len() as f32;
    let mean = sum(out) / n;
    let inv_std = 1.0 / (sum_sq_dev(out, mean) / n + eps).sqrt();
    for ((o, g), b) in out.iter_mut().zip(gamma).zip(beta) {
        *o = (*o - mean) * inv_std * g + b;
    }
}

/// `out = x / √(mean(x²) + eps) · gamma` for one group of values (RMSNorm).
pub(crate) fn rms_norm_group(x: &[f32], gamma: &[f32], eps: f32, out: &mut [f32]) {
    let mut acc = [0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    for c in chunks {
        for (a, v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let mean = (acc.iter().sum::<f32>() + tail) / x.len() as f32;
    let inv = 1.0 / (mean + eps).sqrt();
    for ((o, &v), &g) in out.iter_mut().zip(x).zip(gamma) {
        *o = v * inv * g;
    }
}

/// Softmax of one row of attention scores in place; keys whose `mask` is 0 get weight 0 (if no
/// key is attended, every key gets the same weight, as Hugging Face's additive mask gives).
pub(crate) fn masked_softmax_row(scores: &mut [f32], mask: &[f32]) {
    // The largest attended score, one running maximum per lane.
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let (chunks, tail) = (scores.chunks_exact(LANES), scores.len() / LANES * LANES);
    for (c, m) in chunks.zip(mask.chunks_exact(LANES)) {
        for ((l, &s), &m) in lanes.iter_mut().zip(c).zip(m) {
            *l = max(*l, if m != 0.0 { s } else { f32::NEG_INFINITY });
        }
    }
    let mut top = lanes.iter().fold(f32::NEG_INFINITY, |a, &b| max(a, b));
    for (&s, &m) in scores[tail..].iter().zip(&mask[tail..]) {
        if m != 0.0 {
            top = max(top, s);
        }
    }
    if top == f32::NEG_INFINITY {
        let w = 1.0 / scores.len() as f32;
        scores.iter_mut().for_each(|s| *s = w);
        return;
    }
    for (s, &m) in scores.iter_mut().zip(mask) {
        *s = exp(*s - top) * m;
    }
    let inv = 1.0 / sum(scores);
    scores.iter_mut().for_each(|s| *s *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(lo: f32, hi: f32, n: usize) -> impl Iterator<Item = f32> {
        (0..=n).map(move |i| lo + (hi - lo) * i as f32 / n as f32)
    }

    /// Against f64 libm.
    #[test]
    fn exp_erf_tanh_against_libm() {
        for x in grid(-87.0, 88.0, 100_000) {
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}): {got} vs {want}"
            );
        }
        assert_eq!(exp(-200.0), exp(-87.3));
        assert!(exp(-200.0) < 1e-37);
        for x in grid(-6.0, 6.0, 100_000) {
            let want = libm_erf(f64::from(x));
            let got = f64::from(erf(x));
            assert!((got - want).abs() < 5e-7, "erf({x}): {got} vs {want}");
            let want = f64::from(x).tanh();
            let got = f64::from(tanh(x));
            assert!((got - want).abs() < 3e-7, "tanh({x}): {got} vs {want}");
        }
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(-100.0), -1.0);
        assert_eq!(gelu_erf(0.0), 0.0);
    }

    /// erf in f64 by its Taylor series (|x| ≤ 3) or the continued fraction of erfc (|x| > 3).
    fn libm_erf(x: f64) -> f64 {
        let a = x.abs();
        let v = if a <= 3.0 {
            let (mut term, mut total, mut k) = (a, a, 0.0);
            while term.abs() > 1e-17 {
                k += 1.0;
                term *= -a * a / k;
                total += term / (2.0 * k + 1.0);
            }
            total * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for k in (1..60).rev() {
                f = f64::from(k) / 2.0 / (a + f);
            }
            1.0 - (-a * a).exp() / std::f64::consts::PI.sqrt() / (a + f)
        };
        v.copysign(x)
    }

    #[test]
    fn softmax_with_masked_keys() {
        let mut s = [1.0, 2.0, 3.0, 100.0];
        masked_softmax_row(&mut s, &[1.0, 1.0, 1.0, 0.0]);
        let e: Vec<f64> = [1.0f64, 2.0, 3.0].iter().map(|v| v.exp()).collect();
        let total: f64 = e.iter().sum();
        for i in 0..3 {
            assert!((f64::from(s[i]) - e[i] / total).abs() < 1e-7);
        }
        assert_eq!(s[3], 0.0);
        let mut s = [5.0, 1.0];
        masked_softmax_row(&mut s, &[0.0, 0.0]);
        assert_eq!(s, [0.5, 0.5]);
    }

    #[test]
    fn layer_norm_matches_the_definition() {
        let x: Vec<f32> = (0..19).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let r: Vec<f32> = (0..19).map(|i| (i as f32 * 0.11).cos()).collect();
        let g: Vec<f32> = (0..19).map(|i| 1.0 + i as f32 * 0.01).collect();
        let b: Vec<f32> = (0..19).map(|i| i as f32 * -0.02).collect();
        let mut out = vec![0f32; 19];
        layer_norm_row(&x, Some(&r), &g, &b, 1e-12, &mut out);
        let s: Vec<f64> = x.iter().zip(&r).map(|(a, b)| f64::from(a + b)).collect();
        let mean = s.iter().sum::<f64>() / 19.0;
        let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 19.0;
        for i in 0..19 {
            let want = (s[i] - mean) / (var + 1e-12).sqrt() * f64::from(g[i]) + f64::from(b[i]);
            assert!((f64::from(out[i]) - want).abs() < 1e-5, "{i}");
        }
    }
}
