//! Images in: decoding (PNG, JPEG, WebP with the `image` crate, no threads or filesystem) or raw
//! RGBA pixels from a browser canvas, and the preprocessing a model folder's
//! `preprocessor_config.json` describes.

mod preprocess;
mod resize;

pub use preprocess::{Preprocessor, Size};
pub use resize::Filter;

use base64::Engine as _;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The default limit on decoded pixels per image (width × height): 40 megapixels. Pillow warns
/// at 89 M and refuses at twice that; a 40 MP RGB image is 120 MB decoded.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 40_000_000;

/// An 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Clone, PartialEq, Eq)]
pub struct Image {
    width: usize,
    height: usize,
    rgb: Vec<u8>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Image({}×{} RGB)", self.width, self.height)
    }
}

/// An image as a caller hands it to a pipeline.
#[derive(Clone, PartialEq, Eq)]
pub enum ImageInput {
    /// An encoded file: PNG, JPEG or WebP (the format is read from the bytes).
    Encoded(Vec<u8>),
    /// Raw RGBA pixels, 4 bytes each, row-major (a browser's `ImageData`); alpha is dropped,
    /// as Pillow's `convert("RGB")` does.
    Rgba {
        /// Pixels per row.
        width: usize,
        /// Rows.
        height: usize,
        /// `width · height · 4` bytes.
        data: Vec<u8>,
    },
}

impl std::fmt::Debug for ImageInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImageInput::Encoded(b) => write!(f, "Encoded({} bytes)", b.len()),
            ImageInput::Rgba { width, height, .. } => write!(f, "Rgba({width}×{height})"),
        }
    }
}

/// An image in a JSON request: a base64 string (optionally a `data:` URL), or a reference to a
/// binary attachment that the host passed beside the JSON (`{"blob": i}`, an encoded file;
/// with `width` and `height`, raw RGBA pixels).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum ImageRef {
    /// Base64 of an encoded image, or a `data:image/…;base64,…` URL.
    Base64(String),
    /// An attachment of the request.
    Blob {
        /// Index of the attachment.
        blob: usize,
        /// Raw RGBA pixels: pixels per row.
        #[serde(default)]
        width: Option<usize>,
        /// Raw RGBA pixels: rows.
        #[serde(default)]
        height: Option<usize>,
    },
}

impl ImageRef {
    /// Resolves the reference against the request's attachments (each may be used once).
    pub fn resolve(&self, blobs: &mut [Option<Vec<u8>>]) -> Result<ImageInput> {
        match self {
            ImageRef::Base64(text) => {
                let b64 = match text.strip_prefix("data:") {
                    Some(url) => url
                        .split_once(";base64,")
                        .map(|(_, data)| data)
                        .ok_or_else(|| Error::invalid_input("a data: URL must be base64"))?,
                    None => text.as_str(),
                };
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| {
                        Error::invalid_input(format!(
                            "an image input string must be base64 (or a data: URL): {e}"
                        ))
                    })?;
                Ok(ImageInput::Encoded(bytes))
            }
            ImageRef::Blob {
                blob,
                width,
                height,
            } => {
                let data = blobs.get_mut(*blob).and_then(Option::take).ok_or_else(|| {
                    Error::invalid_input(format!(
                        "the request has no attachment {blob} (or uses it twice)"
                    ))
                })?;
                match (width, height) {
                    (None, None) => Ok(ImageInput::Encoded(data)),
                    (Some(width), Some(height)) => Ok(ImageInput::Rgba {
                        width: *width,
                        height: *height,
                        data,
                    }),
                    _ => Err(Error::invalid_input(
                        "raw pixels need both `width` and `height`",
                    )),
                }
            }
        }
    }
}

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidImage {
        message: message.into(),
    }
}

fn check_size(width: usize, height: usize, max_pixels: u64) -> Result<()> {
    if width == 0 || height == 0 {
        return Err(invalid(format!("the image is {width}×{height}: empty")));
    }
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(Error::InputTooLarge {
            message: format!(
                "the image is {width}×{height} ({pixels} pixels); the limit is {max_pixels} pixels"
            ),
        });
    }
    Ok(())
}

