//! The backward kernels of pooling and local response norm against PyTorch: every case of
//! `tests/fixtures/pool_grad.safetensors` (written by `tools/gen_fixtures.py`'s `pool_grad`
//! family, so CI needs no Python) through both the fast path and the reference.
//!
//! Shapes as in `ops::pool`: `x [N, C, *I]`, `dy [N, C, *O]`, `dx [N, C, *I]`; LRN keeps the
//! shape. Each case stores `input`, a random `grad_output` and `grad_input`, PyTorch's
//! `torch.autograd.grad(call, x, grad_output)`; its fields (kernel, stride, padding, dilation,
//! ceil_mode, count_include_pad, divisor_override, output_size, LRN's size/alpha/beta/k) become
//! stride's arguments. Max pooling runs its forward first for the indices, as autograd will.
//!
//! A gradient passes when every element satisfies `|got − expected| ≤ 1e-4 + 1e-4·|expected|`:
//! looser than the forward's, since a gradient sums over every window an input falls in.

mod common;

use common::{Case, Fixture};
use stride_tensor::ops::lrn::{local_response_norm_backward, local_response_norm_backward_reference};
use stride_tensor::ops::pool::{self};
use stride_tensor::{Result, Tensor};

const ABS_TOL: f32 = 1e-4;
const REL_TOL: f32 = 1e-4;

fn run_n<const N: usize>(
    x: &Tensor,
    dy: &Tensor,
    case: &Case,
    path: common::Path,
) -> std::result::Result<Tensor, String> {
    use pool::reference as r;
    let fast = path == common::Path::Fast;
    let op = case.op.as_str();
    let result: Result<Tensor> = if op.starts_with("max_pool") {
        let spec = common::pool_spec::<N>(case)?;
        if fast {
            pool::max_pool_with_indices(x, &spec)
                .and_then(|(_, at)| pool::max_pool_backward(x, &at, dy, &spec))
        } else {
            r::max_pool_with_indices(x, &spec).and_then(|(_, at)| r::max_pool_backward(x, &at, dy, &spec))
        }
    } else if op.starts_with("avg_pool") {
        let spec = common::pool_spec::<N>(case)?;
        if fast {
            pool::avg_pool_backward(x.dims(), dy, &spec)
        } else {
            r::avg_pool_backward(x.dims(), dy, &spec)
        }
    } else if case.flag("global") {
        if fast {
            pool::global_avg_pool_backward(x.dims(), dy)
        } else {
            r::global_avg_pool_backward(x.dims(), dy)
        }
    } else if op.starts_with("adaptive_avg_pool") {
        if fast {
            pool::adaptive_avg_pool_backward::<N>(x.dims(), dy)
        } else {
            r::adaptive_avg_pool_backward::<N>(x.dims(), dy)
        }
    } else if op.starts_with("adaptive_max_pool") {
        let size = case.usizes::<N>("output_size");
        if fast {
            pool::adaptive_max_pool_with_indices(x, size)
                .and_then(|(_, at)| pool::adaptive_max_pool_backward::<N>(x.dims(), &at, dy))
        } else {
            r::adaptive_max_pool_with_indices(x, size)
                .and_then(|(_, at)| r::adaptive_max_pool_backward::<N>(x.dims(), &at, dy))
        }
    } else {
        return Err(format!("op {op} is not a pooling op"));
    };
    result.map_err(|e| format!("stride refused it: {e}"))
}

fn run(fixture: &Fixture, case: &Case, path: common::Path) -> std::result::Result<Tensor, String> {
    let (x, dy) = (fixture.tensor(case, "input"), fixture.tensor(case, "grad_output"));
    if case.op == "local_response_norm" {
        let (size, alpha, beta, k) = (case.usize("size"), case.f32("alpha"), case.f32("beta"), case.f32("k"));
        let backward = if path == common::Path::Fast {
            local_response_norm_backward
        } else {
            local_response_norm_backward_reference
        };
        return backward(x, dy, size, alpha, beta, k).map_err(|e| format!("stride refused it: {e}"));
    }
    match case.spatial_rank() {
        1 => run_n::<1>(x, dy, case, path),
        2 => run_n::<2>(x, dy, case, path),
        _ => run_n::<3>(x, dy, case, path),
    }
}

/// Whether `got` is within the gradient tolerance of `expected`.
fn compare(got: &Tensor, expected: &Tensor) -> std::result::Result<(), String> {
    common::compare_within(got, expected, ABS_TOL, REL_TOL)
}

/// Runs every case `select` picks through both paths; panics listing all failures.
fn check_all(select: impl Fn(&Case) -> bool) {
    let fixture = Fixture::load("pool_grad");
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in fixture.cases.iter().filter(|c| select(c)) {
        checked += 1;
        for path in [common::Path::Fast, common::Path::Reference] {
            let outcome =
                run(&fixture, case, path).and_then(|got| compare(&got, fixture.tensor(case, "grad_input")));
            if let Err(why) = outcome {
                failures.push(format!("{} ({path:?}) `{}`: {why}", case.name, case.call));
            }
        }
    }
    assert!(checked > 0, "{}: no case was selected", fixture.path.display());
    assert!(
        failures.is_empty(),
        "{} failures over {checked} cases from {} (tolerance {ABS_TOL:e} + {REL_TOL:e}·|expected|):\n{}",
        failures.len(),
        fixture.path.display(),
        failures.join("\n")
    );
}

fn is_op(prefix: &'static str) -> impl Fn(&Case) -> bool {
    move |case| case.op.starts_with(prefix)
}

#[test]
fn pool_grad_fixture_is_complete() {
    let fixture = Fixture::load("pool_grad");
    assert_eq!(fixture.metadata.get("generator").map(String::as_str), Some(common::GENERATOR));
    for prefix in ["max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool", "local_response_norm"] {
        assert!(fixture.cases.iter().any(is_op(prefix)), "no {prefix} case");
    }
    assert!(fixture.cases.iter().any(|c| c.flag("global")), "no global average pooling case");
    for case in &fixture.cases {
        for role in ["input", "grad_output", "grad_input"] {
            fixture.tensor(case, role);
        }
        assert_eq!(
            fixture.tensor(case, "input").dims(),
            fixture.tensor(case, "grad_input").dims(),
            "{}",
            case.name
        );
    }
}

#[test]
fn max_pool_backward_matches_pytorch() {
    check_all(is_op("max_pool"));
}

#[test]
fn avg_pool_backward_matches_pytorch() {
    check_all(is_op("avg_pool"));
}

#[test]
fn adaptive_pool_backward_matches_pytorch() {
    check_all(|case| case.op.starts_with("adaptive_") && !case.flag("global"));
}

#[test]
fn global_avg_pool_backward_matches_pytorch() {
    check_all(|case| case.flag("global"));
}

#[test]
fn local_response_norm_backward_matches_pytorch() {
    check_all(is_op("local_response_norm"));
}
