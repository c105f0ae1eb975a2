//! `preprocessor_config.json` as Hugging Face image processors read it (`ViTImageProcessor`,
//! `ConvNextImageProcessor`, `EfficientNetImageProcessor` …): resize with the named Pillow
//! filter (a fixed size, or the shortest edge keeping the aspect ratio), centre crop, rescale,
//! normalise, channels first (RGB). The resize is Pillow's, bit for bit.

use std::borrow::Cow;

use serde::Deserialize;

use super::resize::Order;
use super::{Filter, Image};
use crate::error::{Error, Result};

const FILE: &str = "preprocessor_config.json";

/// The largest side a size in the config may ask for.
const MAX_SIDE: u64 = 8192;

/// A target size: `{"height", "width"}`, `{"shortest_edge"[, "longest_edge"]}`, or a number
/// (a square).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Size {
    /// Exactly this size.
    Exact {
        /// Rows.
        height: usize,
        /// Pixels per row.
        width: usize,
    },
    /// The shorter side becomes `shortest_edge`, the longer one keeps the aspect ratio
    /// (truncated, as transformers does), capped at `longest_edge`.
    ShortestEdge {
        /// The shorter side's target.
        shortest_edge: usize,
        /// An optional cap on the longer side.
        #[serde(default)]
        longest_edge: Option<usize>,
    },
    /// A square.
    Square(usize),
}

impl Size {
    /// The output `(width, height)` for an input of `(width, height)`. Computed in 128-bit
    /// integers and saturated, so that an extreme aspect ratio yields a huge size (which
    /// [`Preprocessor::prepare`] refuses) rather than an overflow.
    fn output(self, (w, h): (usize, usize)) -> (usize, usize) {
        match self {
            Size::Exact { height, width } => (width, height),
            Size::Square(s) => (s, s),
            Size::ShortestEdge {
                shortest_edge,
                longest_edge,
            } => {
                let wide = |v: usize| v as u128;
                let (short, long) = (wide(w.min(h).max(1)), wide(w.max(h)));
                let mut new_short = wide(shortest_edge);
                let mut new_long = new_short * long / short;
                if let Some(max) = longest_edge.map(wide).filter(|&m| new_long > m) {
                    new_short = max * new_short / new_long;
                    new_long = max;
                }
                let narrow = |v: u128| usize::try_from(v.max(1)).unwrap_or(usize::MAX);
                let (new_short, new_long) = (narrow(new_short), narrow(new_long));
                if w <= h {
                    (new_short, new_long)
                } else {
                    (new_long, new_short)
                }
            }
        }
    }

    fn valid(self) -> bool {
        match self {
            Size::Exact { height, width } => {
                (1..=MAX_SIDE as usize).contains(&height)
                    && (1..=MAX_SIDE as usize).contains(&width)
            }
            Size::Square(s)
            | Size::ShortestEdge {
                shortest_edge: s, ..
            } => (1..=MAX_SIDE as usize).contains(&s),
        }
    }
}

fn yes() -> bool {
    true
}
fn default_rescale() -> f64 {
    1.0 / 255.0
}
fn half() -> Vec<f64> {
    vec![0.5; 3]
}

/// The preprocessing of a model folder (`preprocessor_config.json`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Preprocessor {
    /// Resize first.
    #[serde(default = "yes")]
    pub do_resize: bool,
    /// The resize target.
    pub size: Option<Size>,
    /// The Pillow filter (default bilinear).
    #[serde(default)]
    pub resample: Filter,
    /// Crop the centre after resizing.
    #[serde(default)]
    pub do_center_crop: bool,
    /// The crop (padded with zeros where the image is smaller).
    pub crop_size: Option<Size>,
    /// Multiply by `rescale_factor`.
    #[serde(default = "yes")]
    pub do_rescale: bool,
    /// Usually 1/255.
    #[serde(default = "default_rescale")]
    pub rescale_factor: f64,
    /// Subtract `image_mean` and divide by `image_std`, per channel.
    #[serde(default = "yes")]
    pub do_normalize: bool,
    /// Per-channel means (RGB).
    #[serde(default = "half")]
    pub image_mean: Vec<f64>,
    /// Per-channel standard deviations (RGB).
    #[serde(default = "half")]
    pub image_std: Vec<f64>,
    /// Channels in BGR order (after rescaling and normalising, as MobileViT's processor does).
    #[serde(default)]
    pub do_flip_channel_order: bool,
}

