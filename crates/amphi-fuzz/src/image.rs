//! Image decoding and preprocessing: `Image::decode` (PNG, JPEG, WebP) or `Image::from_rgba`,
//! then `Preprocessor::from_json` and `pixel_values` with the fixtures' preprocessor configs or
//! ones the input makes up (sizes, shortest/longest edge, crops, filters, rescale and
//! normalisation values, some of them invalid).
//!
//! Byte 0 picks the config (fixed, generated from the next bytes, or raw JSON from the input);
//! byte 1 how the image comes (the rest of the input decoded, or raw RGBA pixels of a size the
//! input gives, the rest of the input tiled over them). Images are limited to
//! [`MAX_PIXELS`]; besides "never panics or exhausts memory", a result must have exactly the
//! size `Preprocessor::output_size` announces.

use amphi_core::image::{Image, Preprocessor};
use serde_json::{Value, json};

use crate::common::{Input, fixtures};

/// Decoded pixels per image.
pub const MAX_PIXELS: u64 = 1 << 20;

/// Results larger than this (valid, but hundreds of MB of f32) are not computed: the config
/// allows up to 8192², which is slow, not wrong.
const MAX_OUTPUT_PIXELS: u128 = 1 << 22;

/// Sides worth trying besides arbitrary ones (0 and 8193 are out of range).
const SIDES: [u64; 16] = [
    0, 1, 2, 3, 7, 16, 31, 32, 224, 256, 383, 1024, 2048, 4096, 8192, 8193,
];

const FACTORS: [f64; 7] = [1.0 / 255.0, 1.0, 0.0, -1.0, 1e308, 1e-308, 127.5];
const MEANS: [f64; 8] = [0.5, 0.0, 1.0, -3.0, 127.0, 1e-30, 1e300, 0.48145466];

fn fixed_configs() -> &'static [Vec<u8>] {
    static CONFIGS: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    CONFIGS.get_or_init(|| {
        let read = |model: &str| {
            let path = fixtures()
                .join("models")
                .join(model)
                .join("preprocessor_config.json");
            match std::fs::read(&path) {
                Ok(b) => b,
                // Without the fixtures the target would fuzz less than it claims: stop.
                Err(e) => panic!("{}: {e}", path.display()),
            }
        };
        vec![
            read("tiny-vit"),
            read("tiny-clip"),
            // EfficientNet-Lite0 as the fixtures README describes it.
            json!({
                "do_resize": true, "size": {"shortest_edge": 256}, "resample": 2,
                "do_center_crop": true, "crop_size": {"height": 224, "width": 224},
                "rescale_factor": 1.0, "image_mean": [127.0, 127.0, 127.0],
                "image_std": [128.0, 128.0, 128.0]
            })
            .to_string()
            .into_bytes(),
            // No resize: the image as it comes, BGR.
            json!({"do_resize": false, "do_flip_channel_order": true})
                .to_string()
                .into_bytes(),
        ]
    })
}

fn side(input: &mut Input<'_>) -> u64 {
    match input.u8() % 4 {
        0 => u64::from(input.u16()) % 2049,
        _ => input.pick(&SIDES),
    }
}

fn size(input: &mut Input<'_>) -> Value {
    match input.u8() % 5 {
        0 => json!({"height": side(input), "width": side(input)}),
        1 => json!({"shortest_edge": side(input)}),
        2 => json!({"shortest_edge": side(input), "longest_edge": side(input)}),
        3 => json!(side(input)),
        _ => Value::Null,
    }
}

fn generated(input: &mut Input<'_>) -> Vec<u8> {
    let flags = input.u8();
    let bit = |i: u8| flags & (1 << i) != 0;
    let three = |input: &mut Input<'_>| {
        let first = input.pick(&MEANS);
        if input.u8().is_multiple_of(2) {
            json!([first, first, first])
        } else {
            json!([first, input.pick(&MEANS), input.pick(&MEANS)])
        }
    };
    json!({
        "do_resize": !bit(0),
        "size": size(input),
        "resample": input.u8() % 8,
        "do_center_crop": bit(1),
        "crop_size": size(input),
        "do_rescale": !bit(2),
        "rescale_factor": input.pick(&FACTORS),
        "do_normalize": !bit(3),
        "image_mean": three(input),
        "image_std": three(input),
        "do_flip_channel_order": bit(4),
    })
    .to_string()
    .into_bytes()
}

/// The image the input describes, or why it is refused.
fn make_image(input: &mut Input<'_>) -> amphi_core::Result<Image> {
    match input.u8() % 4 {
        0 | 1 => Image::decode(input.rest(), MAX_PIXELS),
        mode => {
            let (width, height) = (usize::from(input.u16()), usize::from(input.u16()));
            let rest = input.rest();
            let want = width * height * 4;
            let rgba: Vec<u8> = if mode == 3 {
                rest.to_vec()
            } else if rest.is_empty() || want as u64 > MAX_PIXELS * 4 {
                vec![0x80; want.min(MAX_PIXELS as usize * 4 + 4)]
            } else {
                rest.iter().copied().cycle().take(want).collect()
            };
            Image::from_rgba(width, height, &rgba, MAX_PIXELS)
        }
    }
}

/// The target.
pub fn image(data: &[u8]) {
    let mut input = Input(data);
    let config = match input.u8() % 8 {
        k @ 0..=3 => fixed_configs()[usize::from(k)].clone(),
        7 => input.chunk().to_vec(),
        _ => generated(&mut input),
    };
    let image = make_image(&mut input);
    let (Ok(pre), Ok(image)) = (Preprocessor::from_json(&config), image) else {
        return;
    };
    let (w, h) = pre.output_size((image.width(), image.height()));
    let area = w as u128 * h as u128;
    if area > MAX_OUTPUT_PIXELS && area <= 8192 * 8192 {
        return;
    }
    if let Ok(pixels) = pre.pixel_values(&image, MAX_PIXELS) {
        assert_eq!(
            pixels.len() as u128,
            3 * area,
            "pixel_values has another length than output_size announces"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_configs_parse() {
        for c in fixed_configs() {
            if let Err(e) = Preprocessor::from_json(c) {
                panic!("{}: {e}", String::from_utf8_lossy(c));
            }
        }
        image(&[]);
        image(&[0, 2, 9, 0, 5, 0, 1, 2, 3]);
        image(&[4, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 3, 0, 3, 0]);
    }
}
