//! `stride` end to end: the built binary run on arguments and tiny images the tests make
//! themselves. Checks the exit code, stdout and the wording of the error messages; the default
//! `conv1d` output is compared whole, so a change to it is reviewed like code.

use std::path::Path;

use stride_data::image_io::{load_image, save_image};
use stride_tensor::Tensor;

mod common;
use common::{assert_fails_with, stderr, stdout, stride};

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// A small colour PNG with some structure, so filters have something to do.
fn write_test_png(path: &Path, height: usize, width: usize) {
    let image = Tensor::from_fn([3, height, width], |i| {
        ((i[0] + 1) * (i[1] * width + i[2])) as f32 / (3 * height * width) as f32
    })
    .unwrap();
    save_image(path, &image).unwrap();
}

const CONV1D_LECTURE: &str = "\
The lecture's noisy sensor (Module 11.1): s_t = Σ_{a=0..6} x_{t−a} w_{−a}
  w_−6 .. w_0 = 0.01 0.01 0.02 0.02 0.04 0.4 0.5
  x_0 .. x_11 = 1.00 1.10 1.20 1.40 1.70 1.80 1.90 2.10 2.20 2.40 2.50 2.70

s_6 = 1.90×0.5 + 1.80×0.4 + 1.70×0.04 + 1.40×0.02 + 1.20×0.02 + 1.10×0.01 + 1.00×0.01 = 1.811
s_7 = 2.10×0.5 + 1.90×0.4 + 1.80×0.04 + 1.70×0.02 + 1.40×0.02 + 1.20×0.01 + 1.10×0.01 = 1.967
s_8 = 2.20×0.5 + 2.10×0.4 + 1.90×0.04 + 1.80×0.02 + 1.70×0.02 + 1.40×0.01 + 1.20×0.01 = 2.112
s_9 = 2.40×0.5 + 2.20×0.4 + 2.10×0.04 + 1.90×0.02 + 1.80×0.02 + 1.70×0.01 + 1.40×0.01 = 2.269
s_10 = 2.50×0.5 + 2.40×0.4 + 2.20×0.04 + 2.10×0.02 + 1.90×0.02 + 1.80×0.01 + 1.70×0.01 = 2.413
s_11 = 2.70×0.5 + 2.50×0.4 + 2.40×0.04 + 2.20×0.02 + 2.10×0.02 + 1.90×0.01 + 1.80×0.01 = 2.569

computed by stride_tensor::ops::conv::conv1d in KernelMode::Convolution (flipped kernel)
note: the slides show S = 1.80 1.96 2.11 2.16 2.28 2.42, rounded and partly wrong; to two decimals the sums are 1.81 1.97 2.11 2.27 2.41 2.57
";