impl Preprocessor {
    /// Parses and checks `preprocessor_config.json`.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let p: Self = serde_json::from_slice(bytes).map_err(|e| Error::json(FILE, e))?;
        let bad = |message: &str| Error::InvalidConfig {
            file: FILE.to_owned(),
            message: message.to_owned(),
        };
        if p.do_resize && !p.size.is_some_and(Size::valid) {
            return Err(bad("do_resize needs a size between 1 and 8192"));
        }
        if p.do_center_crop
            && !p
                .crop_size
                .is_some_and(|s| s.valid() && !matches!(s, Size::ShortestEdge { .. }))
        {
            return Err(bad(
                "do_center_crop needs a crop_size {height, width} between 1 and 8192",
            ));
        }
        if p.image_mean.len() != 3 || p.image_std.len() != 3 {
            return Err(bad("image_mean and image_std need three values (RGB)"));
        }
        if p.image_std.iter().any(|&s| !s.is_finite() || s == 0.0)
            || p.image_mean.iter().any(|m| !m.is_finite())
            || !p.rescale_factor.is_finite()
        {
            return Err(bad(
                "image_mean, image_std and rescale_factor must be finite, std non-zero",
            ));
        }
        Ok(p)
    }

    /// The `(width, height)` of the model input.
    pub fn output_size(&self, input: (usize, usize)) -> (usize, usize) {
        let resized = match (self.do_resize, self.size) {
            (true, Some(size)) => size.output(input),
            _ => input,
        };
        match (self.do_center_crop, self.crop_size) {
            (true, Some(crop)) => crop.output(resized),
            _ => resized,
        }
    }

    /// Resize and crop: the 8-bit image the model sees. Refuses (`input_too_large`) an image
    /// whose resize would hold more than `max_pixels` pixels at once (at least the largest
    /// output a valid config asks for, 8192²): the resized image, or the intermediate between
    /// the two passes. Pillow's order (horizontal pass first) is kept whenever its
    /// intermediate fits; only an extreme aspect ratio, one side upscaled and the other
    /// downscaled by far, is resized vertically first (within ±1 level of Pillow's bytes).
    pub fn prepare<'a>(&self, image: &'a Image, max_pixels: u64) -> Result<Cow<'a, Image>> {
        let limit = max_pixels.max(MAX_SIDE * MAX_SIDE);
        let size = (image.width(), image.height());
        let mut image = match (self.do_resize, self.size) {
            (true, Some(s)) if s.output(size) != size => {
                let (w, h) = s.output(size);
                let area = |a: usize, b: usize| (a as u128) * (b as u128);
                let too_large = |what: &str, a: usize, b: usize| Error::InputTooLarge {
                    message: format!(
                        "a {}×{} image would be resized through a {what} of {a}×{b} pixels; the \
                         limit is {limit} pixels (an extreme aspect ratio)",
                        size.0, size.1
                    ),
                };
                if area(w, h) > u128::from(limit) {
                    return Err(too_large("result", w, h));
                }
                let order = if area(w, size.1) <= u128::from(limit) {
                    Order::HorizontalFirst
                } else if area(size.0, h) <= u128::from(limit) {
                    Order::VerticalFirst
                } else {
                    return Err(too_large("pass", w, size.1));
                };
                crate::interrupt::check()?;
                Cow::Owned(image.resize_in(w, h, self.resample, order))
            }
            _ => Cow::Borrowed(image),
        };
        if let (true, Some(crop)) = (self.do_center_crop, self.crop_size) {
            let (cw, ch) = crop.output((image.width(), image.height()));
            image = Cow::Owned(center_crop(&image, cw, ch));
        }
        Ok(image)
    }

    /// The `pixel_values` of one image: `[3, height, width]`, channels first (RGB, or BGR with
    /// `do_flip_channel_order`), rescaled and normalised in f32 as transformers does
    /// (`u8 · factor` rounded to f32, then `(x − mean) / std`). `max_pixels` bounds the resize
    /// as in [`Preprocessor::prepare`].
    pub fn pixel_values(&self, image: &Image, max_pixels: u64) -> Result<Vec<f32>> {
        let image = self.prepare(image, max_pixels)?;
        crate::interrupt::check()?;
        let plane = image.width() * image.height();
        let mut out = vec![0f32; 3 * plane];
        for c in 0..3 {
            let (mean, std) = (self.image_mean[c] as f32, self.image_std[c] as f32);
            let to = if self.do_flip_channel_order { 2 - c } else { c };
            for (o, px) in out[to * plane..(to + 1) * plane]
                .iter_mut()
                .zip(image.rgb().chunks_exact(3))
            {
                let v = f64::from(px[c]);
                let v = if self.do_rescale {
                    (v * self.rescale_factor) as f32
                } else {
                    v as f32
                };
                *o = if self.do_normalize {
                    (v - mean) / std
                } else {
                    v
                };
            }
        }
        Ok(out)
    }
}

