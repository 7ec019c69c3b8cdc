//! Convolution gradients against PyTorch: every case of `tests/fixtures/conv_grad.safetensors`
//! (written by `tools/gen_fixtures.py`) through both the fast and the reference backward.
//!
//! Shapes as in `ops::conv`: `x [N, C_in, *I]`, `w [C_out, C_in/G, *F]`, `b [C_out]`,
//! `dy [N, C_out, *O]`. Each case records the forward `call` and the `backward` expression
//! (`torch.autograd.grad(y, (x, w, b), dy)`) that produced `grad_input`, `grad_weight` and, when
//! the call has a bias, `grad_bias`.
//!
//! A gradient passes when every element satisfies `|got − expected| ≤ 1e-4 + 1e-4·|expected|`:
//! wider than the forward's 1e-5 absolute, since `dw` and `db` sum over every image and position.

mod common;

use common::{Case, Fixture, GENERATOR};
use serde_json::Value;
use stride_tensor::ops::conv::{ConvGrads, ConvSpec, conv_backward, conv_backward_reference};
use stride_tensor::{Result, Tensor};

const ABS_TOL: f32 = 1e-4;
const REL_TOL: f32 = 1e-4;
const FAMILY: &str = "conv_grad";

type BackwardFn<const N: usize> = fn(&Tensor, &Tensor, &Tensor, &ConvSpec<N>) -> Result<ConvGrads>;

/// Whether `got` is within the gradient tolerance of `expected`.
fn compare(got: &Tensor, expected: &Tensor) -> std::result::Result<(), String> {
    common::compare_within(got, expected, ABS_TOL, REL_TOL)
}

fn check_n<const N: usize>(
    fixture: &Fixture,
    case: &Case,
    path: common::Path,
) -> std::result::Result<(), String> {
    let (x, w) = (fixture.tensor(case, "input"), fixture.tensor(case, "weight"));
    let dy = fixture.tensor(case, "grad_output");
    let bias = fixture.optional(case, "bias");
    // The recorded fields must describe the stored tensors, or the test would check something
    // other than the call it names.
    if bias.is_some() != case.flag("bias") || w.dims()[2..] != case.usizes::<N>("kernel") {
        return Err(format!(
            "fields disagree with the tensors: weight {}, bias {:?}",
            w.shape(),
            bias.is_some()
        ));
    }
    let backward: BackwardFn<N> = match path {
        common::Path::Fast => conv_backward::<N>,
        common::Path::Reference => conv_backward_reference::<N>,
    };
    let grads =
        backward(x, w, dy, &common::conv_spec::<N>(case)).map_err(|e| format!("stride refused it: {e}"))?;
    let mut checks = vec![("grad_input", &grads.input), ("grad_weight", &grads.weight)];
    // Without a bias in the call PyTorch has no bias gradient to compare with.
    if bias.is_some() {
        checks.push(("grad_bias", &grads.bias));
    }
    let failures: Vec<String> = checks
        .into_iter()
        .filter_map(|(role, got)| {
            compare(got, fixture.tensor(case, role)).err().map(|why| format!("{role}: {why}"))
        })
        .collect();
    if failures.is_empty() { Ok(()) } else { Err(failures.join("; ")) }
}

fn check(fixture: &Fixture, case: &Case, path: common::Path) -> std::result::Result<(), String> {
    match case.spatial_rank() {
        1 => check_n::<1>(fixture, case, path),
        2 => check_n::<2>(fixture, case, path),
        _ => check_n::<3>(fixture, case, path),
    }
}

fn check_all(path: common::Path) {
    let fixture = Fixture::load(FAMILY);
    let failures: Vec<String> = fixture
        .cases
        .iter()
        .filter_map(|case| {
            check(&fixture, case, path).err().map(|why| format!("{} `{}`: {why}", case.name, case.call))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases from {} disagree with PyTorch (tolerance {ABS_TOL:e} + {REL_TOL:e}·|expected|):\n{}",
        failures.len(),
        fixture.cases.len(),
        fixture.path.display(),
        failures.join("\n")
    );
}

#[test]
fn conv_grad_fixture_is_complete() {
    let fixture = Fixture::load(FAMILY);
    let file = fixture.path.display();
    assert_eq!(fixture.metadata.get("generator").map(String::as_str), Some(GENERATOR), "{file}");
    assert!(fixture.metadata.get("torch").is_some_and(|v| !v.is_empty()), "{file}: no torch version");
    for case in &fixture.cases {
        assert!(
            ["conv1d", "conv2d", "conv3d"].contains(&case.op.as_str()),
            "{file}: {} op {}",
            case.name,
            case.op
        );
        assert_eq!(
            case.get("backward").and_then(Value::as_str),
            Some("torch.autograd.grad(y, (x, w, b), dy)"),
            "{file}: {}",
            case.name
        );
        for role in ["input", "weight", "grad_output", "grad_input", "grad_weight"] {
            fixture.tensor(case, role);
        }
        assert_eq!(fixture.optional(case, "grad_bias").is_some(), case.flag("bias"), "{file}: {}", case.name);
    }
    for op in ["conv1d", "conv2d", "conv3d"] {
        assert!(fixture.cases.iter().any(|c| c.op == op), "{file}: no {op} case");
    }
    let any = |f: &dyn Fn(&Case) -> bool| fixture.cases.iter().any(f);
    assert!(any(&|c| c.flag("flip")), "{file}: no true-convolution case");
    assert!(any(&|c| c.usize("groups") > 1), "{file}: no grouped case");
    assert!(any(&|c| !c.flag("bias")), "{file}: no case without bias");
    assert!(any(&|c| c.get("padding_begin") != c.get("padding_end")), "{file}: no asymmetric padding");
    assert!(any(&|c| fixture.tensor(c, "input").dims()[0] > 1), "{file}: no batch > 1");
}

#[test]
fn conv_fast_backward_matches_pytorch() {
    check_all(common::Path::Fast);
}

#[test]
fn conv_reference_backward_matches_pytorch() {
    check_all(common::Path::Reference);
}

/// The comparison must be able to fail: a gradient moved just past the tolerance is reported.
#[test]
fn a_perturbed_gradient_is_caught() {
    let fixture = Fixture::load(FAMILY);
    let case = &fixture.cases[0];
    let expected = fixture.tensor(case, "grad_weight");
    let mut perturbed = expected.clone();
    let e = perturbed.data()[0];
    perturbed.data_mut()[0] = e + 2.0 * (ABS_TOL + REL_TOL * e.abs());
    assert_eq!(compare(expected, expected), Ok(()));
    let err = compare(&perturbed, expected).unwrap_err();
    assert!(
        err.starts_with(&format!(
            "1 of {} elements differ; worst at {:?}",
            expected.numel(),
            vec![0; expected.rank()]
        )),
        "{err}"
    );
}
