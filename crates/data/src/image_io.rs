//! Image files ↔ tensors: PNG and JPEG, grey or colour, 8 or 16 bits per sample.
//!
//! ```text
//! image [C, H, W]   f32 in [0, 1], C = 1 (grey) or 3 (R, G, B), channel-first like every stride tensor
//! ```
//!
//! Samples are scaled by their format's maximum (x / 255, x / 65535), so an 8-bit and a 16-bit
//! file of the same picture give nearly the same tensor. Alpha is dropped: the lecture's filters
//! act on intensity and colour, and a fourth channel would only be filtered and thrown away.
//! Saving clamps to [0, 1] (filters such as `edge` produce negative values and values above 1) and
//! picks the format from the output extension.

use std::io::Cursor;
use std::path::Path;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ColorType, DynamicImage, ImageBuffer, ImageFormat, ImageReader, Luma, Rgb};
use stride_tensor::Tensor;

use crate::error::{Error, Result};

/// The file extensions images are read from and written to, lower-case, without the dot.
pub const SUPPORTED_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The file formats stride reads and writes, chosen by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
}

impl Format {
    /// The format a path's extension names (case-insensitive), or an error listing the supported ones.
    pub fn from_path(path: &Path) -> Result<Format> {
        let ext = path.extension().map(|e| e.to_string_lossy().to_lowercase());
        match ext.as_deref() {
            Some("png") => Ok(Format::Png),
            Some("jpg" | "jpeg") => Ok(Format::Jpeg),
            Some(other) => {
                Err(Error::UnsupportedExtension { path: path.to_path_buf(), found: format!("\".{other}\"") })
            }
            None => Err(Error::UnsupportedExtension { path: path.to_path_buf(), found: "(none)".into() }),
        }
    }

    fn image_format(self) -> ImageFormat {
        match self {
            Format::Png => ImageFormat::Png,
            Format::Jpeg => ImageFormat::Jpeg,
        }
    }
}

/// Bits per sample when saving. JPEG holds only 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BitDepth {
    #[default]
    Eight,
    Sixteen,
}

/// How [`save_image_with`] writes a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaveOptions {
    pub bit_depth: BitDepth,
    /// 1 (smallest) to 100 (best); ignored for PNG, which is lossless.
    pub jpeg_quality: u8,
}

impl Default for SaveOptions {
    fn default() -> Self {
        // 90 keeps filter outputs (sharp edges on black) free of visible ringing at modest size.
        SaveOptions { bit_depth: BitDepth::Eight, jpeg_quality: 90 }
    }
}

/// Reads a PNG or JPEG into a `[C, H, W]` tensor in [0, 1] (C = 1 for grey, 3 for colour).
///
/// The extension must be one of [`SUPPORTED_EXTENSIONS`]; the content decides the decoder, so a
/// PNG saved as `.jpg` still loads.
pub fn load_image(path: impl AsRef<Path>) -> Result<Tensor> {
    to_tensor(&decode(path.as_ref())?)
}

