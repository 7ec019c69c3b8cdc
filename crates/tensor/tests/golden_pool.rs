//! Pooling and local response norm against PyTorch: every case of
//! `tests/fixtures/pool.safetensors` (written by `tools/gen_fixtures.py`, so CI needs no Python)
//! through both the fast path and the reference.
//!
//! Shapes as in `ops::pool`: `x [N, C, *I] -> y [N, C, *O]`; LRN keeps the shape. Each case
//! records the `F.*` call that produced its output; the fields beside it (kernel, stride,
//! padding, dilation, ceil_mode, count_include_pad, divisor_override, output_size, LRN's
//! size/alpha/beta/k) become stride's arguments. Max-pooling inputs are distinct values, so no
//! tie decides a result.

mod common;

use common::{Case, Fixture};
use stride_tensor::ops::lrn::{local_response_norm, local_response_norm_reference};
use stride_tensor::ops::pool::{
    self, adaptive_avg_pool, adaptive_max_pool, avg_pool, global_avg_pool, max_pool,
};
use stride_tensor::{Result, Tensor};

const OPS: &[&str] = &[
    "max_pool1d",
    "max_pool2d",
    "max_pool3d",
    "avg_pool1d",
    "avg_pool2d",
    "avg_pool3d",
    "adaptive_avg_pool1d",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool3d",
    "adaptive_max_pool1d",
    "adaptive_max_pool2d",
    "adaptive_max_pool3d",
    "local_response_norm",
];

fn run_n<const N: usize>(x: &Tensor, case: &Case, path: common::Path) -> std::result::Result<Tensor, String> {
    let fast = path == common::Path::Fast;
    let op = case.op.as_str();
    let result: Result<Tensor> = if op.starts_with("max_pool") {
        let spec = common::pool_spec::<N>(case)?;
        if fast { max_pool(x, &spec) } else { pool::reference::max_pool(x, &spec) }
    } else if op.starts_with("avg_pool") {
        let spec = common::pool_spec::<N>(case)?;
        if fast { avg_pool(x, &spec) } else { pool::reference::avg_pool(x, &spec) }
    } else if op.starts_with("adaptive_avg_pool") {
        let size = case.usizes::<N>("output_size");
        if fast { adaptive_avg_pool(x, size) } else { pool::reference::adaptive_avg_pool(x, size) }
    } else if op.starts_with("adaptive_max_pool") {
        let size = case.usizes::<N>("output_size");
        if fast { adaptive_max_pool(x, size) } else { pool::reference::adaptive_max_pool(x, size) }
    } else {
        return Err(format!("op {op} is not a pooling op"));
    };
    result.map_err(|e| format!("stride refused it: {e}"))
}

fn run(fixture: &Fixture, case: &Case, path: common::Path) -> std::result::Result<Tensor, String> {
    let x = fixture.tensor(case, "input");
    if case.op == "local_response_norm" {
        let (size, alpha, beta, k) = (case.usize("size"), case.f32("alpha"), case.f32("beta"), case.f32("k"));
        let lrn =
            if path == common::Path::Fast { local_response_norm } else { local_response_norm_reference };
        return lrn(x, size, alpha, beta, k).map_err(|e| format!("stride refused it: {e}"));
    }
    match case.spatial_rank() {
        1 => run_n::<1>(x, case, path),
        2 => run_n::<2>(x, case, path),
        _ => run_n::<3>(x, case, path),
    }
}

fn is_op(prefix: &'static str) -> impl Fn(&Case) -> bool {
    move |case| case.op.starts_with(prefix)
}

#[test]
fn pool_fixture_is_complete() {
    let fixture = Fixture::load("pool");
    fixture.check_consistency(OPS);
    for prefix in ["max_pool", "avg_pool", "adaptive_avg_pool", "adaptive_max_pool", "local_response_norm"] {
        assert!(fixture.cases.iter().any(is_op(prefix)), "no {prefix} case");
    }
    assert!(fixture.cases.iter().any(|c| c.flag("global")), "no global average pooling case");
}

#[test]
fn max_pool_matches_pytorch() {
    let fixture = Fixture::load("pool");
    fixture.check_all(is_op("max_pool"), |fx, case| run(fx, case, common::Path::Fast));
    fixture.check_all(is_op("max_pool"), |fx, case| run(fx, case, common::Path::Reference));
}

#[test]
fn avg_pool_matches_pytorch() {
    let fixture = Fixture::load("pool");
    fixture.check_all(is_op("avg_pool"), |fx, case| run(fx, case, common::Path::Fast));
    fixture.check_all(is_op("avg_pool"), |fx, case| run(fx, case, common::Path::Reference));
}

#[test]
fn adaptive_pool_matches_pytorch() {
    let fixture = Fixture::load("pool");
    fixture.check_all(is_op("adaptive_"), |fx, case| run(fx, case, common::Path::Fast));
    fixture.check_all(is_op("adaptive_"), |fx, case| run(fx, case, common::Path::Reference));
}

/// `global_avg_pool` is `adaptive_avg_pool` to size 1 with the rank kept, so it must give the
/// stored output of the cases recorded as global.
#[test]
fn global_avg_pool_matches_pytorch() {
    let fixture = Fixture::load("pool");
    fixture.check_all(
        |case| case.flag("global"),
        |fx, case| global_avg_pool(fx.tensor(case, "input")).map_err(|e| format!("stride refused it: {e}")),
    );
}

#[test]
fn local_response_norm_matches_pytorch() {
    let fixture = Fixture::load("pool");
    fixture.check_all(is_op("local_response_norm"), |fx, case| run(fx, case, common::Path::Fast));
    fixture.check_all(is_op("local_response_norm"), |fx, case| run(fx, case, common::Path::Reference));
}
