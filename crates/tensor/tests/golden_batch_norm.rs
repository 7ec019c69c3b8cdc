//! Batch normalisation against PyTorch: every case of `tests/fixtures/batch_norm.safetensors`
//! (written by `tools/gen_fixtures.py`'s `batch_norm` family, so CI needs no Python) through the
//! fast kernels, the reference kernels and autograd.
//!
//! Shapes: `x [N, C, *S]` with 0 to 3 spatial axes, everything else `[C]`. Each case records
//! `F.batch_norm(x, rm, rv, w, b, training=…, momentum=0.1, eps=1e-05)` and stores `input`,
//! `weight` / `bias` (affine cases), the running statistics before the call, `output`, in training
//! the updated `running_mean_out` / `running_var_out`, a random `grad_output` and PyTorch's
//! `grad_input`, `grad_weight`, `grad_bias`.
//!
//! A value passes when `|got − expected| ≤ 1e-4 + 1e-4·|expected|`: the gradients sum over every
//! value of a channel.

mod common;

use common::{Case, Fixture};
use stride_tensor::Tensor;
use stride_tensor::autograd::{self, Var};
use stride_tensor::ops::batch_norm as bn;

const ABS_TOL: f32 = 1e-4;
const REL_TOL: f32 = 1e-4;

/// Which of stride's implementations a check runs.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Path {
    Fast,
    Reference,
    Autograd,
}

