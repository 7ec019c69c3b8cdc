//! Autograd tests: every operation's gradient against finite differences, graph bookkeeping,
//! and the errors.

use super::check::{GradCheck, check_gradients};
use super::*;

fn seeded(shape: &[usize], seed: u64) -> Tensor {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    Tensor::from_fn(shape.to_vec(), |_| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
    .unwrap()
}

/// Inputs kept away from 0 so that ReLU's kink is out of reach of ±ε.
fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
    seeded(shape, seed).map(|v| if v.abs() < 0.1 { v + 0.2 * v.signum() + 0.05 } else { v })
}

#[test]
fn arithmetic_with_broadcasting() {
    let inputs = [seeded(&[2, 3, 4], 1), seeded(&[3, 1], 2)];
    check_gradients(|v| add(&v[0], &v[1]), &inputs, GradCheck::default()).unwrap();
    check_gradients(|v| sub(&v[0], &v[1]), &inputs, GradCheck::default()).unwrap();
    check_gradients(|v| mul(&v[0], &v[1]), &inputs, GradCheck::default()).unwrap();
    check_gradients(|v| Ok(mul_scalar(&v[0], -2.5)), &inputs[..1], GradCheck::default()).unwrap();
}

#[test]
fn matrix_products() {
    let inputs = [seeded(&[3, 5], 3), seeded(&[5, 4], 4)];
    check_gradients(|v| matmul(&v[0], &v[1]), &inputs, GradCheck::default()).unwrap();
    let batched = [seeded(&[2, 3, 5], 5), seeded(&[5, 4], 6)];
    check_gradients(|v| matmul(&v[0], &v[1]), &batched, GradCheck::default()).unwrap();
}

#[test]
fn fully_connected() {
    let inputs = [seeded(&[3, 5], 14), seeded(&[4, 5], 15), seeded(&[4], 16)];
    check_gradients(|v| linear(&v[0], &v[1], Some(&v[2])), &inputs, GradCheck::default()).unwrap();
    check_gradients(|v| linear(&v[0], &v[1], None), &inputs[..2], GradCheck::default()).unwrap();
}

#[test]
fn activations_and_reductions() {
    let x = [away_from_zero(&[4, 5], 7)];
    check_gradients(|v| Ok(relu(&v[0])), &x, GradCheck::default()).unwrap();
    check_gradients(|v| Ok(tanh(&v[0])), &x, GradCheck::default()).unwrap();
    check_gradients(|v| Ok(leaky_relu(&v[0], 0.1)), &x, GradCheck::default()).unwrap();
    check_gradients(|v| Ok(sigmoid(&v[0])), &x, GradCheck::default()).unwrap();
    check_gradients(|v| Ok(sum_all(&v[0])), &x, GradCheck::default()).unwrap();
    check_gradients(|v| Ok(mean_all(&v[0])), &x, GradCheck::default()).unwrap();
    check_gradients(|v| reshape(&v[0], &[-1, 2]), &x, GradCheck::default()).unwrap();
}

/// A small two-layer network: the gradient flows through every operation at once, and an input
/// used twice (x in both branches) receives the sum of both contributions.
#[test]
fn composite_graph_with_a_shared_input() {
    let inputs = [away_from_zero(&[2, 3], 8), seeded(&[3, 4], 9), seeded(&[4], 10)];
    let net = |v: &[Var]| -> Result<Var> {
        let hidden = relu(&add(&matmul(&v[0], &v[1])?, &v[2])?);
        let skip = mul_scalar(&sum_all(&v[0]), 0.5);
        add(&sum_all(&tanh(&hidden)), &skip)
    };
    check_gradients(net, &inputs, GradCheck::default()).unwrap();
}

#[test]
fn the_checker_catches_a_wrong_gradient() {
    struct WrongBackward;
    impl Backward for WrongBackward {
        fn name(&self) -> &'static str {
            "wrong"
        }
        fn backward(&self, grad: &Tensor, _: &[Var]) -> Result<Vec<Option<Tensor>>> {
            Ok(vec![Some(grad.mul_scalar(3.0))])
        }
    }
    let doubled =
        |v: &[Var]| Ok(Var::from_op(v[0].value().mul_scalar(2.0), vec![v[0].clone()], WrongBackward));
    let err = check_gradients(doubled, &[seeded(&[3], 1)], GradCheck::default()).unwrap_err();
    assert!(err.to_string().contains("backward gives"), "{err}");
}

