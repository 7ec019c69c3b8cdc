//! Image files ↔ `[C, H, W]` tensors, on tiny images each test writes into its own temp dir:
//! exact round trips (grey, colour, 16-bit), JPEG within its loss, and every error branch with
//! the wording a user sees.

use std::path::Path;

use stride_data::Error;
use stride_data::image_io::{
    BitDepth, SaveOptions, load_image, load_image_center_crop, load_image_for_model, save_image,
    save_image_with,
};
use stride_tensor::Tensor;

/// A `[C, H, W]` tensor whose values are exact multiples of `1/max`, so quantising is lossless.
fn ramp(channels: usize, height: usize, width: usize, max: f32) -> Tensor {
    Tensor::from_fn([channels, height, width], |i| {
        let k = (i[0] * 97 + i[1] * 31 + i[2] * 7) as f32 % (max + 1.0);
        k / max
    })
    .unwrap()
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    a.data().iter().zip(b.data()).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn colour_png_round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("colour.png");
    let image = ramp(3, 5, 7, 255.0);
    save_image(&path, &image).unwrap();
    let back = load_image(&path).unwrap();
    assert_eq!(back.dims(), &[3, 5, 7]);
    assert_eq!(back, image);
}

#[test]
fn grey_png_round_trip_is_exact_and_stays_one_channel() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grey.png");
    let image = ramp(1, 4, 6, 255.0);
    save_image(&path, &image).unwrap();
    let back = load_image(&path).unwrap();
    assert_eq!(back.dims(), &[1, 4, 6]);
    assert_eq!(back, image);
}

#[test]
fn sixteen_bit_png_keeps_the_fine_steps() {
    let dir = tempfile::tempdir().unwrap();
    let sixteen = SaveOptions { bit_depth: BitDepth::Sixteen, ..SaveOptions::default() };
    for channels in [1, 3] {
        let path = dir.path().join(format!("deep{channels}.png"));
        // Steps of 1/65535 are far below 8 bits' 1/255: only a true 16-bit path keeps them.
        let image =
            Tensor::from_fn([channels, 3, 4], |i| (1000 + i[0] * 12 + i[1] * 4 + i[2]) as f32 / 65535.0)
                .unwrap();
        save_image_with(&path, &image, &sixteen).unwrap();
        let back = load_image(&path).unwrap();
        assert_eq!(back.dims(), &[channels, 3, 4]);
        assert_eq!(back, image, "{channels} channels");
    }
}

#[test]
fn sixteen_bit_png_written_by_another_encoder_loads_scaled_to_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("external16.png");
    let img = image::ImageBuffer::<image::Luma<u16>, _>::from_raw(2, 1, vec![0u16, 65535]).unwrap();
    img.save(&path).unwrap();
    let back = load_image(&path).unwrap();
    assert_eq!(back.dims(), &[1, 1, 2]);
    assert_eq!(back.data(), &[0.0, 1.0]);
}

#[test]
fn alpha_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rgba.png");
    let img = image::RgbaImage::from_raw(2, 1, vec![255, 0, 0, 10, 0, 51, 255, 255]).unwrap();
    img.save(&path).unwrap();
    let back = load_image(&path).unwrap();
    assert_eq!(back.dims(), &[3, 1, 2]);
    // Planar: R of both pixels, then G, then B.
    assert_eq!(back.data(), &[1.0, 0.0, 0.0, 0.2, 0.0, 1.0]);
}

#[test]
fn jpeg_round_trip_is_close_and_keeps_colour_or_grey() {
    let dir = tempfile::tempdir().unwrap();
    for (channels, name) in [(3, "c.jpg"), (1, "g.JPEG")] {
        let path = dir.path().join(name);
        // Smooth content: JPEG's loss is small there, so a tight bound still catches a layout bug.
        let image = Tensor::from_fn([channels, 16, 16], |i| {
            0.2 + 0.02 * i[1] as f32 + 0.01 * i[2] as f32 + 0.1 * i[0] as f32
        })
        .unwrap();
        save_image(&path, &image).unwrap();
        let back = load_image(&path).unwrap();
        assert_eq!(back.dims(), &[channels, 16, 16]);
        let diff = max_abs_diff(&back, &image);
        assert!(diff < 0.05, "{name}: max difference {diff}");
    }
}

#[test]
fn the_content_decides_the_decoder() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("really_a_png.jpg");
    let image = ramp(3, 2, 2, 255.0);
    let png = dir.path().join("a.png");
    save_image(&png, &image).unwrap();
    std::fs::copy(&png, &path).unwrap();
    assert_eq!(load_image(&path).unwrap(), image);
}

#[test]
fn saving_clamps_to_the_pixel_range() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("clamped.png");
    let image = Tensor::new([1, 1, 5], vec![-0.5, 1.5, f32::NAN, 0.5, f32::INFINITY]).unwrap();
    save_image(&path, &image).unwrap();
    let back = load_image(&path).unwrap();
    assert_eq!(back.data(), &[0.0, 1.0, 0.0, 128.0 / 255.0, 1.0]);
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nowhere.png");
    let err = load_image(&path).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(err.to_string(), format!("{}: no such file", path.display()));
}

