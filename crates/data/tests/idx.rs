//! The IDX reader on tiny files written here, raw and gzip: round trips into tensors, and one test
//! per error branch with the wording of its message.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::write::GzEncoder;
use stride_data::Error;
use stride_data::idx::{IMAGES_MAGIC, LABELS_MAGIC, read_images, read_labels, read_pair};

fn header(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_be_bytes()).collect()
}

fn images_bytes(count: u32, rows: u32, cols: u32, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = header(&[IMAGES_MAGIC, count, rows, cols]);
    bytes.extend_from_slice(pixels);
    bytes
}

fn labels_bytes(labels: &[u8]) -> Vec<u8> {
    let mut bytes = header(&[LABELS_MAGIC, labels.len() as u32]);
    bytes.extend_from_slice(labels);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Two 2×3 images, pixels 0..12 scaled so that 0 and 255 both appear.
fn two_images() -> Vec<u8> {
    let pixels: Vec<u8> = (0..12u8).map(|i| if i == 11 { 255 } else { i * 20 }).collect();
    images_bytes(2, 2, 3, &pixels)
}

#[test]
fn raw_images_and_labels_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let images = read_images(write(dir.path(), "imgs", &two_images())).unwrap();
    assert_eq!((images.count, images.rows, images.cols), (2, 2, 3));
    assert_eq!(images.pixels[..3], [0, 20, 40]);
    assert_eq!(images.pixels[11], 255);
    let labels = read_labels(write(dir.path(), "labels", &labels_bytes(&[7, 0, 9]))).unwrap();
    assert_eq!(labels.labels, [7, 0, 9]);
    assert_eq!(labels.to_indices(), [7usize, 0, 9]);
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    let dir = tempfile::tempdir().unwrap();
    // Compressed but without .gz, and raw but with .gz: both must read.
    let compressed = write(dir.path(), "train-images-idx3-ubyte", &gzip(&two_images()));
    let raw_named_gz = write(dir.path(), "raw.gz", &two_images());
    let expected = read_images(write(dir.path(), "plain", &two_images())).unwrap();
    assert_eq!(read_images(compressed).unwrap(), expected);
    assert_eq!(read_images(raw_named_gz).unwrap(), expected);
    let labels = write(dir.path(), "labels.gz", &gzip(&labels_bytes(&[1, 2, 3])));
    assert_eq!(read_labels(labels).unwrap().labels, [1, 2, 3]);
}

#[test]
fn images_become_a_n_1_r_c_tensor_in_unit_range() {
    let dir = tempfile::tempdir().unwrap();
    let images = read_images(write(dir.path(), "imgs", &two_images())).unwrap();
    let tensor = images.to_tensor().unwrap();
    assert_eq!(tensor.dims(), [2, 1, 2, 3]);
    assert_eq!(tensor.data()[0], 0.0);
    assert_eq!(tensor.data()[1], 20.0 / 255.0);
    assert_eq!(tensor.data()[11], 1.0);
}

#[test]
fn labels_file_read_as_images_names_both_magics() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "labels", &labels_bytes(&[1, 2]));
    let err = read_images(&path).unwrap_err();
    assert!(matches!(err, Error::IdxMagic { found: 0x801, .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "{}: expected IDX magic 0x00000803 (u8 images, 3 dims), found 0x00000801 (u8 labels, 1 dim)",
            path.display()
        )
    );
}

#[test]
fn a_file_that_is_not_idx_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "photo.png", b"\x89PNG\r\n\x1a\n and more");
    let err = read_labels(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: expected IDX magic 0x00000801 (u8 labels, 1 dim), found 0x89504e47 (not an IDX file)",
            path.display()
        )
    );
}

#[test]
fn truncated_pixels_give_the_formula() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "imgs", &images_bytes(2, 2, 2, &[1, 2, 3, 4, 5]));
    let err = read_images(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: holds 5 bytes of pixels but the header promises N×R×C = 2×2×2 = 8", path.display())
    );
}