/// Reads a PNG or JPEG of any size as a network's input: `[channels, height, width]` in [0, 1],
/// resized with a triangle filter (bilinear, antialiased when shrinking, as PIL's `resize` and
/// torchvision's `Resize(antialias=True)`). One channel is grey by ITU-R 601 luma
/// (0.299 R + 0.587 G + 0.114 B, PIL's `convert("L")`); three are R, G, B.
pub fn load_image_for_model(
    path: impl AsRef<Path>,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Tensor> {
    let path = path.as_ref();
    if !matches!(channels, 1 | 3) || height == 0 || width == 0 || height > 1 << 16 || width > 1 << 16 {
        return Err(Error::ImageShape {
            path: path.to_path_buf(),
            shape: format!("[{channels}, {height}, {width}]"),
            expected: "1 or 3 channels and a size from 1×1 to 65536×65536".into(),
        });
    }
    picture_for_model(&decode(path)?, channels, height, width)
}

/// A decoded picture (an upload, say) as a network's input, exactly as [`load_image_for_model`]
/// prepares a file: `[channels, height, width]` in [0, 1], resized with a triangle filter, grey
/// by ITU-R 601 luma for one channel.
pub fn picture_for_model(
    picture: &DynamicImage,
    channels: usize,
    height: usize,
    width: usize,
) -> Result<Tensor> {
    if !matches!(channels, 1 | 3) || height == 0 || width == 0 || height > 1 << 16 || width > 1 << 16 {
        return Err(Error::invalid(
            "picture for a model",
            format!(
                "cannot make a [{channels}, {height}, {width}] input: 1 or 3 channels and a size from 1×1 to 65536×65536"
            ),
        ));
    }
    let rgb = picture.to_rgb8();
    let (h, w) = (height as u32, width as u32);
    let resized = image::imageops::resize(&rgb, w, h, image::imageops::FilterType::Triangle);
    let plane = height * width;
    let mut data = vec![0f32; channels * plane];
    for (i, pixel) in resized.pixels().enumerate() {
        let [r, g, b] = pixel.0.map(|v| v as f32 / 255.0);
        if channels == 1 {
            data[i] = 0.299 * r + 0.587 * g + 0.114 * b;
        } else {
            data[i] = r;
            data[plane + i] = g;
            data[2 * plane + i] = b;
        }
    }
    Ok(Tensor::new(vec![channels, height, width], data)?)
}

/// Reads a PNG or JPEG as ImageNet models expect it (torchvision's `Resize(resize)` then
/// `CenterCrop(crop)`): the shorter side scaled to `resize` with a triangle filter, keeping the
/// aspect ratio, then the central `crop × crop` square; `[3, crop, crop]` in [0, 1].
pub fn load_image_center_crop(path: impl AsRef<Path>, resize: usize, crop: usize) -> Result<Tensor> {
    let path = path.as_ref();
    if crop == 0 || crop > resize || resize > 1 << 16 {
        return Err(Error::ImageShape {
            path: path.to_path_buf(),
            shape: format!("resize {resize}, crop {crop}"),
            expected: "a crop from 1 to the resized shorter side (at most 65536)".into(),
        });
    }
    let rgb = decode(path)?.to_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    // torchvision: the shorter side becomes `resize`, the longer one int(resize · long / short).
    let (new_w, new_h) =
        if w <= h { (resize, resize * h / w.max(1)) } else { (resize * w / h.max(1), resize) };
    let resized =
        image::imageops::resize(&rgb, new_w as u32, new_h as u32, image::imageops::FilterType::Triangle);
    // torchvision rounds the offsets: int(round((size − crop) / 2)).
    let (left, top) =
        (((new_w - crop) as f64 / 2.0).round() as usize, ((new_h - crop) as f64 / 2.0).round() as usize);
    let plane = crop * crop;
    let mut data = vec![0f32; 3 * plane];
    for y in 0..crop {
        for x in 0..crop {
            let pixel = resized.get_pixel((left + x) as u32, (top + y) as u32).0;
            for (c, v) in pixel.iter().enumerate() {
                data[c * plane + y * crop + x] = *v as f32 / 255.0;
            }
        }
    }
    Ok(Tensor::new(vec![3, crop, crop], data)?)
}

/// Decodes a PNG or JPEG, with errors naming the file.
fn decode(path: &Path) -> Result<DynamicImage> {
    let format = Format::from_path(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::read(path, e))?;
    let corrupt = |reason: String| Error::Corrupt { path: path.to_path_buf(), reason };
    if bytes.is_empty() {
        return Err(corrupt("the file is empty".into()));
    }
    let mut reader = ImageReader::new(Cursor::new(bytes));
    reader.set_format(format.image_format());
    let reader = reader.with_guessed_format().map_err(|e| corrupt(e.to_string()))?;
    reader.decode().map_err(|e| corrupt(e.to_string()))
}

/// Writes a `[C, H, W]` tensor (C = 1 or 3) as an 8-bit PNG or JPEG, chosen by the extension.
/// Values are clamped to [0, 1] first; NaN becomes 0.
pub fn save_image(path: impl AsRef<Path>, image: &Tensor) -> Result<()> {
    save_image_with(path, image, &SaveOptions::default())
}

/// [`save_image`] with a bit depth (16 for PNG only) and a JPEG quality.
pub fn save_image_with(path: impl AsRef<Path>, image: &Tensor, options: &SaveOptions) -> Result<()> {
    let path = path.as_ref();
    let format = Format::from_path(path)?;
    let (channels, height, width) = image_dims(path, image)?;
    let encode_error = |reason: String| Error::Encode { path: path.to_path_buf(), reason };
    if format == Format::Jpeg && options.bit_depth == BitDepth::Sixteen {
        return Err(encode_error("JPEG holds 8 bits per sample; save as .png for 16 bits".into()));
    }
    if !(1..=100).contains(&options.jpeg_quality) {
        return Err(encode_error(format!("JPEG quality must be 1 to 100, got {}", options.jpeg_quality)));
    }
    let img =
        to_dynamic_image(image.data(), channels, height, width, options.bit_depth).ok_or_else(|| {
            encode_error(format!("{width}×{height}×{channels} pixels do not fit an image buffer"))
        })?;
    // Encode in memory first so that a refused encoding leaves no half-written file behind.
    let mut bytes = Vec::new();
    let encoded = match format {
        Format::Png => img.write_with_encoder(PngEncoder::new(&mut bytes)),
        Format::Jpeg => {
            img.write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, options.jpeg_quality))
        }
    };
    encoded.map_err(|e| encode_error(e.to_string()))?;
    std::fs::write(path, bytes).map_err(|e| Error::write(path, e))
}

