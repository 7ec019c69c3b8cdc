//! The zoo's networks against PyTorch: each fixture (tools/gen_zoo_fixtures.py) holds a seeded
//! network's state_dict under torchvision's names, an input and PyTorch's output in evaluation
//! mode. The weights load into stride's network by name, unchanged, and the outputs agree.

use std::collections::BTreeMap;
use std::path::Path;

use stride_nn::checkpoint::{assign, load_tensors};
use stride_nn::module::{Mode, Module};
use stride_tensor::Tensor;
use stride_tensor::autograd::Var;
use stride_zoo::BuildOptions;

/// Loads `case`'s weights into `net`, runs its input, and compares with PyTorch's output.
fn check(case: &str, mut net: Box<dyn Module>) {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(format!("{case}.safetensors"));
    let (mut tensors, metadata) = load_tensors(&path).unwrap();
    assert_eq!(metadata["case"], case);
    let input = tensors.remove("input").unwrap();
    let expected = tensors.remove("output").unwrap();
    let weights: BTreeMap<String, Tensor> = tensors
        .into_iter()
        .filter_map(|(name, t)| name.strip_prefix("weights.").map(|n| (n.to_string(), t)))
        .collect();
    assign(net.as_mut(), weights, case).unwrap();
    let x = Var::constant(input);
    let output = net.forward(&x, Mode::Eval).unwrap().value().clone();
    assert_close(&output, &expected, case);
    // The inference path: batch norm folded into the convolutions, the same outputs.
    net.fold_batch_norm().unwrap();
    let folded = net.forward(&x, Mode::Eval).unwrap().value().clone();
    assert_close(&folded, &expected, &format!("{case}, batch norm folded"));
}

fn assert_close(output: &Tensor, expected: &Tensor, case: &str) {
    assert_eq!(output.dims(), expected.dims(), "{case}");
    let worst = output
        .data()
        .iter()
        .zip(expected.data())
        .map(|(a, b)| (a - b).abs() / (1e-4 + 1e-4 * b.abs()))
        .fold(0.0f32, f32::max);
    assert!(worst <= 1.0, "{case}: largest error {worst} × (1e-4 + 1e-4·|y|)");
}

/// VGG-11 with batch norm (a plain `Sequential` of conv, bn, relu): folding keeps the
/// evaluation output, and a folded network refuses to train.
#[test]
fn folding_vgg11_bn_keeps_its_output_and_forbids_training() {
    let mut net = stride_zoo::build("vgg11_bn", 10, 3, 1).unwrap();
    let mut buffers = Vec::new();
    net.buffers("", &mut buffers);
    for (i, (name, buffer)) in buffers.into_iter().enumerate() {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            let base = if name.ends_with("running_var") { 0.5 } else { -0.2 };
            *buffer =
                Tensor::from_fn(buffer.dims().to_vec(), |c| base + ((c[0] + i) % 7) as f32 * 0.1).unwrap();
        }
    }
    let x = Var::constant(
        Tensor::from_fn([1, 3, 32, 32], |i| ((i[1] * 5 + i[2] * 3 + i[3]) % 13) as f32 / 13.0).unwrap(),
    );
    let before = net.forward(&x, Mode::Eval).unwrap().value().clone();
    net.fold_batch_norm().unwrap();
    let after = net.forward(&x, Mode::Eval).unwrap().value().clone();
    assert_close(&after, &before, "vgg11_bn folded");
    let err = net.forward(&x, Mode::Train).unwrap_err().to_string();
    assert!(err.contains("folded into the convolution before it for inference"), "{err}");
}

fn options(in_channels: usize, classes: usize) -> BuildOptions {
    BuildOptions { in_channels, classes, seed: 0 }
}

#[test]
fn lenet5_matches_pytorch() {
    check("lenet5", stride_zoo::find("lenet5").unwrap().build(&options(1, 10)).unwrap());
}

#[test]
fn cifar_resnet20_matches_pytorch() {
    check("resnet20", stride_zoo::resnet::resnet20(&options(3, 10)).unwrap());
}

#[test]
fn inception_block_matches_torchvision() {
    let block = stride_zoo::googlenet::inception([192, 64, 96, 128, 16, 32, 32], 0).unwrap();
    check("inception3a", Box::new(block));
}

#[test]
fn resnet50_bottleneck_stage_matches_torchvision() {
    let stage = stride_zoo::resnet::resnet_stage(stride_zoo::resnet::BlockKind::Bottleneck, 64, 64, 3, 1, 0);
    check("resnet50_layer1", stage.unwrap());
}
