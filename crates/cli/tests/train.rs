//! `stride train`, `eval`, `predict` and `models` end to end, on a synthetic data set in MNIST's
//! format that the test writes (so no download and no installed data set is needed).

use std::path::Path;

use stride_data::datasets::synthetic::write_stripes;
use stride_data::image_io::save_image;
use stride_tensor::Tensor;

mod common;
use common::{assert_fails_with, stderr, stdout, stride};

fn s(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

#[test]
fn train_then_eval_then_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("digits");
    write_stripes(&data, 200, 50, 5).unwrap();
    let run = tmp.path().join("run");
    let train = |extra: &[&str]| {
        let mut args = vec!["train", "--dataset", "mnist", "--data", s(&data), "--threads", "1", "--quiet"];
        args.extend_from_slice(extra);
        stride(&args)
    };
    let out = train(&["--epochs", "1", "--batch-size", "25", "--validation", "50", "--out", s(&run)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("model: lenet5 (61706 parameters), 150 training / 50 validation images"), "{text}");
    assert!(text.contains("epoch   1  lr 0.05"), "{text}");
    assert!(text.contains("test accuracy after 1 epochs:"), "{text}");
    for file in
        ["checkpoint.json", "metrics.csv", "curves.png", "best.safetensors", "weights-e001.safetensors"]
    {
        assert!(run.join(file).is_file(), "{file} missing");
    }

    // The same --out again: refused, nothing overwritten.
    let again = train(&["--epochs", "1", "--out", s(&run)]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already holds a run (after epoch 1 of 1); continue it with --resume"));
    // Resuming keeps the saved settings.
    let changed = stride(&["train", "--resume", s(&run), "--lr", "0.1", "--seed", "3"]);
    assert_fails_with(
        &changed,
        "--lr 0.1 (the run has 0.05), --seed 3 (the run has 42) cannot change when resuming",
    );
    // Extending the run by one epoch.
    let resumed = train(&["--resume", s(&run), "--epochs", "2"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(stdout(&resumed).contains("resuming"), "{}", stdout(&resumed));
    assert!(stdout(&resumed).contains("epoch   2  lr 0.05"), "{}", stdout(&resumed));
    assert_eq!(std::fs::read_to_string(run.join("metrics.csv")).unwrap().lines().count(), 3);

    let eval = stride(&["eval", s(&run), "--data", s(&data), "--threads", "1"]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let text = stdout(&eval);
    assert!(text.contains("test set: mnist (50 images)"), "{text}");
    assert!(text.contains("true \\ predicted"), "{text}");
    assert_eq!(
        text.lines().filter(|l| l.ends_with('%') && l.starts_with(char::is_numeric)).count(),
        10,
        "{text}"
    );

    // A bar on row 3 + 2·4 of a black 56×40 picture: class 4 at any size.
    let picture = tmp.path().join("four.png");
    let image =
        Tensor::from_fn([1, 56, 40], |i| if (22..26).contains(&i[1]) && i[2] > 4 { 1.0 } else { 0.0 })
            .unwrap();
    save_image(&picture, &image).unwrap();
    let predict = stride(&["predict", s(&run.join("best.safetensors")), s(&picture), "--top", "2"]);
    assert!(predict.status.success(), "{}", stderr(&predict));
    let text = stdout(&predict);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.lines().nth(1).unwrap().trim_start().contains("% "), "{text}");

    let not_an_image = tmp.path().join("notes.png");
    std::fs::write(&not_an_image, "hello").unwrap();
    assert_fails_with(&stride(&["predict", s(&run), s(&not_an_image)]), "notes.png");
}

#[test]
fn bad_runs_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    assert_fails_with(&stride(&["train", "--dataset", "cifar"]), "cifar");
    assert_fails_with(
        &stride(&["train", "resnet9000"]),
        "no model called \"resnet9000\"; the zoo has: lenet5",
    );
    assert_fails_with(
        &stride(&["train", "--resume", s(tmp.path())]),
        "has no checkpoint.json: it is not a stride run directory",
    );
    assert_fails_with(
        &stride(&["eval", s(&tmp.path().join("missing"))]),
        "does not exist; give a run directory",
    );
    assert_fails_with(
        &stride(&["train", "--schedule", "sometimes", "--out", s(&tmp.path().join("r"))]),
        "unknown schedule",
    );
}

#[test]
fn models_lists_the_zoo() {
    let out = stride(&["models"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("lenet5"), "{}", stdout(&out));
    assert!(stdout(&out).contains("61706"), "{}", stdout(&out));

    let summary = stride(&["summary", "lenet5"]);
    let text = stdout(&summary);
    assert!(text.contains("total: 61,706 parameters, 416,520 multiply-adds"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("conv2 ") && l.contains("16×10×10") && l.contains("240,000")),
        "{text}"
    );
    assert_fails_with(
        &stride(&["summary", "lenet5", "--input", "1x8x8"]),
        "kernel 5 does not fit in height 4",
    );
    assert_fails_with(&stride(&["summary", "lenet5", "--input", "1x8"]), "is not C×H×W");
}

/// A real SIGINT (Ctrl-C) while training: the run saves its position, exits with 130 and says how
/// to continue; `--resume` then finishes it.
#[test]
fn ctrl_c_checkpoints_and_resume_finishes_the_run() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("digits");
    write_stripes(&data, 1100, 50, 9).unwrap();
    let run = tmp.path().join("run");
    let common = ["--data", s(&data), "--threads", "1", "--quiet"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_stride"))
        .args(["train", "--dataset", "mnist", "--epochs", "50", "--batch-size", "10", "--validation", "100"])
        .args(["--out", s(&run)])
        .args(common)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Once the first epoch is reported, the handler is installed and training is under way.
    let first_epoch = lines.by_ref().map(Result::unwrap).find(|l| l.starts_with("epoch   1"));
    assert!(first_epoch.is_some(), "no epoch line");
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let rest: Vec<String> = lines.map(Result::unwrap).collect();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest:?}");
    let last = rest.last().expect("a closing line");
    assert!(
        last.starts_with("interrupted ") && last.contains("continue with `stride train --resume"),
        "{last}"
    );
    let checkpoint = std::fs::read_to_string(run.join("checkpoint.json")).unwrap();
    assert!(checkpoint.contains("\"reason\": \"interrupted\""), "{checkpoint}");

    let resumed = stride(&[&["train", "--resume", s(&run), "--epochs", "3"][..], &common[..]].concat());
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert_eq!(std::fs::read_to_string(run.join("metrics.csv")).unwrap().lines().count(), 4);
}

/// A zoo network with weights from a file (here saved by stride's own checkpoint code under the
/// torchvision names a PyTorch export would have): `infer` on a stored tensor and `predict` on a
/// picture with ImageNet preprocessing.
#[test]
fn zoo_networks_run_with_weights_from_a_file() {
    use std::collections::{BTreeMap, HashMap};

    use stride_nn::checkpoint::{load_tensors, save, save_tensors};

    let tmp = tempfile::tempdir().unwrap();
    let weights = tmp.path().join("resnet20.safetensors");
    let mut net = stride_zoo::build("resnet20", 10, 3, 11).unwrap();
    save(net.as_mut(), &weights, HashMap::new()).unwrap();

    let input = tmp.path().join("x.safetensors");
    let x = Tensor::from_fn([2, 3, 32, 32], |i| ((i[1] * 7 + i[2] * 3 + i[3]) % 11) as f32 / 11.0).unwrap();
    save_tensors(&BTreeMap::from([("x".to_string(), x)]), &input, HashMap::new()).unwrap();
    let output = tmp.path().join("y.safetensors");
    let args = [
        "infer",
        "--model",
        "resnet20",
        "--weights",
        s(&weights),
        "--input",
        s(&input),
        "--output",
        s(&output),
    ];
    let run = stride(&args);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(stdout(&run).starts_with("resnet20: output [2, 10] written to"), "{}", stdout(&run));
    let (tensors, _) = load_tensors(&output).unwrap();
    assert!(tensors["output"].data().iter().all(|v| v.is_finite()));

    let picture = tmp.path().join("photo.png");
    save_image(&picture, &Tensor::from_fn([3, 48, 64], |i| (i[0] + i[1] % 5) as f32 / 7.0).unwrap()).unwrap();
    let predict =
        stride(&["predict", "--model", "resnet20", "--weights", s(&weights), s(&picture), "--top", "3"]);
    assert!(predict.status.success(), "{}", stderr(&predict));
    assert_eq!(stdout(&predict).lines().count(), 4, "{}", stdout(&predict));

    // A state_dict for another network: every problem listed, nothing run.
    let wrong = stride(&[
        "infer",
        "--model",
        "resnet32",
        "--weights",
        s(&weights),
        "--input",
        s(&input),
        "--output",
        s(&output),
    ]);
    assert_fails_with(&wrong, "missing: layer1.3.conv1.weight");
    let no_weights = stride(&["predict", "--model", "resnet20", s(&picture)]);
    assert_eq!(no_weights.status.code(), Some(2), "clap refuses --model without --weights");
}