#[test]
fn gradients_accumulate_until_zeroed() {
    let w = Var::parameter(Tensor::new([2], vec![1.0, 2.0]).unwrap());
    let loss = sum_all(&mul_scalar(&w, 3.0));
    loss.backward().unwrap();
    loss.backward().unwrap();
    assert_eq!(w.grad().unwrap().data(), &[6.0, 6.0]);
    w.zero_grad();
    assert!(w.grad().is_none());
}

#[test]
fn values_change_in_place_only_when_no_graph_holds_them() {
    let mut w = Var::parameter(Tensor::new([2], vec![1.0, 2.0]).unwrap());
    let loss = sum_all(&mul_scalar(&w, 3.0));
    assert!(w.value_mut().is_none(), "the graph still refers to w");
    loss.backward().unwrap();
    drop(loss);
    w.value_mut().unwrap().data_mut()[0] = 5.0;
    assert_eq!(w.value().data(), &[5.0, 2.0]);
    assert_eq!(w.take_grad().unwrap().data(), &[3.0, 3.0]);
    assert!(w.grad().is_none());
}

#[test]
fn constants_record_no_graph() {
    let x = Var::constant(seeded(&[3], 1));
    let y = relu(&x);
    assert!(!y.requires_grad());
    let err = sum_all(&y).backward().unwrap_err();
    assert_eq!(
        err.to_string(),
        "backward: invalid argument: this value does not depend on any parameter, so it has no gradient to propagate"
    );
}

#[test]
fn backward_needs_a_scalar_or_a_matching_gradient() {
    let w = Var::parameter(seeded(&[2, 2], 1));
    let y = mul_scalar(&w, 2.0);
    assert_eq!(
        y.backward().unwrap_err().to_string(),
        "backward: needs a one-element output such as a loss, got shape [2, 2]; use backward_with to give the output's gradient"
    );
    assert_eq!(
        y.backward_with(Tensor::zeros([3]).unwrap()).unwrap_err().to_string(),
        "backward: the output gradient has shape [3] but the output has shape [2, 2]"
    );
}

/// A chain as deep as a very deep network is built, differentiated and dropped without
/// overflowing the stack.
#[test]
fn deep_chains_do_not_recurse() {
    let w = Var::parameter(Tensor::new([1], vec![1.0]).unwrap());
    let mut y = w.clone();
    for _ in 0..100_000 {
        y = mul_scalar(&y, 1.0);
    }
    sum_all(&y).backward().unwrap();
    assert_eq!(w.grad().unwrap().data(), &[1.0]);
    drop(y);
}

#[test]
fn losses_against_finite_differences() {
    let targets = [2usize, 0, 3];
    let logits = [seeded(&[3, 4], 11).mul_scalar(3.0)];
    for smoothing in [0.0, 0.1] {
        check_gradients(|v| cross_entropy(&v[0], &targets, smoothing), &logits, GradCheck::default())
            .unwrap();
    }
    check_gradients(|v| nll_loss(&log_softmax(&v[0], 1)?, &targets), &logits, GradCheck::default()).unwrap();
    check_gradients(|v| log_softmax(&v[0], 0), &logits, GradCheck::default()).unwrap();
    let pair = [seeded(&[2, 3], 12), seeded(&[2, 3], 13)];
    check_gradients(|v| mse_loss(&v[0], &v[1]), &pair, GradCheck::default()).unwrap();
}

/// The values PyTorch gives for the same inputs:
/// `F.cross_entropy(torch.tensor([[1., 2., 3.], [1., 1., 1.]]), torch.tensor([2, 0]))` = 0.753109
/// (mean of 0.407606 and ln 3 = 1.098612), and with `label_smoothing=0.3`, 0.903109.
#[test]
fn cross_entropy_matches_pytorch() {
    let logits = Var::constant(Tensor::new([2, 3], vec![1.0, 2.0, 3.0, 1.0, 1.0, 1.0]).unwrap());
    let loss = cross_entropy(&logits, &[2, 0], 0.0).unwrap().value().item().unwrap();
    assert!((loss - 0.753_109).abs() < 1e-5, "{loss}");
    let smoothed = cross_entropy(&logits, &[2, 0], 0.3).unwrap().value().item().unwrap();
    assert!((smoothed - 0.903_109).abs() < 1e-5, "{smoothed}");
}

