//! The whole training stack at once, in CI: LeNet-5 built from stride's layers overfits a small
//! fixed batch to 100% accuracy within a bounded number of SGD steps, and its output shape is
//! known before any computation.

use stride_nn::layers::{Activation, Conv2d, Flatten, Linear, Pool};
use stride_nn::module::{Mode, Module, Sequential, named_parameters, parameter_count};
use stride_nn::optim::{Optimizer, Sgd};
use stride_tensor::autograd::{Var, cross_entropy};
use stride_tensor::ops::conv::ConvSpec;
use stride_tensor::ops::pool::PoolSpec;
use stride_tensor::{Shape, Tensor};

/// Uniform values in ±1/√fan_in from a fixed LCG (PyTorch's default bound for these layers).
fn uniform(shape: &[usize], fan_in: usize, seed: &mut u64) -> Tensor {
    let bound = 1.0 / (fan_in as f32).sqrt();
    Tensor::from_fn(Shape::from(shape), |_| {
        *seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound
    })
    .unwrap()
}

/// LeNet-5 in its common modern form for 28×28 inputs: conv 5×5 with padding 2, tanh, average
/// pooling, as in the 1998 paper's C1–S2–C3–S4–C5–F6 layout.
fn lenet5(seed: &mut u64) -> Sequential {
    let conv = |cin: usize, cout: usize, pad: usize, seed: &mut u64| -> Box<dyn Module> {
        let w = uniform(&[cout, cin, 5, 5], cin * 25, seed);
        let b = uniform(&[cout], cin * 25, seed);
        Box::new(Conv2d::from_parts(w, Some(b), ConvSpec::new().padding(pad)).unwrap())
    };
    let linear = |inp: usize, out: usize, seed: &mut u64| -> Box<dyn Module> {
        Box::new(
            Linear::from_parts(uniform(&[out, inp], inp, seed), Some(uniform(&[out], inp, seed))).unwrap(),
        )
    };
    Sequential::new(vec![
        conv(1, 6, 2, seed),
        Box::new(Activation::Tanh),
        Box::new(Pool::<2>::avg(PoolSpec::new(2))),
        conv(6, 16, 0, seed),
        Box::new(Activation::Tanh),
        Box::new(Pool::<2>::avg(PoolSpec::new(2))),
        Box::new(Flatten::default()),
        linear(400, 120, seed),
        Box::new(Activation::Tanh),
        linear(120, 84, seed),
        Box::new(Activation::Tanh),
        linear(84, 10, seed),
    ])
}

#[test]
fn lenet5_shapes_names_and_parameter_count() {
    let mut net = lenet5(&mut 1);
    assert_eq!(net.output_shape(&[8, 1, 28, 28]).unwrap(), vec![8, 10]);
    // 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706 parameters, as torchvision-style LeNet-5.
    assert_eq!(parameter_count(&mut net), 61_706);
    let names: Vec<String> = named_parameters(&mut net).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names[..4], ["0.weight", "0.bias", "3.weight", "3.bias"]);
    assert_eq!(names.last().unwrap(), "11.bias");
    let err = net.output_shape(&[8, 1, 20, 20]).unwrap_err().to_string();
    assert_eq!(err, "7 (Linear): expects [N, 400] (in_features = 400), got [8, 144]");
}

#[test]
fn lenet5_overfits_a_fixed_batch() {
    let mut seed = 42u64;
    let mut net = lenet5(&mut seed);
    let images = uniform(&[20, 1, 28, 28], 1, &mut seed).map(|v| v.abs());
    let labels: Vec<usize> = (0..20).map(|i| i % 10).collect();
    let x = Var::constant(images);
    let mut sgd = Sgd::new(0.05).unwrap().momentum(0.9).unwrap();
    let mut first_loss = None;
    for step in 0..300 {
        let logits = net.forward(&x, Mode::Train).unwrap();
        let predictions: Vec<usize> = logits
            .value()
            .data()
            .chunks_exact(10)
            .map(|row| row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0)
            .collect();
        let loss = cross_entropy(&logits, &labels, 0.0).unwrap();
        let value = loss.value().item().unwrap();
        assert!(value.is_finite(), "loss became {value} at step {step}");
        first_loss.get_or_insert(value);
        if predictions == labels && value < 0.05 {
            assert!(value < first_loss.unwrap() / 10.0);
            return;
        }
        loss.backward().unwrap();
        drop((loss, logits));
        let mut params = named_parameters(&mut net);
        let mut refs: Vec<(&str, &mut Var)> =
            params.iter_mut().map(|(n, v)| (n.as_str(), &mut **v)).collect();
        sgd.step(&mut refs).unwrap();
    }
    panic!("LeNet-5 did not fit 20 examples in 300 steps");
}