#[test]
fn truncated_gzip_payload_is_reported_like_a_raw_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "imgs.gz", &gzip(&images_bytes(2, 2, 2, &[1, 2, 3, 4, 5])));
    let err = read_images(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: holds 5 bytes of pixels but the header promises N×R×C = 2×2×2 = 8", path.display())
    );
}

#[test]
fn trailing_bytes_are_an_error_too() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = labels_bytes(&[1, 2]);
    bytes.extend_from_slice(&[3, 4, 5]);
    let path = write(dir.path(), "labels", &bytes);
    let err = read_labels(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: holds 5 bytes of labels but the header promises N = 2 = 2", path.display())
    );
}

#[test]
fn a_huge_header_in_a_small_file_fails_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let pixels = vec![0u8; 1024 - 16];
    let path = write(dir.path(), "imgs", &images_bytes(1 << 31, 28, 28, &pixels));
    let err = read_images(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: holds 1008 bytes of pixels but the header promises N×R×C = 2147483648×28×28 = 1683627180032",
            path.display()
        )
    );
    // The largest promise the header can make, compressed: beyond what DEFLATE can expand to.
    let gz = write(dir.path(), "imgs.gz", &gzip(&images_bytes(u32::MAX, u32::MAX, u32::MAX, &pixels)));
    let err = read_images(&gz).unwrap_err();
    assert!(matches!(err, Error::IdxSize { found: 1008, .. }), "{err:?}");
}

#[test]
fn short_and_empty_headers() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "imgs", &header(&[IMAGES_MAGIC, 1]));
    assert_eq!(
        read_images(&path).unwrap_err().to_string(),
        format!("{}: holds 8 bytes, too few for the 16-byte IDX header of u8 images, 3 dims", path.display())
    );
    let empty = write(dir.path(), "empty", &[]);
    assert_eq!(
        read_labels(&empty).unwrap_err().to_string(),
        format!("{}: holds 0 bytes, too few for the 8-byte IDX header of u8 labels, 1 dim", empty.display())
    );
}

#[test]
fn a_label_of_ten_or_more_is_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "labels", &labels_bytes(&[3, 9, 10, 200]));
    let err = read_labels(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: label 10 at index 2 is out of range; labels are 0 to 9", path.display())
    );
}

#[test]
fn image_and_label_counts_must_match() {
    let dir = tempfile::tempdir().unwrap();
    let images = write(dir.path(), "imgs", &two_images());
    let labels = write(dir.path(), "labels", &labels_bytes(&[1, 2, 3]));
    let err = read_pair(&images, &labels).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} holds 2 images but {} holds 3 labels; they must pair one to one",
            images.display(),
            labels.display()
        )
    );
}

#[test]
fn a_corrupt_gzip_stream_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = gzip(&two_images());
    // Past the 10-byte gzip header: the deflate data itself.
    for b in &mut bytes[12..20] {
        *b ^= 0xa5;
    }
    let path = write(dir.path(), "imgs.gz", &bytes);
    let err = read_images(&path).unwrap_err();
    assert!(matches!(err, Error::Gzip { .. } | Error::IdxMagic { .. } | Error::IdxSize { .. }), "{err:?}");

    // Only a gzip magic and then garbage: the decoder must refuse the header.
    let garbage = write(dir.path(), "garbage.gz", &[0x1f, 0x8b, 0xff, 0xff, 0, 1, 2]);
    let err = read_labels(&garbage).unwrap_err();
    assert!(err.to_string().starts_with(&format!("{}: corrupt gzip stream: ", garbage.display())), "{err}");
}

#[test]
fn a_gzip_stream_cut_short_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = gzip(&two_images());
    let path = write(dir.path(), "imgs.gz", &bytes[..bytes.len() - 6]);
    let err = read_images(&path).unwrap_err();
    assert!(matches!(err, Error::Gzip { .. }), "{err:?}");
}

#[test]
fn a_missing_file_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nope");
    let err = read_images(&path).unwrap_err();
    assert_eq!(err.to_string(), format!("{}: no such file", path.display()));
}
