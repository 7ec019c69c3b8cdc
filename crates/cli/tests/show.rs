//! `stride show` end to end: filters, feature maps, occlusion and saliency pictures from a LeNet-5
//! trained for one epoch on synthetic stripes (a run directory) and from a CIFAR ResNet-20 saved
//! with its initial weights (a weights file, colour input), and the errors for bad input.

use std::path::Path;

use stride_data::datasets::synthetic::write_stripes;
use stride_data::image_io::save_image;
use stride_tensor::Tensor;
use stride_train::run_dir::save_weights;
use stride_train::{OptimizerConfig, RunConfig};

mod common;
use common::{assert_fails_with, stderr, stdout, stride};

fn s(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// Width and height from a PNG's header, after checking that it is one.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{} is not a PNG", path.display());
    let number = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (number(16), number(20))
}

/// Runs `stride show ARGS`, expecting success, and returns what it printed.
fn show(args: &[&str]) -> String {
    let mut all = vec!["show"];
    all.extend_from_slice(args);
    let out = stride(&all);
    assert!(out.status.success(), "stride {all:?}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn pictures_of_a_trained_lenet() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("stripes");
    write_stripes(&data, 100, 10, 3).unwrap();
    let run = tmp.path().join("run");
    let train = stride(&[
        "train",
        "--dataset",
        "mnist",
        "--data",
        s(&data),
        "--epochs",
        "1",
        "--batch-size",
        "25",
        "--validation",
        "0",
        "--threads",
        "1",
        "--quiet",
        "--out",
        s(&run),
    ]);
    assert!(train.status.success(), "{}", stderr(&train));
    // A bar on rows 9 and 10 of a black picture: class 3 of the stripes.
    let picture = tmp.path().join("three.png");
    let bar = |i: &[usize]| if (9..11).contains(&i[1]) && (4..24).contains(&i[2]) { 1.0 } else { 0.0 };
    save_image(&picture, &Tensor::from_fn([1, 28, 28], bar).unwrap()).unwrap();
    let out = |name: &str| tmp.path().join(name);

    let text = show(&["filters", s(&run), "-o", s(&out("conv1.png"))]);
    assert_eq!(text, format!("conv1: 6 filters of 1×5×5 → {}\n", out("conv1.png").display()));
    let (w, h) = png_size(&out("conv1.png"));
    assert!(w >= 3 * 60 && h >= 2 * 60, "{w}×{h}");
    let text =
        show(&["filters", s(&run.join("checkpoint.json")), "--layer", "conv2", "-o", s(&out("conv2.png"))]);
    assert!(text.starts_with("conv2: 16 filters of 6×5×5"), "{text}");
    // 16 rows of 6 channels, each tile 60 pixels.
    assert!(png_size(&out("conv2.png")).1 > 16 * 60, "{:?}", png_size(&out("conv2.png")));
    show(&["filters", s(&run), "--layer", "conv2", "--channels", "mean", "-o", s(&out("mean.png"))]);
    assert!(png_size(&out("mean.png")).1 < png_size(&out("conv2.png")).1);

    let maps = out("maps");
    let text = show(&["maps", s(&run), s(&picture), "-o", s(&maps)]);
    let mut files: Vec<String> =
        std::fs::read_dir(&maps).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    files.sort();
    assert_eq!(
        files,
        ["01-conv1.png", "02-relu1.png", "03-pool1.png", "04-conv2.png", "05-relu2.png", "06-pool2.png"]
    );
    assert!(text.lines().any(|l| l.contains("conv2") && l.contains("10×10×16")), "{text}");
    for file in &files {
        let (w, h) = png_size(&maps.join(file));
        assert!(w > 300 && h > 150, "{file}: {w}×{h}");
    }
    let some = out("some");
    show(&["maps", s(&run), s(&picture), "--layers", "conv2", "pool1", "--scale", "map", "-o", s(&some)]);
    assert!(some.join("01-pool1.png").is_file() && some.join("02-conv2.png").is_file(), "forward order");

    let text = show(&["occlusion", s(&run), s(&picture), "-o", s(&out("occlusion.png"))]);
    assert!(text.contains("p = ") && text.contains("4×4 patch"), "{text}");
    let (w, h) = png_size(&out("occlusion.png"));
    assert!(w > 2 * 280 && h > 280, "{w}×{h}");
    show(&["occlusion", s(&run), s(&picture), "--patch", "28", "--class", "5", "-o", s(&out("whole.png"))]);

    let text = show(&["saliency", s(&run), s(&picture), "--class", "3", "-o", s(&out("saliency.png"))]);
    assert!(text.contains("(class 3)"), "{text}");
    let (w, h) = png_size(&out("saliency.png"));
    assert!(w > 2 * 280 && h > 280, "{w}×{h}");

    // Errors name what is wrong and what would do.
    let fails = |args: &[&str], needle: &str| {
        let mut all = vec!["show"];
        all.extend_from_slice(args);
        assert_fails_with(&stride(&all), needle);
    };
    let x_png = out("x.png");
    let png = s(&x_png);
    fails(
        &["filters", s(&run), "--layer", "fc1", "-o", png],
        "fc1 is not a 2-D convolution (its weight is [120, 400]); the convolution layers are: conv1, conv2",
    );
    fails(
        &["filters", s(&run), "--layer", "conv9", "-o", png],
        "no convolution layer conv9 in this network; the convolution layers are: conv1, conv2",
    );
    fails(
        &["maps", s(&run), s(&picture), "--layers", "fc1", "-o", s(&out("none"))],
        "fc1 has no feature maps: its output is [1, 120], not [1, D, H, W]; the layers with maps are: conv1, relu1, pool1, conv2, relu2, pool2",
    );
    fails(
        &["occlusion", s(&run), s(&picture), "--patch", "29", "-o", png],
        "--patch 29 is larger than the 28×28 input the network sees",
    );
    fails(&["occlusion", s(&run), s(&picture), "--stride", "0", "-o", png], "stride 0");
    fails(
        &["saliency", s(&run), s(&picture), "--class", "10", "-o", png],
        "--class 10 is out of range: the model has 10 classes",
    );
    fails(&["filters", s(&run), "-o", s(&out("x.jpg"))], "give a file name ending in .png");
    let not_an_image = out("notes.png");
    std::fs::write(&not_an_image, "hello").unwrap();
    fails(&["saliency", s(&run), s(&not_an_image), "-o", png], "notes.png");
    fails(&["maps", s(&out("missing")), s(&picture), "-o", png], "does not exist; give a run directory");
    assert!(!out("x.png").exists() && !out("none").exists(), "nothing written after an error");
}

#[test]
fn colour_filters_and_saliency_of_a_resnet20_weights_file() {
    let tmp = tempfile::tempdir().unwrap();
    let config = RunConfig {
        model: "resnet20".into(),
        dataset: "synthetic".into(),
        classes: (0..10).map(|c| format!("class{c}")).collect(),
        input: [3, 32, 32],
        mean: vec![0.5, 0.5, 0.5],
        std: vec![0.25, 0.25, 0.25],
        epochs: 1,
        batch_size: 1,
        optimizer: OptimizerConfig::sgd(0.1, 0.0, 0.0),
        schedule: "constant".into(),
        seed: 1,
        validation: 0,
        train_subset: None,
        augment: false,
    };
    let mut model = stride_zoo::build("resnet20", 10, 3, 1).unwrap();
    let weights = tmp.path().join("weights.safetensors");
    save_weights(model.as_mut(), &config, 0, &weights).unwrap();
    let picture = tmp.path().join("colour.png");
    let colours = |i: &[usize]| if i[0] == (i[1] / 16 + i[2] / 16) % 3 { 0.9 } else { 0.1 };
    save_image(&picture, &Tensor::from_fn([3, 48, 40], colours).unwrap()).unwrap();
    let out = |name: &str| tmp.path().join(name);

    let text = show(&["filters", s(&weights), "-o", s(&out("conv1.png"))]);
    assert!(text.starts_with("conv1: 16 filters of 3×3×3"), "{text}");
    assert!(png_size(&out("conv1.png")).0 > 4 * 57);
    show(&["filters", s(&weights), "--layer", "layer3.2.conv2", "-o", s(&out("deep.png"))]);
    let maps = out("maps");
    let text = show(&["maps", s(&weights), s(&picture), "--layers", "layer1.0.conv1", "-o", s(&maps)]);
    assert!(text.contains("32×32×16"), "{text}");
    assert!(maps.join("01-layer1.0.conv1.png").is_file());
    let text = show(&["saliency", s(&weights), s(&picture), "-o", s(&out("saliency.png"))]);
    assert!(text.contains("score"), "{text}");
    show(&[
        "occlusion",
        s(&weights),
        s(&picture),
        "--patch",
        "8",
        "--stride",
        "8",
        "-o",
        s(&out("occlusion.png")),
    ]);

    let mut all = vec!["show", "filters", s(&weights), "--layer", "layer1.0", "-o"];
    let png = out("x.png");
    all.push(s(&png));
    assert_fails_with(
        &stride(&all),
        "layer1.0 holds several layers; the convolution layers in it are: layer1.0.conv1, layer1.0.conv2",
    );
    assert_fails_with(
        &stride(&[
            "show",
            "filters",
            s(&weights),
            "--layer",
            "layer1.0.conv1",
            "--channels",
            "colour",
            "-o",
            s(&png),
        ]),
        "colour tiles need filters over 3 input channels; these span 16",
    );
}
