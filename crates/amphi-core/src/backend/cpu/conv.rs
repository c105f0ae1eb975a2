//! Depthwise convolution over NHWC rows (`[batch·h·w, c]`): channels are contiguous, so every
//! inner loop is a multiply-add over a row of `c` values, which the compiler vectorizes.

use super::math::activate;
use crate::backend::{Activation, Conv2d};

/// `out[n, oy, ox, :] = act(b + Σ x[n, iy, ix, :] · w[ky·k + kx, :])`, with
/// `iy = oy·stride + ky − pad_top` (TF "SAME" zero padding: taps outside the image add nothing).
/// `x` is `[batch·h·w, c]`, `w` `[k·k, c]`, `b` `[c]` and `out` `[batch·oh·ow, c]`.
pub(crate) fn depthwise(
    x: &[f32],
    w: &[f32],
    b: &[f32],
    conv: Conv2d,
    act: Activation,
    out: &mut [f32],
) {
    let c = b.len();
    let (input, output) = (conv.input, conv.output());
    let (k, stride) = (conv.kernel, conv.stride);
    let (pad_top, pad_left) = conv.pad_top_left();
    let (h, wd) = (input.height, input.width);
    let (oh, ow) = (output.height, output.width);
    // One output image row (`ow·c` values) at a time.
    let row = |r: usize, dst: &mut [f32]| {
        let (n, oy) = (r / oh, r % oh);
        let image = &x[n * h * wd * c..][..h * wd * c];
        for (ox, o) in dst.chunks_exact_mut(c).enumerate() {
            o.copy_from_slice(b);
            for ky in 0..k {
                let Some(iy) = (oy * stride + ky).checked_sub(pad_top).filter(|&y| y < h) else {
                    continue;
                };
                for kx in 0..k {
                    let Some(ix) = (ox * stride + kx).checked_sub(pad_left).filter(|&v| v < wd)
                    else {
                        continue;
                    };
                    let src = &image[(iy * wd + ix) * c..][..c];
                    let tap = &w[(ky * k + kx) * c..][..c];
                    for ((o, &s), &t) in o.iter_mut().zip(src).zip(tap) {
                        *o += s * t;
                    }
                }
            }
            activate(o, act);
        }
    };
    each_row(out, ow * c, &row);
}

type RowFn<'a> = dyn Fn(usize, &mut [f32]) + Sync + 'a;

/// Runs `f(r, row_r)` over the output rows, in parallel natively when there is enough work.
#[cfg(not(target_arch = "wasm32"))]
fn each_row(out: &mut [f32], per: usize, f: &RowFn<'_>) {
    use rayon::prelude::*;
    if rayon::current_num_threads() <= 1 || out.len() < 1 << 14 {
        return out
            .chunks_mut(per.max(1))
            .enumerate()
            .for_each(|(r, o)| f(r, o));
    }
    out.par_chunks_mut(per.max(1))
        .enumerate()
        .for_each(|(r, o)| f(r, o));
}

/// wasm32 has one thread.
#[cfg(target_arch = "wasm32")]
fn each_row(out: &mut [f32], per: usize, f: &RowFn<'_>) {
    for (r, o) in out.chunks_mut(per.max(1)).enumerate() {
        f(r, o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ImageShape;
    use crate::backend::tests::random;

    /// The definition, in f64, with the padding written out as a padded copy of the input.
    fn reference(x: &[f32], w: &[f32], b: &[f32], conv: Conv2d) -> Vec<f64> {
        let c = b.len();
        let ImageShape {
            batch,
            height: h,
            width: wd,
        } = conv.input;
        let (k, s) = (conv.kernel, conv.stride);
        let oh = h.div_ceil(s);
        let ow = wd.div_ceil(s);
        let pad_h = ((oh - 1) * s + k).saturating_sub(h);
        let pad_w = ((ow - 1) * s + k).saturating_sub(wd);
        let (top, left) = (pad_h / 2, pad_w / 2);
        let (ph, pw) = (h + pad_h, wd + pad_w);
        let mut padded = vec![0f64; batch * ph * pw * c];
        for n in 0..batch {
            for y in 0..h {
                for xx in 0..wd {
                    for ch in 0..c {
                        padded[((n * ph + y + top) * pw + xx + left) * c + ch] =
                            f64::from(x[((n * h + y) * wd + xx) * c + ch]);
                    }
                }
            }
        }
        let mut out = vec![0f64; batch * oh * ow * c];
        for n in 0..batch {
            for oy in 0..oh {
                for ox in 0..ow {
                    for ch in 0..c {
                        let mut acc = f64::from(b[ch]);
                        for ky in 0..k {
                            for kx in 0..k {
                                acc += padded[((n * ph + oy * s + ky) * pw + ox * s + kx) * c + ch]
                                    * f64::from(w[(ky * k + kx) * c + ch]);
                            }
                        }
                        out[((n * oh + oy) * ow + ox) * c + ch] = acc;
                    }
                }
            }
        }
        out
    }

    /// Shapes: odd and even sizes, non-square images, kernels 1/3/5 with strides 1/2, images
    /// smaller than the kernel, a single channel and channel counts that are not multiples of
    /// any vector width.
    const SHAPES: [(usize, usize, usize, usize, usize, usize); 10] = [
        // (batch, h, w, c, kernel, stride)
        (1, 1, 1, 1, 3, 1),
        (1, 7, 5, 3, 3, 1),
        (2, 7, 9, 5, 3, 2),
        (1, 8, 8, 17, 3, 2),
        (3, 6, 11, 4, 5, 1),
        (1, 9, 7, 33, 5, 2),
        (2, 14, 14, 24, 5, 2),
        (1, 3, 2, 2, 5, 2),
        (1, 5, 6, 7, 1, 2),
        (1, 12, 10, 40, 3, 1),
    ];

    #[test]
    fn matches_the_definition_on_ragged_shapes() {
        for (i, &(batch, height, width, c, kernel, stride)) in SHAPES.iter().enumerate() {
            let conv = Conv2d {
                input: ImageShape {
                    batch,
                    height,
                    width,
                },
                kernel,
                stride,
            };
            let x = random(conv.input.pixels() * c, i as u64);
            let w = random(kernel * kernel * c, 100 + i as u64);
            let b = random(c, 200 + i as u64);
            let want = reference(&x, &w, &b, conv);
            for act in [Activation::None, Activation::Relu6] {
                let mut got = vec![f32::NAN; conv.output().pixels() * c];
                depthwise(&x, &w, &b, conv, act, &mut got);
                for (j, (&g, &r)) in got.iter().zip(&want).enumerate() {
                    let r = match act {
                        Activation::Relu6 => r.clamp(0.0, 6.0),
                        _ => r,
                    };
                    assert!(
                        (f64::from(g) - r).abs() <= 1e-5,
                        "{conv:?} {act:?} [{j}]: {g} vs {r}"
                    );
                }
            }
        }
    }
}
