//! Pillow's `Image.resize` on 8-bit images, reproduced bit for bit (Pillow 13 `Resample.c`;
//! the fixtures README, Appendix A): a separable convolution, horizontal pass first, with
//! weights normalised in f64 and rounded to 22-bit fixed point, and the intermediate image
//! rounded to `u8` between the passes. Downscaling widens the filter by the scale factor, which
//! is what makes Pillow's `BILINEAR` antialiased (unlike OpenCV's or a GPU sampler's).

use serde::Deserialize;

const PRECISION_BITS: u32 = 22;

/// A resampling filter, numbered as Pillow's `Image.Resampling` (the `resample` field of a
/// Hugging Face `preprocessor_config.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(try_from = "u8")]
pub enum Filter {
    /// 0: the nearest source pixel.
    Nearest,
    /// 1: Lanczos (a = 3).
    Lanczos,
    /// 2: the triangle filter, antialiased when downscaling.
    #[default]
    Bilinear,
    /// 3: cubic convolution with a = −0.5.
    Bicubic,
    /// 4: box (area averaging).
    Box,
    /// 5: Hamming-windowed sinc.
    Hamming,
}

impl TryFrom<u8> for Filter {
    type Error = String;

    fn try_from(v: u8) -> Result<Self, String> {
        Ok(match v {
            0 => Filter::Nearest,
            1 => Filter::Lanczos,
            2 => Filter::Bilinear,
            3 => Filter::Bicubic,
            4 => Filter::Box,
            5 => Filter::Hamming,
            other => return Err(format!("resample {other} is not a Pillow filter (0 to 5)")),
        })
    }
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Nearest | Filter::Box => 0.5,
            Filter::Bilinear | Filter::Hamming => 1.0,
            Filter::Bicubic => 2.0,
            Filter::Lanczos => 3.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        use std::f64::consts::PI;
        let sinc = |x: f64| {
            if x == 0.0 {
                1.0
            } else {
                (PI * x).sin() / (PI * x)
            }
        };
        match self {
            Filter::Nearest | Filter::Box => f64::from(u8::from(x > -0.5 && x <= 0.5)),
            Filter::Bilinear => (1.0 - x.abs()).max(0.0),
            Filter::Hamming => {
                let x = x.abs();
                if x == 0.0 {
                    1.0
                } else if x >= 1.0 {
                    0.0
                } else {
                    let x = x * PI;
                    x.sin() / x * (0.54 + 0.46 * x.cos())
                }
            }
            Filter::Bicubic => {
                let (a, x) = (-0.5, x.abs());
                if x < 1.0 {
                    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * a
                } else {
                    0.0
                }
            }
            Filter::Lanczos => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

/// For each output sample: the first input sample and the fixed-point weights.
struct Coefficients {
    first: Vec<usize>,
    weights: Vec<Vec<i32>>,
}

fn coefficients(input: usize, output: usize, filter: Filter) -> Coefficients {
    let scale = input as f64 / output as f64;
    let filter_scale = scale.max(1.0);
    let support = filter.support() * filter_scale;
    let inverse = 1.0 / filter_scale;
    let mut first = Vec::with_capacity(output);
    let mut weights = Vec::with_capacity(output);
    for i in 0..output {
        let center = (i as f64 + 0.5) * scale;
        // `as` truncates toward zero, as C's `(int)` does.
        let min = ((center - support + 0.5) as i64).max(0) as usize;
        let max = ((center + support + 0.5) as i64).min(input as i64) as usize;
        let w: Vec<f64> = (min..max.max(min))
            .map(|x| filter.weight((x as f64 - center + 0.5) * inverse))
            .collect();
        let sum: f64 = w.iter().sum();
        let one = f64::from(1u32 << PRECISION_BITS);
        weights.push(
            w.iter()
                .map(|&w| {
                    let w = if sum != 0.0 { w / sum } else { w };
                    if w < 0.0 {
                        (w * one - 0.5) as i32
                    } else {
                        (w * one + 0.5) as i32
                    }
                })
                .collect(),
        );
        first.push(min);
    }
    Coefficients { first, weights }
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Which pass of a two-pass resize runs first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Pillow's order: the intermediate is `ow × h`.
    HorizontalFirst,
    /// The intermediate is `w × oh`: for extreme aspect ratios, where Pillow's would not fit.
    /// Rounding between the passes differs, so bytes may differ from Pillow's by one level.
    VerticalFirst,
}

/// Resizes interleaved 8-bit pixels (`channels` per pixel, at most 4, row-major) from `w×h` to
/// `ow×oh`.
pub(crate) fn resize(
    src: &[u8],
    (w, h): (usize, usize),
    channels: usize,
    (ow, oh): (usize, usize),
    filter: Filter,
    order: Order,
) -> Vec<u8> {
    debug_assert!((1..=4).contains(&channels), "1 to 4 channels");
    if filter == Filter::Nearest {
        return nearest(src, (w, h), channels, (ow, oh));
    }
    if order == Order::VerticalFirst && ow != w && oh != h {
        // Transpose, resize the (now horizontal) rows first, transpose back: the vertical pass
        // runs first on the original image.
        let t = transpose(src, (w, h), channels);
        let out = resize(
            &t,
            (h, w),
            channels,
            (oh, ow),
            filter,
            Order::HorizontalFirst,
        );
        return transpose(&out, (oh, ow), channels);
    }
    // Pillow accumulates in 32-bit integers; with weights normalised to 2^22 the sums stay
    // within ±1.4e9 for every filter, as in Pillow.
    let half = 1i32 << (PRECISION_BITS - 1);
    let horizontal = if ow != w {
        let c = coefficients(w, ow, filter);
        let mut out = vec![0u8; ow * h * channels];
        for (src_row, out_row) in src
            .chunks_exact(w * channels)
            .zip(out.chunks_exact_mut(ow * channels))
        {
            for (x, px) in out_row.chunks_exact_mut(channels).enumerate() {
                let taps = &c.weights[x];
                let window = &src_row[c.first[x] * channels..][..taps.len() * channels];
                let mut acc = [half; 4];
                for (&k, p) in taps.iter().zip(window.chunks_exact(channels)) {
                    for (a, &v) in acc.iter_mut().zip(p) {
                        *a += i32::from(v) * k;
                    }
                }
                for (o, &a) in px.iter_mut().zip(&acc) {
                    *o = clip8(a);
                }
            }
        }
        out
    } else {
        src.to_vec()
    };
    if oh == h {
        return horizontal;
    }
    // Vertically, whole rows at a time: the inner loop runs over contiguous bytes.
    let c = coefficients(h, oh, filter);
    let stride = ow * channels;
    let mut out = vec![0u8; oh * stride];
    let mut acc = vec![0i32; stride];
    for (y, out_row) in out.chunks_exact_mut(stride).enumerate() {
        acc.fill(half);
        for (j, &k) in c.weights[y].iter().enumerate() {
            let row = &horizontal[(c.first[y] + j) * stride..][..stride];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += i32::from(v) * k;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

/// The `h × w` image of a `w × h` one, mirrored on its diagonal.
fn transpose(src: &[u8], (w, h): (usize, usize), channels: usize) -> Vec<u8> {
    let mut out = vec![0u8; src.len()];
    for y in 0..h {
        for x in 0..w {
            let from = (y * w + x) * channels;
            let to = (x * h + y) * channels;
            out[to..to + channels].copy_from_slice(&src[from..from + channels]);
        }
    }
    out
}

/// Pillow's `NEAREST` (`ImagingScaleAffine`): the source pixel under each output pixel's
/// centre, the centres accumulated in f64 one step at a time as Pillow does (so that rounding
/// at exact boundaries matches it too).
fn nearest(
    src: &[u8],
    (w, h): (usize, usize),
    channels: usize,
    (ow, oh): (usize, usize),
) -> Vec<u8> {
    let table = |input: usize, output: usize| -> Vec<usize> {
        let step = input as f64 / output as f64;
        let mut at = step * 0.5;
        (0..output)
            .map(|_| {
                let i = (at as usize).min(input - 1);
                at += step;
                i
            })
            .collect()
    };
    let (xs, ys) = (table(w, ow), table(h, oh));
    let mut out = Vec::with_capacity(ow * oh * channels);
    for &sy in &ys {
        for &sx in &xs {
            let s = (sy * w + sx) * channels;
            out.extend_from_slice(&src[s..s + channels]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_and_constant_images() {
        let src: Vec<u8> = (0..5 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        assert_eq!(
            resize(
                &src,
                (5, 4),
                3,
                (5, 4),
                Filter::Bilinear,
                Order::HorizontalFirst
            ),
            src
        );
        // A constant image stays constant under every normalised filter, up or down.
        let flat = vec![200u8; 7 * 5 * 3];
        for f in [
            Filter::Bilinear,
            Filter::Bicubic,
            Filter::Lanczos,
            Filter::Box,
            Filter::Hamming,
            Filter::Nearest,
        ] {
            for size in [(3, 2), (11, 9), (7, 1)] {
                let out = resize(&flat, (7, 5), 3, size, f, Order::HorizontalFirst);
                assert_eq!(out.len(), size.0 * size.1 * 3);
                assert!(out.iter().all(|&v| v == 200), "{f:?} {size:?}: {out:?}");
            }
        }
    }

    #[test]
    fn downscaling_by_two_with_bilinear_averages_with_a_triangle() {
        // 4 → 2 in x: scale 2, support 2, centres 1 and 3; weights for output 0 over inputs
        // 0..=2 are tri((x − 1 + 0.5)/2) = 0.75, 0.75, 0.25 → normalised 3/7, 3/7, 1/7.
        let src = [0u8, 70, 140, 210];
        let out = resize(
            &src,
            (4, 1),
            1,
            (2, 1),
            Filter::Bilinear,
            Order::HorizontalFirst,
        );
        let want0 = ((70.0 * 3.0 + 140.0) / 7.0_f64).round() as u8;
        assert_eq!(out[0], want0);
    }
}