impl Image {
    /// Decodes or converts an input, refusing images over `max_pixels` before decoding them
    /// (a decompression bomb never allocates its pixels).
    pub fn from_input(input: ImageInput, max_pixels: u64) -> Result<Self> {
        match input {
            ImageInput::Encoded(bytes) => Self::decode(&bytes, max_pixels),
            ImageInput::Rgba {
                width,
                height,
                data,
            } => Self::from_rgba(width, height, &data, max_pixels),
        }
    }

    /// Decodes PNG, JPEG or WebP to RGB (alpha dropped, 16-bit samples scaled to 8 bits, the
    /// EXIF orientation applied as `transformers.image_utils.load_image` does).
    pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<Self> {
        use image::ImageDecoder as _;
        if bytes.is_empty() {
            return Err(invalid("no bytes"));
        }
        let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| invalid(e.to_string()))?;
        if reader.format().is_none() {
            return Err(invalid(
                "unknown format (expected PNG, JPEG or WebP)".to_owned(),
            ));
        }
        let mut decoder = reader.into_decoder().map_err(decode_error)?;
        let (w, h) = decoder.dimensions();
        check_size(w as usize, h as usize, max_pixels)?;
        let orientation = decoder.orientation().ok();
        let mut image = image::DynamicImage::from_decoder(decoder).map_err(decode_error)?;
        if let Some(o) = orientation {
            image.apply_orientation(o);
        }
        let rgb = image.into_rgb8();
        Ok(Self {
            width: rgb.width() as usize,
            height: rgb.height() as usize,
            rgb: rgb.into_raw(),
        })
    }

    /// RGB from raw RGBA pixels (alpha dropped).
    pub fn from_rgba(width: usize, height: usize, rgba: &[u8], max_pixels: u64) -> Result<Self> {
        check_size(width, height, max_pixels)?;
        if Some(rgba.len()) != width.checked_mul(height).and_then(|p| p.checked_mul(4)) {
            return Err(Error::invalid_input(format!(
                "{} bytes of RGBA pixels for a {width}×{height} image (expected {})",
                rgba.len(),
                width as u64 * height as u64 * 4
            )));
        }
        let rgb = rgba
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect();
        Ok(Self { width, height, rgb })
    }

    /// Wraps RGB bytes (`width · height · 3`).
    pub fn from_rgb(width: usize, height: usize, rgb: Vec<u8>) -> Result<Self> {
        check_size(width, height, u64::MAX)?;
        if rgb.len() != width * height * 3 {
            return Err(Error::invalid_input(format!(
                "{} bytes of RGB pixels for a {width}×{height} image",
                rgb.len()
            )));
        }
        Ok(Self { width, height, rgb })
    }

    /// Pixels per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Rows.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixels, RGB, row-major.
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// Pillow's `Image.resize((width, height), filter)`, bit-exact for the convolution filters.
    /// Its intermediate holds `width × self.height()` pixels: for untrusted images, bound the
    /// sizes first (as [`Preprocessor::prepare`] does).
    pub fn resize(&self, width: usize, height: usize, filter: Filter) -> Self {
        self.resize_in(width, height, filter, resize::Order::HorizontalFirst)
    }

    pub(crate) fn resize_in(
        &self,
        width: usize,
        height: usize,
        filter: Filter,
        order: resize::Order,
    ) -> Self {
        Self {
            width,
            height,
            rgb: resize::resize(
                &self.rgb,
                (self.width, self.height),
                3,
                (width, height),
                filter,
                order,
            ),
        }
    }
}