/// `(C, H, W)` of a tensor that can be an image, or an error saying why it cannot.
fn image_dims(path: &Path, image: &Tensor) -> Result<(usize, usize, usize)> {
    let shape_error = |expected: &str| Error::ImageShape {
        path: path.to_path_buf(),
        shape: image.shape().to_string(),
        expected: expected.to_string(),
    };
    let &[channels, height, width] = image.dims() else {
        return Err(shape_error("expected 3 dimensions [C, H, W] with C = 1 (grey) or 3 (colour)"));
    };
    if channels != 1 && channels != 3 {
        return Err(shape_error(&format!(
            "C = {channels} channels, but an image has 1 (grey) or 3 (colour); \
             save the channels one by one or reduce them first"
        )));
    }
    if height == 0 || width == 0 {
        return Err(shape_error("an image needs at least one row and one column"));
    }
    if u32::try_from(height).is_err() || u32::try_from(width).is_err() {
        return Err(shape_error("PNG and JPEG hold at most 4294967295 rows and columns"));
    }
    Ok((channels, height, width))
}

/// Decoded pixels (interleaved, any depth) to a channel-first tensor in [0, 1].
fn to_tensor(img: &DynamicImage) -> Result<Tensor> {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let (channels, data) = match img.color() {
        ColorType::L8 | ColorType::La8 => (1, channel_first(img.to_luma8().as_raw(), 1, 255.0)),
        ColorType::L16 | ColorType::La16 => (1, channel_first(img.to_luma16().as_raw(), 1, 65535.0)),
        ColorType::Rgb8 | ColorType::Rgba8 => (3, channel_first(img.to_rgb8().as_raw(), 3, 255.0)),
        ColorType::Rgb16 | ColorType::Rgba16 => (3, channel_first(img.to_rgb16().as_raw(), 3, 65535.0)),
        // Float images (not produced by PNG or JPEG, but the type is open): already in [0, 1].
        other if other.has_color() => (3, channel_first(img.to_rgb32f().as_raw(), 3, 1.0)),
        _ => (1, channel_first(img.to_luma32f().as_raw(), 1, 1.0)),
    };
    Ok(Tensor::new([channels, height, width], data)?)
}

/// Interleaved `[H, W, C]` samples to planar `[C, H, W]` floats divided by `max`.
fn channel_first<T: Copy + Into<f32>>(interleaved: &[T], channels: usize, max: f32) -> Vec<f32> {
    let pixels = interleaved.len() / channels;
    let mut planar = vec![0.0; interleaved.len()];
    for (p, px) in interleaved.chunks_exact(channels).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            planar[c * pixels + p] = v.into() / max;
        }
    }
    planar
}

/// Planar `[C, H, W]` floats to an interleaved image, clamped and rounded to the bit depth.
fn to_dynamic_image(
    data: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    depth: BitDepth,
) -> Option<DynamicImage> {
    let pixels = height * width;
    let interleaved = |max: f32| -> Vec<f32> {
        (0..pixels * channels)
            .map(|i| {
                let v = data[(i % channels) * pixels + i / channels];
                // NaN has no pixel value; black is the least surprising stand-in.
                let v = if v.is_nan() { 0.0 } else { v.clamp(0.0, 1.0) };
                (v * max).round()
            })
            .collect()
    };
    let (w, h) = (width as u32, height as u32);
    let to_u8 = || interleaved(255.0).iter().map(|&v| v as u8).collect::<Vec<u8>>();
    let to_u16 = || interleaved(65535.0).iter().map(|&v| v as u16).collect::<Vec<u16>>();
    Some(match (depth, channels) {
        (BitDepth::Eight, 1) => {
            DynamicImage::ImageLuma8(ImageBuffer::<Luma<u8>, _>::from_raw(w, h, to_u8())?)
        }
        (BitDepth::Eight, _) => DynamicImage::ImageRgb8(ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, to_u8())?),
        (BitDepth::Sixteen, 1) => {
            DynamicImage::ImageLuma16(ImageBuffer::<Luma<u16>, _>::from_raw(w, h, to_u16())?)
        }
        (BitDepth::Sixteen, _) => {
            DynamicImage::ImageRgb16(ImageBuffer::<Rgb<u16>, _>::from_raw(w, h, to_u16())?)
        }
    })
}
