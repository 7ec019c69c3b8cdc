//! Convolution against PyTorch: every case of `tests/fixtures/conv.safetensors` (written by
//! `tools/gen_fixtures.py`, so CI needs no Python) through both the fast path and the reference.
//!
//! Shapes as in `ops::conv`: `x [N, C_in, *I]`, `w [C_out, C_in/G, *F]`, `b [C_out]`,
//! `y [N, C_out, *O]`. Each case records the `F.conv{1,2,3}d` call that produced its output; the
//! fields beside it (stride, padding, dilation, groups, flip) become a `ConvSpec`.

mod common;

use common::{Case, Fixture, compare};
use stride_tensor::ops::conv::{ConvSpec, conv, conv_reference};
use stride_tensor::{Result, Tensor};

type ConvFn<const N: usize> = fn(&Tensor, &Tensor, Option<&Tensor>, &ConvSpec<N>) -> Result<Tensor>;

fn run_n<const N: usize>(fixture: &Fixture, case: &Case, path: common::Path) -> Result<Tensor, String> {
    let (x, w) = (fixture.tensor(case, "input"), fixture.tensor(case, "weight"));
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
    let f: ConvFn<N> = match path {
        common::Path::Fast => conv::<N>,
        common::Path::Reference => conv_reference::<N>,
    };
    f(x, w, bias, &common::conv_spec::<N>(case)).map_err(|e| format!("stride refused it: {e}"))
}

fn run(fixture: &Fixture, case: &Case, path: common::Path) -> Result<Tensor, String> {
    match case.spatial_rank() {
        1 => run_n::<1>(fixture, case, path),
        2 => run_n::<2>(fixture, case, path),
        _ => run_n::<3>(fixture, case, path),
    }
}

#[test]
fn conv_fixture_is_complete() {
    let fixture = Fixture::load("conv");
    fixture.check_consistency(&["conv1d", "conv2d", "conv3d"]);
    for op in ["conv1d", "conv2d", "conv3d"] {
        assert!(fixture.cases.iter().any(|c| c.op == op), "no {op} case");
    }
    assert!(fixture.cases.iter().any(|c| c.flag("flip")), "no true-convolution case");
}

#[test]
fn conv_fast_matches_pytorch() {
    let fixture = Fixture::load("conv");
    fixture.check_all(|_| true, |fx, case| run(fx, case, common::Path::Fast));
}

#[test]
fn conv_reference_matches_pytorch() {
    let fixture = Fixture::load("conv");
    fixture.check_all(|_| true, |fx, case| run(fx, case, common::Path::Reference));
}

/// The comparison must be able to fail: one element moved just past the tolerance is reported
/// with its position, and a wrong shape is reported before any value.
#[test]
fn a_perturbed_expectation_is_caught() {
    let fixture = Fixture::load("conv");
    let case = &fixture.cases[0];
    let expected = fixture.tensor(case, "output");
    let got = run(&fixture, case, common::Path::Fast).unwrap();
    assert_eq!(compare(&got, expected), Ok(()));

    let mut perturbed = expected.clone();
    let last = perturbed.numel() - 1;
    let e = perturbed.data()[last];
    perturbed.data_mut()[last] = e + 2.0 * (common::ABS_TOL + common::REL_TOL * e.abs());
    let err = compare(&got, &perturbed).unwrap_err();
    let position: Vec<usize> = expected.dims().iter().map(|d| d - 1).collect();
    assert!(
        err.starts_with(&format!("1 of {} elements differ; worst at {position:?}", got.numel())),
        "{err}"
    );

    let wrong_shape = Tensor::zeros([1]).unwrap();
    assert!(compare(&wrong_shape, expected).unwrap_err().starts_with("shape [1] but PyTorch gives"));
}
