//! `Module::forward_tapped` on real networks: every leaf that `summarize` lists reports its output
//! under the same path, in the same order and with the same shape, and tapping changes nothing
//! in the result.

use stride_nn::init::{normal, rng};
use stride_nn::module::{Mode, forward_with_activations, summarize};
use stride_tensor::autograd::{Var, no_grad};

fn check(model: &str, input: [usize; 4]) {
    let [n, c, h, w] = input;
    let mut net = stride_zoo::build(model, 10, c, 7).unwrap();
    let x = Var::constant(normal([n, c, h, w], 0.0, 1.0, &mut rng(1)).unwrap());
    let (rows, output) = summarize(net.as_ref(), &input).unwrap();
    let (plain, (tapped, activations)) = no_grad(|| {
        let plain = net.forward(&x, Mode::Eval).unwrap();
        (plain, forward_with_activations(net.as_mut(), &x, Mode::Eval, |_, _| true).unwrap())
    });

    let tapped_paths: Vec<&str> = activations.iter().map(|(p, _)| p.as_str()).collect();
    let summary_paths: Vec<&str> = rows.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(tapped_paths, summary_paths, "{model}");
    for ((path, value), row) in activations.iter().zip(&rows) {
        assert_eq!(value.dims(), row.output, "{model} {path}");
    }
    assert_eq!(plain.value().dims(), output);
    let bits = |v: &Var| v.value().data().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&plain), bits(&tapped), "{model}: tapping changed the output");
    // The last leaf's output is the network's output.
    assert_eq!(
        bits(&plain),
        activations.last().unwrap().1.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
}

#[test]
fn lenet5_reports_every_layer() {
    check("lenet5", [2, 1, 28, 28]);
}

#[test]
fn resnet20_reports_every_layer_of_every_block() {
    check("resnet20", [1, 3, 32, 32]);
}

#[test]
fn googlenet_reports_every_layer_of_every_branch() {
    check("googlenet", [1, 3, 64, 64]);
}

/// A filter keeps only what it asks for, and the paths are torchvision's.
#[test]
fn the_filter_chooses_what_is_kept() {
    let mut net = stride_zoo::build("resnet20", 10, 3, 7).unwrap();
    let x = Var::constant(normal([1, 3, 32, 32], 0.0, 1.0, &mut rng(2)).unwrap());
    let (_, kept) = no_grad(|| {
        forward_with_activations(net.as_mut(), &x, Mode::Eval, |path, _| path.starts_with("layer2.0."))
            .unwrap()
    });
    let paths: Vec<&str> = kept.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        ["layer2.0.conv1", "layer2.0.bn1", "layer2.0.conv2", "layer2.0.bn2", "layer2.0.shortcut"]
    );
    assert_eq!(kept[0].1.dims(), &[1, 32, 16, 16]);
}