#[test]
fn corrupt_and_truncated_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"this is not a picture").unwrap();
    let err = load_image(&garbage).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("{}: not a readable PNG or JPEG image: ", garbage.display())),
        "{message}"
    );

    let whole = dir.path().join("whole.png");
    save_image(&whole, &ramp(3, 32, 32, 255.0)).unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    for (name, cut) in [("truncated.png", bytes.len() / 2), ("header_only.png", 20)] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes[..cut]).unwrap();
        let err = load_image(&path).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{name}: {err:?}");
    }

    let jpeg = dir.path().join("truncated.jpg");
    std::fs::write(&jpeg, [0xFF, 0xD8, 0xFF, 0xE0, 0x00]).unwrap();
    assert!(matches!(load_image(&jpeg).unwrap_err(), Error::Corrupt { .. }));

    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(
        load_image(&empty).unwrap_err().to_string(),
        format!("{}: not a readable PNG or JPEG image: the file is empty", empty.display())
    );
}

#[test]
fn a_directory_is_not_an_image() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("folder.png");
    std::fs::create_dir(&path).unwrap();
    let err = load_image(&path).unwrap_err();
    assert!(err.to_string().starts_with(&format!("{}: cannot read", path.display())), "{err}");
}

#[test]
fn unsupported_extensions_list_the_supported_ones() {
    let image = ramp(3, 2, 2, 255.0);
    let err = load_image(Path::new("photo.bmp")).unwrap_err();
    assert_eq!(err.to_string(), "photo.bmp: unsupported extension \".bmp\"; supported: png, jpg, jpeg");
    let err = save_image("out.gif", &image).unwrap_err();
    assert_eq!(err.to_string(), "out.gif: unsupported extension \".gif\"; supported: png, jpg, jpeg");
    let err = save_image("out", &image).unwrap_err();
    assert_eq!(err.to_string(), "out: unsupported extension (none); supported: png, jpg, jpeg");
}

#[test]
fn tensors_that_are_not_images_are_refused_by_shape() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.png");
    let p = path.display();
    let err = save_image(&path, &Tensor::zeros([2, 4, 4]).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{p}: cannot save a tensor of shape [2, 4, 4] as an image: C = 2 channels, but an image has \
             1 (grey) or 3 (colour); save the channels one by one or reduce them first"
        )
    );
    let err = save_image(&path, &Tensor::zeros([4, 4]).unwrap()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{p}: cannot save a tensor of shape [4, 4] as an image: expected 3 dimensions [C, H, W] \
             with C = 1 (grey) or 3 (colour)"
        )
    );
    let err = save_image(&path, &Tensor::zeros([3, 0, 4]).unwrap()).unwrap_err();
    assert!(err.to_string().contains("at least one row and one column"), "{err}");
    assert!(!path.exists(), "a refused save must not leave a file");
}

#[test]
fn sixteen_bit_jpeg_and_bad_quality_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.jpg");
    let image = ramp(3, 2, 2, 255.0);
    let options = SaveOptions { bit_depth: BitDepth::Sixteen, ..SaveOptions::default() };
    let err = save_image_with(&path, &image, &options).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: cannot encode: JPEG holds 8 bits per sample; save as .png for 16 bits", path.display())
    );
    let options = SaveOptions { jpeg_quality: 0, ..SaveOptions::default() };
    assert!(save_image_with(&path, &image, &options).unwrap_err().to_string().contains("quality"));
}

#[test]
fn writing_into_a_missing_folder_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no_such_folder").join("out.png");
    let err = save_image(&path, &ramp(1, 2, 2, 255.0)).unwrap_err();
    assert!(err.to_string().starts_with(&format!("{}: cannot write: ", path.display())), "{err}");
}

/// A model's input from any picture: a flat colour stays flat through the resize, grey is
/// PIL's luma, and an impossible target size is an error naming the file.
#[test]
fn images_for_a_model_are_resized_and_converted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flat.png");
    // R = 200/255, G = 100/255, B = 50/255 everywhere, 40×30.
    let rgb = Tensor::from_fn([3, 30, 40], |i| [200.0, 100.0, 50.0][i[0]] / 255.0).unwrap();
    save_image(&path, &rgb).unwrap();
    let grey = load_image_for_model(&path, 1, 28, 28).unwrap();
    assert_eq!(grey.dims(), &[1, 28, 28]);
    let luma = (0.299 * 200.0 + 0.587 * 100.0 + 0.114 * 50.0) / 255.0;
    assert!(grey.data().iter().all(|v| (v - luma).abs() < 1e-5), "{:?}", &grey.data()[..3]);
    let colour = load_image_for_model(&path, 3, 7, 9).unwrap();
    assert_eq!(colour.dims(), &[3, 7, 9]);
    assert!((colour.data()[0] - 200.0 / 255.0).abs() < 1e-6);
    assert!((colour.data()[63] - 100.0 / 255.0).abs() < 1e-6);
    let err = load_image_for_model(&path, 2, 28, 28).unwrap_err().to_string();
    assert!(err.contains("flat.png") && err.contains("1 or 3 channels"), "{err}");
}

/// ImageNet preprocessing: a 40×80 picture whose left and right quarters are black and middle
/// white becomes, after the shorter side goes to 32 (64×32) and the central 32×32 is cut out, an
/// all-white square; and a crop larger than the resize is refused.
#[test]
fn center_crop_keeps_the_middle_at_the_right_scale() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bars.png");
    let image = Tensor::from_fn([3, 40, 80], |i| if (20..60).contains(&i[2]) { 1.0 } else { 0.0 }).unwrap();
    save_image(&path, &image).unwrap();
    let crop = load_image_center_crop(&path, 32, 32).unwrap();
    assert_eq!(crop.dims(), &[3, 32, 32]);
    // Columns 16..48 of the 64-wide resize: all inside the white middle (16..48), bar the
    // filter's half-pixel blend at the edges.
    let row = &crop.data()[16 * 32..17 * 32];
    assert!(row[1..31].iter().all(|&v| v > 0.99), "{row:?}");
    assert!(load_image_center_crop(&path, 32, 33).is_err());
}
