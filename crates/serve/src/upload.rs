//! An uploaded picture: checked against the limits before it is decoded, then decoded with the
//! `image` crate's limits as a second guard.
//!
//! ```text
//! body     at most MAX_UPLOAD_BYTES (checked by the HTTP layer before it is read)
//! format   PNG or JPEG, told by the first bytes (not by a name or a content type)
//! size     at most MAX_PIXELS pixels and MAX_SIDE on a side, read from the header first
//! ```
//!
//! The bytes never touch the file system. Each failure is an [`UploadError`] with the HTTP
//! status that says what kind it is (400 unreadable, 413 too large, 415 not a picture) and a
//! message a person can act on.

use std::io::Cursor;

use image::error::LimitErrorKind;
use image::{DynamicImage, ImageError, ImageFormat, ImageReader, Limits};

/// The largest upload accepted: a photo from a phone fits.
pub const MAX_UPLOAD_BYTES: usize = 8 << 20;
/// The most pixels decoded (4096 × 4096): 64 MiB as RGBA, a bound on what one request costs.
pub const MAX_PIXELS: u64 = 4096 * 4096;
/// The longest side decoded, so that a 1 × 16,000,000 strip cannot slip under [`MAX_PIXELS`].
pub const MAX_SIDE: u32 = 16384;
/// What the decoder may allocate: a 16-bit RGBA picture of [`MAX_PIXELS`] with room to spare.
const MAX_DECODER_BYTES: u64 = 256 << 20;

/// Why an upload is refused, with the HTTP status that says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UploadError {
    pub status: u16,
    pub message: String,
}

fn refuse(status: u16, message: String) -> UploadError {
    UploadError { status, message }
}

/// `the picture is 5000×4000 pixels (20,000,000); …`
fn too_many_pixels(width: u32, height: u32) -> UploadError {
    refuse(
        413,
        format!(
            "the picture is {width}×{height} pixels ({}); this server decodes at most {} pixels \
             (4096×4096) and {MAX_SIDE} on a side",
            thousands(width as u64 * height as u64),
            thousands(MAX_PIXELS)
        ),
    )
}

/// `16,777,216`.
pub use stride_nn::module::group_thousands as thousands;

/// The first bytes of a refused upload, as hex and as text where printable: `68 65 6c 6c 6f ("hello")`.
fn first_bytes(bytes: &[u8]) -> String {
    let head = &bytes[..bytes.len().min(8)];
    let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
    let text: String =
        head.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }).collect();
    format!("{} ({text:?})", hex.join(" "))
}

/// The name of a format in messages.
fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        other => other.extensions_str().first().copied().unwrap_or("other"),
    }
}

/// Decodes an uploaded PNG or JPEG within the limits.
pub fn decode_upload(bytes: &[u8]) -> Result<DynamicImage, UploadError> {
    if bytes.is_empty() {
        return Err(refuse(400, "the upload is empty: send a PNG or JPEG picture".into()));
    }
    if bytes.len() > MAX_UPLOAD_BYTES {
        return Err(refuse(413, crate::http::too_large(bytes.len() as u64, MAX_UPLOAD_BYTES)));
    }
    let format = match image::guess_format(bytes) {
        Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg)) => format,
        Ok(other) => {
            return Err(refuse(
                415,
                format!(
                    "the upload is a {} picture; this page reads PNG and JPEG",
                    format_name(other).to_uppercase()
                ),
            ));
        }
        Err(_) => {
            return Err(refuse(
                415,
                format!(
                    "the upload is not a PNG or JPEG picture: its {} bytes start with {}",
                    bytes.len(),
                    first_bytes(bytes)
                ),
            ));
        }
    };
    let name = format_name(format);
    let unreadable = |e: ImageError| match e {
        ImageError::Limits(limit) if matches!(limit.kind(), LimitErrorKind::DimensionError) => {
            refuse(413, format!("the {name} picture is larger than this server decodes: {limit}"))
        }
        ImageError::Limits(limit) => {
            refuse(413, format!("the {name} picture needs too much memory: {limit}"))
        }
        other => refuse(400, format!("the {name} picture cannot be read: {other}")),
    };
    // The size from the header, before anything the size of the picture is allocated.
    let (width, height) =
        ImageReader::with_format(Cursor::new(bytes), format).into_dimensions().map_err(unreadable)?;
    if width as u64 * height as u64 > MAX_PIXELS || width > MAX_SIDE || height > MAX_SIDE {
        return Err(too_many_pixels(width, height));
    }
    if width == 0 || height == 0 {
        return Err(refuse(400, format!("the {name} picture is {width}×{height} pixels: it has none")));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODER_BYTES);
    reader.limits(limits);
    reader.decode().map_err(unreadable)
}

#[cfg(test)]
mod tests {
    use image::{GrayImage, Luma};

    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let mut bytes = Vec::new();
        GrayImage::from_pixel(width, height, Luma([200]))
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        bytes
    }

    #[test]
    fn pictures_decode_and_everything_else_is_refused_with_its_status() {
        let picture = decode_upload(&png(30, 20)).unwrap();
        assert_eq!((picture.width(), picture.height()), (30, 20));

        let refused = |bytes: &[u8]| decode_upload(bytes).unwrap_err();
        assert_eq!(refused(b"").status, 400);
        assert_eq!(
            refused(b"hello, world").message,
            "the upload is not a PNG or JPEG picture: its 12 bytes start with 68 65 6c 6c 6f 2c 20 77 (\"hello, w\")"
        );
        assert_eq!(refused(b"hello").status, 415);
        assert_eq!(
            refused(b"GIF89a\x01\x00\x01\x00").message,
            "the upload is a GIF picture; this page reads PNG and JPEG"
        );
        let mut truncated = png(30, 20);
        truncated.truncate(40);
        let err = refused(&truncated);
        assert_eq!(err.status, 400, "{err}");
        assert!(err.message.starts_with("the PNG picture cannot be read: "), "{err}");

        let err = refused(&png(4097, 4096));
        assert_eq!(err.status, 413);
        assert_eq!(
            err.message,
            "the picture is 4097×4096 pixels (16,781,312); this server decodes at most 16,777,216 pixels \
             (4096×4096) and 16384 on a side"
        );
        assert_eq!(refused(&png(16385, 1)).status, 413);
        assert_eq!(refused(&vec![0x89; MAX_UPLOAD_BYTES + 1]).status, 413);
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(thousands(16_777_216), "16,777,216");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
    }
}