/// What stride computes for a case, by role name.
type Results = Vec<(&'static str, Tensor)>;

fn kernels(fixture: &Fixture, case: &Case, path: Path) -> Result<Results, String> {
    let refuse = |e: stride_tensor::Error| format!("stride refused it: {e}");
    let x = fixture.tensor(case, "input");
    let dy = fixture.tensor(case, "grad_output");
    let (w, b) = (fixture.optional(case, "weight"), fixture.optional(case, "bias"));
    let (mut rm, mut rv) =
        (fixture.tensor(case, "running_mean").clone(), fixture.tensor(case, "running_var").clone());
    let (eps, momentum) = (case.f32("eps"), case.f32("momentum"));
    let reference = path == Path::Reference;
    let mut out: Results = Vec::new();
    let grads = if case.flag("training") {
        let train = if reference { bn::batch_norm_train_reference } else { bn::batch_norm_train };
        let fwd = train(x, w, b, eps).map_err(refuse)?;
        bn::update_running_stats(&mut rm, &mut rv, &fwd.mean, &fwd.unbiased_var, momentum).map_err(refuse)?;
        out.extend([("output", fwd.output), ("running_mean_out", rm), ("running_var_out", rv)]);
        let backward = if reference { bn::batch_norm_backward_reference } else { bn::batch_norm_backward };
        backward(x, dy, w, &fwd.mean, &fwd.inv_std, true).map_err(refuse)?
    } else {
        let eval = if reference { bn::batch_norm_eval_reference } else { bn::batch_norm_eval };
        out.push(("output", eval(x, w, b, &rm, &rv, eps).map_err(refuse)?));
        let inv_std = rv.map(|v| 1.0 / (v + eps).sqrt());
        let backward = if reference { bn::batch_norm_backward_reference } else { bn::batch_norm_backward };
        backward(x, dy, w, &rm, &inv_std, false).map_err(refuse)?
    };
    out.push(("grad_input", grads.input));
    if w.is_some() {
        out.extend([("grad_weight", grads.weight), ("grad_bias", grads.bias)]);
    }
    Ok(out)
}

fn through_autograd(fixture: &Fixture, case: &Case) -> Result<Results, String> {
    let refuse = |e: stride_tensor::Error| format!("stride refused it: {e}");
    let x = Var::parameter(fixture.tensor(case, "input").clone());
    let w = fixture.optional(case, "weight").cloned().map(Var::parameter);
    let b = fixture.optional(case, "bias").cloned().map(Var::parameter);
    let (mut rm, mut rv) =
        (fixture.tensor(case, "running_mean").clone(), fixture.tensor(case, "running_var").clone());
    let eps = case.f32("eps");
    let mut out: Results = Vec::new();
    let y = if case.flag("training") {
        let (y, stats) = autograd::batch_norm_train(&x, w.as_ref(), b.as_ref(), eps).map_err(refuse)?;
        stats.update_running(&mut rm, &mut rv, case.f32("momentum")).map_err(refuse)?;
        out.extend([("running_mean_out", rm), ("running_var_out", rv)]);
        y
    } else {
        autograd::batch_norm_eval(&x, w.as_ref(), b.as_ref(), &rm, &rv, eps).map_err(refuse)?
    };
    y.backward_with(fixture.tensor(case, "grad_output").clone()).map_err(refuse)?;
    out.push(("output", y.value().clone()));
    let missing = |what: &str| format!("autograd left no gradient for {what}");
    out.push(("grad_input", x.grad().ok_or_else(|| missing("x"))?));
    if let (Some(w), Some(b)) = (&w, &b) {
        out.push(("grad_weight", w.grad().ok_or_else(|| missing("the weight"))?));
        out.push(("grad_bias", b.grad().ok_or_else(|| missing("the bias"))?));
    }
    Ok(out)
}

/// Whether `got` is within this file's tolerance of `expected`.
fn compare(got: &Tensor, expected: &Tensor) -> Result<(), String> {
    common::compare_within(got, expected, ABS_TOL, REL_TOL)
}

/// Runs every case `select` picks through every path; panics listing all failures.
fn check_all(select: impl Fn(&Case) -> bool) {
    let fixture = Fixture::load("batch_norm");
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in fixture.cases.iter().filter(|c| select(c)) {
        checked += 1;
        for path in [Path::Fast, Path::Reference, Path::Autograd] {
            let results = if path == Path::Autograd {
                through_autograd(&fixture, case)
            } else {
                kernels(&fixture, case, path)
            };
            let outcome = results.and_then(|results| {
                results.iter().try_for_each(|(role, got)| {
                    compare(got, fixture.tensor(case, role)).map_err(|why| format!("{role}: {why}"))
                })
            });
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

#[test]
fn batch_norm_fixture_is_complete() {
    let fixture = Fixture::load("batch_norm");
    assert_eq!(fixture.metadata.get("generator").map(String::as_str), Some(common::GENERATOR));
    // Training on every rank BatchNorm1d/2d/3d accepts; evaluation on [N, C], 4-d and 5-d.
    let expected = [(true, 2), (true, 3), (true, 4), (true, 5), (false, 2), (false, 4), (false, 5)];
    for (training, rank) in expected {
        let covered = fixture
            .cases
            .iter()
            .any(|c| c.flag("training") == training && fixture.tensor(c, "input").rank() == rank);
        assert!(covered, "no case of rank {rank} with training {training}");
    }
    for (training, affine) in [(true, true), (true, false), (false, true), (false, false)] {
        let covered =
            fixture.cases.iter().any(|c| c.flag("training") == training && c.flag("affine") == affine);
        assert!(covered, "no case with training {training} and affine {affine}");
    }
    for case in &fixture.cases {
        assert_eq!(case.op, "batch_norm");
        let mut roles = vec!["input", "running_mean", "running_var", "output", "grad_output", "grad_input"];
        if case.flag("training") {
            roles.extend(["running_mean_out", "running_var_out"]);
        }
        if case.flag("affine") {
            roles.extend(["weight", "bias", "grad_weight", "grad_bias"]);
        }
        for role in roles {
            fixture.tensor(case, role);
        }
    }
}

#[test]
fn batch_norm_train_matches_pytorch() {
    check_all(|case| case.flag("training"));
}

#[test]
fn batch_norm_eval_matches_pytorch() {
    check_all(|case| !case.flag("training"));
}