fn decode_error(e: image::ImageError) -> Error {
    match e {
        image::ImageError::Limits(l) => Error::InputTooLarge {
            message: format!("image: {l}"),
        },
        other => invalid(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([x as u8, y as u8, (x ^ y) as u8])
        });
        let mut out = std::io::Cursor::new(Vec::new());
        img.write_to(&mut out, image::ImageFormat::Png)
            .expect("encode");
        out.into_inner()
    }

    #[test]
    fn decodes_png_and_refuses_bad_images() {
        let bytes = png(5, 3);
        let img = Image::decode(&bytes, 100).expect("decode");
        assert_eq!((img.width(), img.height()), (5, 3));
        assert_eq!(&img.rgb()[3..6], &[1, 0, 1]);

        let code = |r: Result<Image>| r.expect_err("refused").code();
        assert_eq!(code(Image::decode(&[], 100)), "invalid_image");
        assert_eq!(code(Image::decode(b"not an image", 100)), "invalid_image");
        assert_eq!(
            code(Image::decode(&bytes[..bytes.len() / 2], 100)),
            "invalid_image"
        );
        let mut corrupt = bytes.clone();
        for b in corrupt.iter_mut().skip(40) {
            *b ^= 0x5a;
        }
        assert_eq!(code(Image::decode(&corrupt, 100)), "invalid_image");
        // The pixel limit is checked from the header, before any pixel is decoded.
        assert_eq!(code(Image::decode(&bytes, 14)), "input_too_large");
        assert_eq!(code(Image::from_rgba(0, 3, &[], 100)), "invalid_image");
        assert_eq!(code(Image::from_rgba(2, 2, &[0; 15], 100)), "invalid_input");
        let rgba = Image::from_rgba(1, 2, &[1, 2, 3, 255, 4, 5, 6, 0], 100).expect("rgba");
        assert_eq!(rgba.rgb(), [1, 2, 3, 4, 5, 6]);
    }

    /// JPEG and WebP through the same path: a smooth image survives JPEG within a few levels
    /// and lossless WebP exactly; a cut file and the pixel limit give their codes.
    #[test]
    fn decodes_jpeg_and_webp() {
        let img = image::RgbImage::from_fn(40, 24, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 10) as u8, 128])
        });
        for (format, tolerance) in [
            (image::ImageFormat::Jpeg, 12),
            (image::ImageFormat::WebP, 0),
        ] {
            let mut out = std::io::Cursor::new(Vec::new());
            img.write_to(&mut out, format).expect("encode");
            let bytes = out.into_inner();
            let got = Image::decode(&bytes, 10_000).expect("decode");
            assert_eq!((got.width(), got.height()), (40, 24), "{format:?}");
            let worst = got
                .rgb()
                .iter()
                .zip(img.as_raw())
                .map(|(a, b)| a.abs_diff(*b))
                .max()
                .unwrap_or(0);
            assert!(worst <= tolerance, "{format:?}: off by {worst}");
            let cut = Image::decode(&bytes[..bytes.len().min(24)], 10_000);
            assert_eq!(cut.expect_err("cut").code(), "invalid_image", "{format:?}");
            let big = Image::decode(&bytes, 959);
            assert_eq!(
                big.expect_err("limit").code(),
                "input_too_large",
                "{format:?}"
            );
        }
    }

    #[test]
    fn image_refs_resolve_base64_data_urls_and_blobs() {
        let bytes = png(2, 2);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let parse = |s: &str| serde_json::from_str::<ImageRef>(s).expect("json");
        let mut none = [];
        for text in [
            format!("\"{b64}\""),
            format!("\"data:image/png;base64,{b64}\""),
        ] {
            assert_eq!(
                parse(&text).resolve(&mut none).expect("resolve"),
                ImageInput::Encoded(bytes.clone())
            );
        }
        assert_eq!(
            parse("\"%%%\"").resolve(&mut none).expect_err("bad").code(),
            "invalid_input"
        );
        let mut blobs = [Some(vec![1, 2, 3, 4])];
        let raw = parse(r#"{"blob": 0, "width": 1, "height": 1}"#);
        assert!(matches!(
            raw.resolve(&mut blobs),
            Ok(ImageInput::Rgba { width: 1, .. })
        ));
        assert!(
            raw.resolve(&mut blobs).is_err(),
            "an attachment is used once"
        );
        assert!(parse(r#"{"blob": 3}"#).resolve(&mut blobs).is_err());
    }
}