#[test]
fn cross_entropy_is_stable_for_huge_logits() {
    let logits = Var::constant(Tensor::new([1, 3], vec![1000.0, 0.0, -1000.0]).unwrap());
    let loss = cross_entropy(&logits, &[0], 0.0).unwrap().value().item().unwrap();
    assert!(loss.is_finite() && loss.abs() < 1e-6, "{loss}");
}

#[test]
fn loss_errors_name_the_problem() {
    let logits = Var::constant(Tensor::zeros([2, 3]).unwrap());
    assert_eq!(
        cross_entropy(&logits, &[0, 3], 0.0).unwrap_err().to_string(),
        "cross_entropy: target 3 of row 1 is not one of the 3 classes"
    );
    assert_eq!(
        cross_entropy(&logits, &[0], 0.0).unwrap_err().to_string(),
        "cross_entropy: 1 targets for 2 rows of scores (shape [2, 3])"
    );
    assert_eq!(
        cross_entropy(&logits, &[0, 1], 1.0).unwrap_err().to_string(),
        "cross_entropy: invalid argument: label smoothing must be in [0, 1), got 1"
    );
    let flat = Var::constant(Tensor::zeros([6]).unwrap());
    assert!(
        nll_loss(&flat, &[0]).unwrap_err().to_string().contains("expected a 2-d tensor laid out as [N, C]")
    );
    let other = Var::constant(Tensor::zeros([3, 2]).unwrap());
    assert_eq!(
        mse_loss(&logits, &other).unwrap_err().to_string(),
        "mse_loss: prediction [2, 3] and target [3, 2] must have the same shape"
    );
}

#[test]
fn layout_operations() {
    let x = [seeded(&[2, 3, 4], 21)];
    check_gradients(|v| flatten(&v[0], 1, 2), &x, GradCheck::default()).unwrap();
    check_gradients(|v| permute(&v[0], &[2, 0, 1]), &x, GradCheck::default()).unwrap();
    check_gradients(|v| permute(&v[0], &[-1, 1, 0]), &x, GradCheck::default()).unwrap();
    check_gradients(|v| pad(&v[0], &[(0, 1), (2, 0), (1, 1)], 0.5), &x, GradCheck::default()).unwrap();
    check_gradients(|v| slice(&v[0], 2, 1, 4, 2), &x, GradCheck::default()).unwrap();
    check_gradients(|v| slice(&v[0], -2, 0, 2, 1), &x, GradCheck::default()).unwrap();
    let parts = [seeded(&[2, 1, 4], 22), seeded(&[2, 3, 4], 23)];
    check_gradients(|v| concat(v, 1), &parts, GradCheck::default()).unwrap();
}

mod cnn_ops {
    use super::*;
    use crate::ops::conv::{ConvSpec, Padding};
    use crate::ops::pool::PoolSpec;

