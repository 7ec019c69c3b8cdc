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
    let output = net.forward(&Var::constant(input), Mode::Eval).unwrap().value().clone();
    assert_eq!(output.dims(), expected.dims(), "{case}");
    let worst = output
        .data()
        .iter()
        .zip(expected.data())
        .map(|(a, b)| (a - b).abs() / (1e-4 + 1e-4 * b.abs()))
        .fold(0.0f32, f32::max);
    assert!(worst <= 1.0, "{case}: largest error {worst} × (1e-4 + 1e-4·|y|)");
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