#[test]
fn conv1d_default_reproduces_the_lecture_exactly() {
    let output = stride(&["conv1d"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    for (t, value) in [(6, "1.811"), (7, "1.967"), (8, "2.112"), (9, "2.269"), (10, "2.413"), (11, "2.569")] {
        let line = text.lines().find(|l| l.starts_with(&format!("s_{t} = "))).expect("a line per s_t");
        assert!(line.ends_with(&format!("= {value}")), "{line}");
    }
    assert_eq!(text, CONV1D_LECTURE);
}

#[test]
fn conv1d_takes_other_signals_and_kernels_in_the_lecture_order() {
    // w_−1 = -1, w_0 = 1: s_t = x_t − x_{t−1}, a difference filter.
    let output = stride(&["conv1d", "--signal", "1,-2,3,4", "--kernel", "-1,1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("s_1 = (-2)×1 + 1×(-1) = -3\n"), "{text}");
    assert!(text.contains("s_2 = 3×1 + (-2)×(-1) = 5\n"), "{text}");
    assert!(text.contains("s_3 = 4×1 + 3×(-1) = 1\n"), "{text}");
    assert!(!text.contains("slides"), "the footer is for the lecture's numbers only: {text}");
}

#[test]
fn conv1d_bad_kernel_is_a_clear_error() {
    let output = stride(&["conv1d", "--kernel", "0.5,x,1"]);
    assert_fails_with(&output, "--kernel \"0.5,x,1\": value 2, \"x\", is not a number");
    assert_fails_with(&stride(&["conv1d", "--kernel", ""]), "is empty");
    assert_fails_with(&stride(&["conv1d", "--signal", "1,,2"]), "--signal \"1,,2\": value 2 is empty");
}

#[test]
fn conv1d_kernel_longer_than_the_signal_gives_the_size_rule() {
    let output = stride(&["conv1d", "--signal", "1,2,3"]);
    assert_eq!(
        stderr(&output),
        "error: a 7-tap kernel needs a signal at least 7 long, but the signal has 3 values: conv1d: kernel 7 \
         does not fit in width 3 padded to 3: O = ⌊(I + 2P − D·(F−1) − 1)/S⌋ + 1 = ⌊(3 + 2·0 − 1·(7−1) − 1)/1⌋ \
         + 1 < 1 (input [1, 1, 3], weight [1, 1, 7])\n"
    );
    assert_fails_with(&output, "does not fit");
}

#[test]
fn filter_writes_an_output_of_the_right_size() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write_test_png(&input, 6, 10);
    let cases: [(&[&str], &str, [usize; 3]); 5] = [
        (&["edge"], "edge.png", [3, 6, 10]),
        (&["blur", "--padding", "valid"], "blur.jpg", [3, 4, 8]),
        (&["sharpen", "--stride", "2"], "sharp.png", [3, 3, 5]),
        (&["edge", "--depth", "--padding", "1"], "depth.png", [1, 6, 10]),
        (
            &["--kernel", "0,-1,0;-1,5,-1;0,-1,0", "--padding", "valid", "--stride", "2"],
            "custom.jpeg",
            [3, 2, 4],
        ),
    ];
    for (options, name, dims) in cases {
        let output_path = dir.path().join(name);
        let mut args = vec!["filter"];
        args.extend_from_slice(options);
        args.extend([path_str(&input), path_str(&output_path)]);
        let output = stride(&args);
        assert!(output.status.success(), "{args:?}: {}", stderr(&output));
        let line = stdout(&output);
        assert_eq!(line.lines().count(), 1, "{line}");
        let [c, h, w] = dims;
        assert!(line.contains(&format!("10×6×3 → {} {w}×{h}×{c}", output_path.display())), "{line}");
        assert_eq!(load_image(&output_path).unwrap().dims(), &dims, "{args:?}");
    }
}

#[test]
fn filter_reports_the_kernel_it_used() {
    let dir = tempfile::tempdir().unwrap();
    let (input, output_path) = (dir.path().join("in.png"), dir.path().join("out.png"));
    write_test_png(&input, 4, 4);
    let output = stride(&["filter", "blur", "--depth", path_str(&input), path_str(&output_path)]);
    assert_eq!(
        stdout(&output),
        format!(
            "{} 4×4×3 → {} 4×4×1: blur [1,1,1; 1,1,1; 1,1,1] / 9 spanning all 3 channels, padding same, stride 1\n",
            input.display(),
            output_path.display()
        )
    );
}

#[test]
fn filter_runs_on_the_shipped_sample_photo() {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/assets/astronaut.jpg");
    let dir = tempfile::tempdir().unwrap();
    let output_path = dir.path().join("edges.png");
    let output = stride(&["filter", "edge", path_str(&sample), path_str(&output_path)]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(load_image(&output_path).unwrap().dims(), &[3, 256, 256]);
}

#[test]
fn filter_missing_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("missing.png");
    let output = stride(&["filter", "edge", path_str(&input), path_str(&dir.path().join("out.png"))]);
    assert_fails_with(&output, &format!("{}: no such file", input.display()));
}

#[test]
fn filter_unsupported_extensions_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write_test_png(&input, 4, 4);
    let bmp = dir.path().join("out.bmp");
    let output = stride(&["filter", "blur", path_str(&input), path_str(&bmp)]);
    assert_eq!(
        stderr(&output),
        format!("error: {}: unsupported extension \".bmp\"; supported: png, jpg, jpeg\n", bmp.display())
    );
    assert_fails_with(&output, "supported: png, jpg, jpeg");
    assert!(!bmp.exists());
    let output = stride(&["filter", "blur", "picture.gif", path_str(&dir.path().join("out.png"))]);
    assert_fails_with(&output, "picture.gif: unsupported extension \".gif\"");
}

#[test]
fn filter_output_into_a_missing_folder_says_so_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write_test_png(&input, 4, 4);
    let output_path = dir.path().join("no_such_folder").join("out.png");
    let output = stride(&["filter", "edge", path_str(&input), path_str(&output_path)]);
    assert_fails_with(&output, &format!("{}: cannot write: ", output_path.display()));
    assert_eq!(stderr(&output).matches("os error").count(), 1, "{}", stderr(&output));
}

#[test]
fn filter_corrupt_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("broken.png");
    std::fs::write(&input, b"\x89PNG\r\n\x1a\nnot really").unwrap();
    let output = stride(&["filter", "edge", path_str(&input), path_str(&dir.path().join("out.png"))]);
    assert_fails_with(&output, &format!("{}: not a readable PNG or JPEG image", input.display()));
}

#[test]
fn filter_argument_mistakes_exit_1_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.png");
    write_test_png(&input, 4, 4);
    let (i, o) = (path_str(&input), dir.path().join("out.png"));
    let o = path_str(&o);
    assert_fails_with(
        &stride(&["filter", "emboss", i, o]),
        "unknown filter \"emboss\"; choose one of blur, sharpen, edge, or give your own with --kernel",
    );
    assert_fails_with(&stride(&["filter", i, o]), "name a filter (blur, sharpen, edge) before IN and OUT");
    assert_fails_with(&stride(&["filter", "edge", i]), &format!("missing OUT after {i:?}"));
    assert_fails_with(&stride(&["filter", "--kernel", "1,0", "blur", i, o]), "not both");
    assert_fails_with(
        &stride(&["filter", "--kernel", "1,2;3", i, o]),
        "kernel \"1,2;3\": row 2 has 1 value but row 1 has 2",
    );
    assert_fails_with(&stride(&["filter", "edge", "--padding", "wide", i, o]), "padding \"wide\": expected");
    assert_fails_with(&stride(&["filter", "edge", "--stride", "0", i, o]), "stride must be at least 1");
    assert_fails_with(
        &stride(&[
            "filter",
            "--kernel",
            "1,1,1,1,1;1,1,1,1,1;1,1,1,1,1;1,1,1,1,1;1,1,1,1,1",
            "--padding",
            "valid",
            i,
            o,
        ]),
        "conv2d: kernel 5 does not fit in height 4",
    );
}

#[test]
fn help_teaches_the_kernels_and_names_the_sample() {
    let output = stride(&["filter", "--help"]);
    assert!(output.status.success());
    let help = stdout(&output);
    for needle in
        ["blur", "sharpen", "edge", "1,-8,1", "feature map", "crates/data/assets/astronaut.jpg", "--depth"]
    {
        assert!(help.contains(needle), "{needle:?} missing from:\n{help}");
    }
    let help = stdout(&stride(&["conv1d", "--help"]));
    assert!(help.contains("noisy"), "{help}");
}