    /// A random permutation of distinct values 0.1 apart: no ties, and ±ε cannot change a max.
    fn tie_free(shape: &[usize], seed: u64) -> Tensor {
        let n: usize = shape.iter().product();
        let mut order: Vec<usize> = (0..n).collect();
        let mut state = seed | 1;
        for i in (1..n).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            order.swap(i, (state % (i as u64 + 1)) as usize);
        }
        Tensor::new(shape.to_vec(), order.iter().map(|&v| v as f32 * 0.1 - n as f32 * 0.05).collect())
            .unwrap()
    }

    #[test]
    fn convolution_gradients() {
        let inputs = [seeded(&[2, 4, 6, 5], 31), seeded(&[6, 2, 3, 2], 32), seeded(&[6], 33)];
        let spec = ConvSpec::<2>::new().stride([2, 1]).padding(Padding::asymmetric([1, 0], [0, 1])).groups(2);
        check_gradients(|v| conv(&v[0], &v[1], Some(&v[2]), &spec), &inputs, GradCheck::default()).unwrap();
        let spec1 = ConvSpec::<1>::new().dilation(2).padding(2);
        let inputs1 = [seeded(&[1, 3, 9], 34), seeded(&[2, 3, 3], 35)];
        check_gradients(|v| conv(&v[0], &v[1], None, &spec1), &inputs1, GradCheck::default()).unwrap();
    }

    #[test]
    fn pooling_and_lrn_gradients() {
        let x = [tie_free(&[2, 3, 7, 6], 41)];
        let spec = PoolSpec::<2>::new(3).stride(2).padding(1).ceil_mode(true);
        check_gradients(|v| max_pool(&v[0], &spec), &x, GradCheck::default()).unwrap();
        check_gradients(|v| avg_pool(&v[0], &spec.count_include_pad(false)), &x, GradCheck::default())
            .unwrap();
        check_gradients(|v| adaptive_avg_pool(&v[0], [3, 4]), &x, GradCheck::default()).unwrap();
        check_gradients(|v| global_avg_pool(&v[0]), &x, GradCheck::default()).unwrap();
        let scaled = [seeded(&[2, 6, 3, 3], 42).mul_scalar(4.0)];
        check_gradients(|v| local_response_norm(&v[0], 5, 0.1, 0.75, 2.0), &scaled, GradCheck::default())
            .unwrap();
    }

    /// LeNet-5's forward pass, differentiated end to end: the gradient of every parameter agrees
    /// with finite differences.
    #[test]
    fn a_small_lenet_end_to_end() {
        let inputs = [
            seeded(&[2, 1, 12, 12], 51),
            seeded(&[3, 1, 5, 5], 52).mul_scalar(0.5),
            seeded(&[3], 53),
            seeded(&[12, 4], 54).mul_scalar(0.5),
        ];
        let net = |v: &[Var]| -> Result<Var> {
            let h = tanh(&conv(&v[0], &v[1], Some(&v[2]), &ConvSpec::<2>::new())?); // [2, 3, 8, 8]
            let h = avg_pool(&h, &PoolSpec::<2>::new(4))?; // [2, 3, 2, 2]
            let logits = matmul(&flatten(&h, 1, -1)?, &v[3])?; // [2, 4]
            cross_entropy(&logits, &[1, 3], 0.0)
        };
        check_gradients(net, &inputs, GradCheck::default()).unwrap();
    }
}

/// Inside `no_grad` nothing is recorded: the result of an operation on a parameter is a constant
/// and asking for its gradient is an error; outside, recording resumes, also after a nested scope.
#[test]
fn no_grad_records_nothing_and_restores_recording() {
    let w = Var::parameter(Tensor::new([2], vec![1.0, 2.0]).unwrap());
    let y = no_grad(|| {
        let inner = no_grad(|| mul(&w, &w).unwrap());
        assert!(!inner.requires_grad());
        assert!(!is_recording());
        mul(&w, &w).unwrap()
    });
    assert!(!y.requires_grad());
    assert!(is_recording());
    assert!(sum_all(&y).backward().is_err());
    let z = sum_all(&mul(&w, &w).unwrap());
    z.backward().unwrap();
    assert_eq!(w.grad().unwrap().data(), &[2.0, 4.0]);
}

/// The fused residual end against the two operations it replaces: the same values and
/// gradients, bit for bit, NaN and exact zeros of the sum included; finite differences away
/// from the kink; no broadcasting.
#[test]
fn add_relu_is_relu_of_add() {
    let mut a = seeded(&[2, 3, 4, 5], 31);
    let b = seeded(&[2, 3, 4, 5], 32);
    a.data_mut()[7] = f32::NAN;
    a.data_mut()[8] = -b.data()[8];
    let upstream = seeded(&[2, 3, 4, 5], 33);
    let run = |fused: bool| {
        let (u, v) = (Var::parameter(a.clone()), Var::parameter(b.clone()));
        let y = if fused { add_relu(&u, &v).unwrap() } else { relu(&add(&u, &v).unwrap()) };
        y.backward_with(upstream.clone()).unwrap();
        let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
        [bits(y.value()), bits(&u.grad().unwrap()), bits(&v.grad().unwrap())]
    };
    assert_eq!(run(true), run(false));

    let inputs = [away_from_zero(&[2, 3, 4], 34), away_from_zero(&[2, 3, 4], 35).map(|v| v * 0.01)];
    check_gradients(|v| add_relu(&v[0], &v[1]), &inputs, GradCheck::default()).unwrap();

    let err = add_relu(&Var::constant(seeded(&[2, 3], 1)), &Var::constant(seeded(&[3], 2))).unwrap_err();
    assert!(err.to_string().contains("shapes [2, 3] and [3]; add_relu does not broadcast"), "{err}");
}