/// transformers' `center_crop`: the window at `((w − cw) / 2, (h − ch) / 2)`; where the image is
/// smaller than the crop it is first padded with zeros, centred.
fn center_crop(image: &Image, cw: usize, ch: usize) -> Image {
    let (w, h) = (image.width(), image.height());
    // Offsets of the crop's origin in the (possibly padded) image, as signed numbers.
    let origin = |size: usize, crop: usize| -> isize {
        if crop <= size {
            ((size - crop) / 2) as isize
        } else {
            -(((crop - size) / 2) as isize)
        }
    };
    let (left, top) = (origin(w, cw), origin(h, ch));
    let mut rgb = vec![0u8; cw * ch * 3];
    for y in 0..ch {
        let sy = top + y as isize;
        if sy < 0 || sy >= h as isize {
            continue;
        }
        for x in 0..cw {
            let sx = left + x as isize;
            if sx < 0 || sx >= w as isize {
                continue;
            }
            let s = (sy as usize * w + sx as usize) * 3;
            rgb[(y * cw + x) * 3..][..3].copy_from_slice(&image.rgb()[s..s + 3]);
        }
    }
    Image {
        width: cw,
        height: ch,
        rgb,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::DEFAULT_MAX_IMAGE_PIXELS;
    use crate::test_support::{fixtures, json, numbers};

    fn load(path: &str) -> Image {
        let bytes = std::fs::read(fixtures().join(path)).expect(path);
        Image::decode(&bytes, DEFAULT_MAX_IMAGE_PIXELS).expect("decode")
    }

    /// tiny-vit: the images resized exactly as Pillow does (`resized_rgb_u8`, every byte equal)
    /// and `pixel_values` within 1e-6 (the fixtures' tolerance).
    #[test]
    fn tiny_vit_preprocessing_matches_pillow_exactly() {
        let p = Preprocessor::from_json(
            &std::fs::read(fixtures().join("models/tiny-vit/preprocessor_config.json"))
                .expect("preprocessor"),
        )
        .expect("parse");
        let golden = json("golden/tiny-vit.json");
        let mut checked = 0;
        for case in golden["cases"].as_array().expect("cases") {
            let Some(path) = case["image"].as_str() else {
                continue;
            };
            let image = load(path);
            let resized = p
                .prepare(&image, DEFAULT_MAX_IMAGE_PIXELS)
                .expect("prepare");
            let want: Vec<u8> = numbers(&case["resized_rgb_u8"])
                .iter()
                .map(|&v| v as u8)
                .collect();
            assert_eq!(resized.rgb(), want, "{path}: resized bytes");
            let want = numbers(&case["pixel_values"]);
            let got = p
                .pixel_values(&image, DEFAULT_MAX_IMAGE_PIXELS)
                .expect("pixels");
            assert_eq!(got.len(), want.len());
            for (g, w) in got.iter().zip(&want) {
                assert!((f64::from(*g) - w).abs() <= 1e-6, "{path}: {g} vs {w}");
            }
            checked += 1;
        }
        assert_eq!(checked, 2, "both images checked");
    }

    /// EfficientNet-Lite0's preprocessing (shortest edge 256, centre crop 224) on coffee.png:
    /// the crop equals `cropped_rgb_u8` byte for byte.
    #[test]
    fn shortest_edge_resize_and_center_crop_match_pillow_exactly() {
        let p = Preprocessor::from_json(
            br#"{"do_resize": true, "size": {"shortest_edge": 256}, "resample": 2,
                 "do_center_crop": true, "crop_size": {"height": 224, "width": 224},
                 "do_rescale": false, "image_mean": [127, 127, 127], "image_std": [128, 128, 128]}"#,
        )
        .expect("parse");
        let golden = json("golden/efficientnet-lite0-coffee.json");
        let case = golden["cases"]
            .as_array()
            .and_then(|c| c.first())
            .unwrap_or(&golden);
        let image = load("images/coffee.png");
        assert_eq!(p.output_size((600, 400)), (224, 224));
        assert_eq!(
            Size::ShortestEdge {
                shortest_edge: 256,
                longest_edge: None
            }
            .output((600, 400)),
            (384, 256)
        );
        let want: Vec<u8> = numbers(&case["cropped_rgb_u8"])
            .iter()
            .map(|&v| v as u8)
            .collect();
        assert_eq!(
            p.prepare(&image, DEFAULT_MAX_IMAGE_PIXELS)
                .expect("prepare")
                .rgb(),
            want,
            "cropped bytes"
        );
        let px = p
            .pixel_values(&image, DEFAULT_MAX_IMAGE_PIXELS)
            .expect("pixels");
        assert_eq!(px[0], (f32::from(want[0]) - 127.0) / 128.0);
    }

    #[test]
    fn bad_configs_are_refused() {
        for bad in [
            r#"{"size": {"height": 0, "width": 3}}"#,
            r#"{"do_resize": true}"#,
            r#"{"size": 8, "resample": 9}"#,
            r#"{"size": 8, "image_std": [0, 1, 1]}"#,
            r#"{"size": 8, "image_mean": [0.5]}"#,
            r#"{"size": 8, "do_center_crop": true}"#,
            "not json",
        ] {
            assert!(Preprocessor::from_json(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn flipped_channel_order_is_bgr() {
        let img = Image::from_rgb(1, 1, vec![10, 20, 30]).expect("rgb");
        let config = |flip: bool| {
            let json = format!(
                r#"{{"do_resize": false, "do_rescale": false, "do_normalize": false,
                    "do_flip_channel_order": {flip}}}"#
            );
            Preprocessor::from_json(json.as_bytes()).expect("parse")
        };
        assert_eq!(
            config(false).pixel_values(&img, 1).expect("px"),
            [10.0, 20.0, 30.0]
        );
        assert_eq!(
            config(true).pixel_values(&img, 1).expect("px"),
            [30.0, 20.0, 10.0]
        );
    }

    /// An extreme aspect ratio: Pillow's order would hold a 32 × 4 M intermediate, over the
    /// limit, so the vertical pass runs first; a shortest-edge resize of the same image would be
    /// 256 × 1 G pixels and is refused before anything is allocated (it used to overflow).
    #[test]
    fn extreme_aspect_ratios_are_bounded() {
        let tall = Image::from_rgb(1, 4_000_000, vec![7; 12_000_000]).expect("rgb");
        let exact =
            Preprocessor::from_json(br#"{"size": {"height": 32, "width": 32}}"#).expect("parse");
        let out = exact.prepare(&tall, 1 << 20).expect("vertical first");
        assert_eq!((out.width(), out.height()), (32, 32));
        assert!(out.rgb().iter().all(|&v| v == 7), "a flat image stays flat");
        let shortest =
            Preprocessor::from_json(br#"{"size": {"shortest_edge": 256}}"#).expect("parse");
        for image in [
            &tall,
            &Image::from_rgb(4_000_000, 1, vec![7; 12_000_000]).expect("rgb"),
        ] {
            let err = shortest.prepare(image, 1 << 20).expect_err("too large");
            assert_eq!(err.code(), "input_too_large", "{err}");
            assert!(err.to_string().contains("aspect ratio"), "{err}");
        }
        // The saturating size arithmetic: no overflow, whatever the sides.
        let huge = Size::ShortestEdge {
            shortest_edge: 8192,
            longest_edge: None,
        };
        assert_eq!(huge.output((1, usize::MAX)), (8192, usize::MAX));
    }

    /// The vertical-first order against Pillow's (itself checked byte for byte against Pillow
    /// above) on a noisy image scaled up one way and down the other: within one level for the
    /// filters with non-negative weights (one rounding moves), two for those with negative lobes,
    /// whose overshoot the intermediate clips at different places in the two orders.
    #[test]
    fn vertical_first_is_within_one_level_of_pillow() {
        let w = 7;
        let h = 3001;
        let rgb: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i * 37 + i / 5) % 256) as u8)
            .collect();
        let img = Image::from_rgb(w, h, rgb).expect("rgb");
        for (filter, tolerance) in [
            (Filter::Bilinear, 1),
            (Filter::Box, 1),
            (Filter::Hamming, 2),
            (Filter::Bicubic, 2),
            (Filter::Lanczos, 2),
        ] {
            let pillow = img.resize_in(40, 13, filter, Order::HorizontalFirst);
            let ours = img.resize_in(40, 13, filter, Order::VerticalFirst);
            let worst = pillow
                .rgb()
                .iter()
                .zip(ours.rgb())
                .map(|(a, b)| a.abs_diff(*b))
                .max();
            assert!(worst <= Some(tolerance), "{filter:?}: off by {worst:?}");
        }
    }

    #[test]
    fn crop_pads_small_images() {
        let img = Image::from_rgb(1, 1, vec![9, 9, 9]).expect("rgb");
        let out = center_crop(&img, 3, 3);
        assert_eq!(out.rgb()[12..15], [9, 9, 9]);
        assert_eq!(out.rgb().iter().map(|&v| u32::from(v)).sum::<u32>(), 27);
    }
}
