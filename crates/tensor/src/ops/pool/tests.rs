//! Pooling tests, cheapest first: output sizes of real layers, one test per error branch, cases
//! worked by hand (and checked against PyTorch 2.x) for ties, NaN, padding and divisors, then the
//! fast kernels against the reference over random geometries, with one thread against two.
//!
//! Shapes as in the module: `x [N, C, *I]`, `y [N, C, *O]`.

use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;

fn dims<const N: usize>(spec: PoolSpec<N>, kind: PoolKind, input: &[usize]) -> Vec<usize> {
    spec.output_shape(kind, input).unwrap().dims().to_vec()
}

fn message<T: std::fmt::Debug>(result: Result<T>) -> String {
    result.unwrap_err().to_string()
}

fn tensor(shape: &[usize], data: &[f32]) -> Tensor {
    Tensor::new(shape, data.to_vec()).unwrap()
}

/// Equal within `tolerance` relative to `expected`; NaN and infinities must match exactly.
fn assert_close(actual: &[f32], expected: &[f32], tolerance: f32) {
    assert_eq!(actual.len(), expected.len());
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let ok = if e.is_finite() {
            (a - e).abs() <= tolerance * (1.0 + e.abs())
        } else {
            a.to_bits() == e.to_bits() || (a.is_nan() && e.is_nan())
        };
        assert!(ok, "element {i}: {a} vs {e}");
    }
}

fn assert_bitwise(a: &[f32], b: &[f32]) {
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "element {i}: {x} vs {y}");
    }
}

// --- Geometry: real layers as rows -------------------------------------------------------------

#[test]
fn sizes_of_real_2d_layers() {
    use PoolKind::{Avg, Max};
    /// Layer, kind, spec, input shape, expected output shape.
    type Row = (&'static str, PoolKind, PoolSpec<2>, [usize; 4], [usize; 4]);
    let rows: [Row; 10] = [
        ("alexnet pool1, overlapping 3/2", Max, PoolSpec::new(3).stride(2), [1, 64, 55, 55], [1, 64, 27, 27]),
        ("alexnet pool2", Max, PoolSpec::new(3).stride(2), [1, 192, 27, 27], [1, 192, 13, 13]),
        ("alexnet pool5", Max, PoolSpec::new(3).stride(2), [1, 256, 13, 13], [1, 256, 6, 6]),
        ("resnet stem pool", Max, PoolSpec::new(3).stride(2).padding(1), [1, 64, 112, 112], [1, 64, 56, 56]),
        ("googlenet pool1, floor", Max, PoolSpec::new(3).stride(2), [1, 64, 112, 112], [1, 64, 55, 55]),
        (
            "googlenet pool1, ceil",
            Max,
            PoolSpec::new(3).stride(2).ceil_mode(true),
            [1, 64, 112, 112],
            [1, 64, 56, 56],
        ),
        (
            "googlenet pool3, ceil",
            Max,
            PoolSpec::new(3).stride(2).ceil_mode(true),
            [1, 480, 28, 28],
            [1, 480, 14, 14],
        ),
        (
            "googlenet pool4 2/2, ceil",
            Max,
            PoolSpec::new(2).stride(2).ceil_mode(true),
            [1, 832, 14, 14],
            [1, 832, 7, 7],
        ),
        ("lenet s2, stride = kernel", Avg, PoolSpec::new(2), [1, 6, 28, 28], [1, 6, 14, 14]),
        ("vgg pool1", Max, PoolSpec::new(2), [8, 64, 224, 224], [8, 64, 112, 112]),
    ];
    for (name, kind, spec, input, expected) in rows {
        assert_eq!(dims(spec, kind, &input), expected, "{name}");
    }
}

#[test]
fn sizes_of_real_1d_and_3d_layers() {
    // M5 (Dai et al. 2017): conv1 80/4 on 32000 samples gives 7981, then max_pool1d(4).
    assert_eq!(dims(PoolSpec::<1>::new(4), PoolKind::Max, &[1, 128, 7981]), [1, 128, 1995]);
    // C3D (Tran et al. 2015): pool1 keeps time, pool2 halves everything, pool5 pads H and W.
    let c3d_pool1 = PoolSpec::<3>::new([1, 2, 2]);
    assert_eq!(dims(c3d_pool1, PoolKind::Max, &[1, 64, 16, 112, 112]), [1, 64, 16, 56, 56]);
    assert_eq!(dims(PoolSpec::<3>::new(2), PoolKind::Max, &[1, 128, 16, 56, 56]), [1, 128, 8, 28, 28]);
    let c3d_pool5 = PoolSpec::<3>::new(2).padding([0, 1, 1]);
    assert_eq!(dims(c3d_pool5, PoolKind::Max, &[1, 512, 2, 7, 7]), [1, 512, 1, 4, 4]);
}

#[test]
fn spec_defaults_are_pytorchs() {
    let spec = PoolSpec::<2>::new([3, 2]);
    assert_eq!(spec.stride, [3, 2]);
    assert_eq!((spec.padding, spec.dilation), ([0, 0], [1, 1]));
    assert!(!spec.ceil_mode && spec.count_include_pad && spec.divisor_override.is_none());
}

#[test]
fn geometry_is_lifted_to_three_axes() {
    let g = PoolSpec::<1>::new(3).stride(2).padding(1).geometry(PoolKind::Max, &[2, 5, 9]).unwrap();
    assert_eq!((g.spatial_rank, g.batch, g.channels, g.planes()), (1, 2, 5, 10));
    assert_eq!((g.input, g.kernel, g.output), ([1, 1, 9], [1, 1, 3], [1, 1, 5]));
    assert_eq!((g.stride, g.padding, g.dilation), ([1, 1, 2], [0, 0, 1], [1, 1, 1]));
    assert_eq!(g.input_shape().dims(), &[2, 5, 9]);
    assert_eq!(g.output_shape().dims(), &[2, 5, 5]);
}

#[test]
fn ceil_mode_drops_a_window_starting_in_the_right_padding() {
    // 5 padded by 1 with 2/2: ⌈(5 + 2 − 2)/2⌉ + 1 = 4 windows, but the 4th would start at 6.
    let spec = PoolSpec::<1>::new(2).padding(1).ceil_mode(true);
    assert_eq!(dims(spec, PoolKind::Avg, &[1, 1, 5]), [1, 1, 3]);
}

// --- One test per error branch -----------------------------------------------------------------

#[test]
fn more_than_three_spatial_axes_is_an_error() {
    let err = PoolSpec::<4>::new(2).geometry(PoolKind::Max, &[1, 1, 4, 4, 4, 4]);
    assert_eq!(message(err), "max_pool: invalid argument: 4 spatial dimensions; stride supports 1 to 3");
}

#[test]
fn wrong_rank_names_the_layout() {
    let err = max_pool2d(&Tensor::zeros([1, 28, 28]).unwrap(), &PoolSpec::new(2));
    assert_eq!(
        message(err),
        "max_pool2d: input must be a 4-d tensor laid out as NCHW, got shape [1, 28, 28] (rank 3)"
    );
}

#[test]
fn empty_spatial_axis_is_an_error() {
    let err = avg_pool1d(&Tensor::zeros([1, 1, 0]).unwrap(), &PoolSpec::new(1));
    assert_eq!(message(err), "avg_pool1d: input width must be at least 1, got shape [1, 1, 0]");
}

#[test]
fn padding_over_half_the_kernel_is_an_error() {
    let err = PoolSpec::<2>::new(3).padding([1, 2]).geometry(PoolKind::Max, &[1, 1, 5, 5]);
    assert_eq!(
        message(err),
        "max_pool2d: invalid argument: padding 2 along width is more than half the kernel size 3; \
         PyTorch allows at most ⌊3/2⌋ = 1"
    );
}

#[test]
fn avg_pool_with_dilation_is_an_error() {
    let err = PoolSpec::<2>::new(2).dilation([2, 1]).geometry(PoolKind::Avg, &[1, 1, 8, 8]);
    assert_eq!(
        message(err),
        "avg_pool2d: invalid argument: dilation applies to max pooling only, got [2, 1]"
    );
}

#[test]
fn zero_divisor_override_is_an_error() {
    let err = PoolSpec::<2>::new(2).divisor_override(Some(0)).geometry(PoolKind::Avg, &[1, 1, 8, 8]);
    assert_eq!(message(err), "avg_pool2d: invalid argument: divisor_override must be at least 1, got 0");
}

#[test]
fn max_pool_with_divisor_override_is_an_error() {
    let err = PoolSpec::<3>::new(2).divisor_override(Some(4)).geometry(PoolKind::Max, &[1, 1, 4, 4, 4]);
    assert_eq!(
        message(err),
        "max_pool3d: invalid argument: divisor_override applies to average pooling only, got 4"
    );
}

#[test]
fn kernel_too_large_spells_out_the_formula_and_the_input() {
    let err = PoolSpec::<2>::new(3).stride(2).geometry(PoolKind::Max, &[1, 64, 2, 2]);
    assert_eq!(
        message(err),
        "max_pool2d: kernel 3 does not fit in height 2 padded to 2: \
         O = ⌊(I + 2P − D·(F−1) − 1)/S⌋ + 1 = ⌊(2 + 2·0 − 1·(3−1) − 1)/2⌋ + 1 < 1 (input [1, 64, 2, 2])"
    );
}

#[test]
fn zero_stride_and_zero_kernel_are_errors() {
    let err = PoolSpec::<1>::new(2).stride(0).geometry(PoolKind::Max, &[1, 1, 8]);
    assert_eq!(message(err), "max_pool1d: invalid argument: stride must be at least 1 along width, got 0");
    // The zero kernel is what is wrong, not the padding compared with it.
    let err = PoolSpec::<1>::new(0).padding(1).geometry(PoolKind::Avg, &[1, 1, 8]);
    assert_eq!(
        message(err),
        "avg_pool1d: invalid argument: kernel size must be at least 1 along width, got 0"
    );
}

#[test]
fn windows_beyond_the_index_range_are_an_error() {
    let spec = PoolSpec::<1>::new(usize::MAX).stride(1).padding(usize::MAX / 2);
    assert_eq!(
        message(spec.geometry(PoolKind::Max, &[1, 1, 10])),
        format!(
            "max_pool1d: invalid argument: width 10 padded by 2·{} with a kernel spanning {} is too large to index",
            usize::MAX / 2,
            usize::MAX
        )
    );
}

#[test]
fn output_too_large_to_allocate_is_an_error() {
    let err = PoolSpec::<2>::new(2).geometry(PoolKind::Max, &[usize::MAX, 2, 4, 4]);
    assert_eq!(
        message(err),
        format!("shape: invalid argument: [{}, 2, 2, 2] has more elements than fit in memory", usize::MAX)
    );
}

#[test]
fn adaptive_pooling_errors() {
    let err = adaptive_avg_pool2d(&Tensor::zeros([3, 7, 7]).unwrap(), 1);
    assert_eq!(
        message(err),
        "adaptive_avg_pool2d: input must be a 4-d tensor laid out as NCHW, got shape [3, 7, 7] (rank 3)"
    );
    let err = adaptive_max_pool(&Tensor::zeros([1, 1, 7]).unwrap(), [0]);
    assert_eq!(message(err), "adaptive_max_pool1d: invalid argument: output width must be at least 1, got 0");
    let err = adaptive_avg_pool3d(&Tensor::zeros([1, 1, 0, 2, 2]).unwrap(), 1);
    assert_eq!(
        message(err),
        "adaptive_avg_pool3d: input depth must be at least 1, got shape [1, 1, 0, 2, 2]"
    );
    let err = adaptive_avg_pool(&Tensor::zeros([1, 1, 2, 2, 2, 2]).unwrap(), [1; 4]);
    assert_eq!(
        message(err),
        "adaptive_avg_pool: invalid argument: 4 spatial dimensions; stride supports 1 to 3"
    );
}

#[test]
fn global_pooling_errors() {
    let err = global_avg_pool(&Tensor::zeros([2, 3]).unwrap());
    assert_eq!(
        message(err),
        "global_avg_pool: input must be a 3-, 4- or 5-d tensor laid out as NCW, NCHW or NCDHW, got shape [2, 3] (rank 2)"
    );
    let err = global_avg_pool(&Tensor::zeros([1, 1, 0, 2]).unwrap());
    assert_eq!(message(err), "global_avg_pool: input height must be at least 1, got shape [1, 1, 0, 2]");
}

// --- Worked cases (the numbers are PyTorch 2.x's) ----------------------------------------------

/// The 4×4 plane of the max-pooling cases; row-major flat indices 0..16.
fn plane_4x4() -> Tensor {
    #[rustfmt::skip]
    let data = [
        3.0, 1.0, 4.0, 1.0,
        5.0, 9.0, 2.0, 6.0,
        5.0, 3.0, 5.0, 8.0,
        9.0, 7.0, 9.0, 3.0,
    ];
    tensor(&[1, 1, 4, 4], &data)
}

#[test]
fn max_pool_indices_are_flat_within_the_plane() {
    let x = plane_4x4();
    let cases = [
        (PoolSpec::<2>::new(2), [9.0, 6.0, 9.0, 9.0], [5, 7, 12, 14]),
        // Padded 3/2: every window holds the 9 at index 5, and the later 9s tie and lose.
        (PoolSpec::new(3).stride(2).padding(1), [9.0, 9.0, 9.0, 9.0], [5, 5, 5, 5]),
        (PoolSpec::new(2).stride(1).dilation(2), [5.0, 8.0, 9.0, 9.0], [8, 11, 12, 5]),
    ];
    for (spec, values, indices) in cases {
        for (y, found) in
            [max_pool_with_indices(&x, &spec).unwrap(), reference::max_pool_with_indices(&x, &spec).unwrap()]
        {
            assert_eq!(y.dims(), &[1, 1, 2, 2]);
            assert_eq!(y.data(), values, "{spec:?}");
            assert_eq!(found, indices, "{spec:?}");
        }
        assert_eq!(max_pool(&x, &spec).unwrap().data(), values);
    }
}

#[test]
fn max_pool_indices_count_per_plane_in_3d() {
    // Plane 1 of batch 1 has its maximum at (d, h, w) = (1, 0, 1) → (1·2 + 0)·2 + 1 = 5.
    let x = Tensor::from_fn([2, 2, 2, 2, 2], |i| if i == [1, 1, 1, 0, 1] { 10.0 } else { -(i[4] as f32) })
        .unwrap();
    let (y, indices) = max_pool_with_indices(&x, &PoolSpec::<3>::new(2)).unwrap();
    assert_eq!(y.data(), [0.0, 0.0, 0.0, 10.0]);
    assert_eq!(indices, [0, 0, 0, 5]);
}

#[test]
fn nan_propagates_and_the_last_nan_is_reported() {
    let x = tensor(&[1, 1, 5], &[1.0, f32::NAN, 3.0, f32::NAN, 0.0]);
    for (y, indices) in [
        max_pool_with_indices(&x, &PoolSpec::<1>::new(5)).unwrap(),
        reference::max_pool_with_indices(&x, &PoolSpec::<1>::new(5)).unwrap(),
    ] {
        assert!(y.data()[0].is_nan());
        assert_eq!(indices, [3]);
    }
    assert!(adaptive_max_pool(&x, [1]).unwrap().data()[0].is_nan());
    assert!(reference::adaptive_max_pool(&x, [1]).unwrap().data()[0].is_nan());
}

#[test]
fn max_never_picks_the_padding() {
    // All −∞: nothing beats the starting −∞, so the index stays at each window's first input.
    let x = tensor(&[1, 1, 5], &[f32::NEG_INFINITY; 5]);
    let spec = PoolSpec::<1>::new(3).stride(2).padding(1);
    let (y, indices) = max_pool_with_indices(&x, &spec).unwrap();
    assert_eq!(y.data(), [f32::NEG_INFINITY; 3]);
    assert_eq!(indices, [0, 1, 3]);
    // Negative inputs: the padding (which would be 0 for a sum) must not win either.
    let x = tensor(&[1, 1, 4], &[-4.0, -3.0, -2.0, -1.0]);
    assert_eq!(max_pool(&x, &PoolSpec::<1>::new(2).padding(1)).unwrap().data(), [-4.0, -2.0, -1.0]);
}

#[test]
fn window_with_only_padding_reports_pytorchs_index() {
    // Width 2, kernel 2 dilated by 3, padding 1: the taps land at −1 and 2, both outside.
    let x = tensor(&[1, 1, 2], &[0.0, 1.0]);
    let spec = PoolSpec::<1>::new(2).dilation(3).padding(1);
    for (y, indices) in
        [max_pool_with_indices(&x, &spec).unwrap(), reference::max_pool_with_indices(&x, &spec).unwrap()]
    {
        assert_eq!(y.data(), [f32::NEG_INFINITY]);
        assert_eq!(indices, [2]);
    }
}

#[test]
fn avg_pool_divisors() {
    let x = tensor(&[1, 1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
    let spec = PoolSpec::<1>::new(3).stride(2).padding(1).ceil_mode(true);
    let cases = [
        // Windows [−1, 2), [1, 4), [3, 6): the first counts its padding, the last its clipped 3.
        (spec, [1.0, 3.0, 3.0]),
        (spec.count_include_pad(false), [1.5, 3.0, 4.5]),
        (spec.divisor_override(Some(2)), [1.5, 4.5, 4.5]),
    ];
    for (spec, expected) in cases {
        assert_close(avg_pool(&x, &spec).unwrap().data(), &expected, 1e-6);
        assert_close(reference::avg_pool(&x, &spec).unwrap().data(), &expected, 1e-6);
    }
}

#[test]
fn avg_pool_divisor_is_clipped_to_the_padded_input_in_ceil_mode() {
    // PyTorch: pool_size = min(start + k, I + P) − start, so a window hanging past the right
    // padding divides by less than k.
    let cases = [(5, 2, [0.5, 1.0, 1.0].as_slice()), (6, 3, [2.0 / 3.0, 1.0, 1.0, 0.5].as_slice())];
    for (width, kernel, expected) in cases {
        let x = Tensor::ones([1, 1, width]).unwrap();
        let spec = PoolSpec::<1>::new(kernel).stride(2).padding(1).ceil_mode(true);
        assert_close(avg_pool(&x, &spec).unwrap().data(), expected, 1e-6);
        assert_close(reference::avg_pool(&x, &spec).unwrap().data(), expected, 1e-6);
    }
}

#[test]
fn one_and_two_dimensional_pools_agree_with_the_lifted_three_dimensional_one() {
    let x = Tensor::from_fn([2, 3, 11], |i| ((i[0] * 37 + i[1] * 11 + i[2]) as f32 * 0.7).sin()).unwrap();
    let x3 = Tensor::new([2, 3, 1, 1, 11], x.data().to_vec()).unwrap();
    let spec1 = PoolSpec::<1>::new(3).stride(2).padding(1).ceil_mode(true);
    let spec3 = PoolSpec::<3>::new([1, 1, 3]).stride([1, 1, 2]).padding([0, 0, 1]).ceil_mode(true);
    assert_bitwise(max_pool1d(&x, &spec1).unwrap().data(), max_pool3d(&x3, &spec3).unwrap().data());
    assert_bitwise(avg_pool1d(&x, &spec1).unwrap().data(), avg_pool3d(&x3, &spec3).unwrap().data());
    let x2 = Tensor::new([2, 3, 1, 11], x.data().to_vec()).unwrap();
    let spec2 = PoolSpec::<2>::new([1, 3]).stride([1, 2]).padding([0, 1]).ceil_mode(true);
    assert_bitwise(avg_pool1d(&x, &spec1).unwrap().data(), avg_pool2d(&x2, &spec2).unwrap().data());
    assert_bitwise(max_pool1d(&x, &spec1).unwrap().data(), max_pool2d(&x2, &spec2).unwrap().data());
}

#[test]
fn kernels_far_wider_than_the_input_stay_cheap() {
    // Valid because padding ⌊F/2⌋ is allowed: the fast path must visit only the taps that land
    // in the input, not the million in the padding. With stride P and ceil mode the two windows
    // use taps P..P+2 and 0..2, far apart in the kernel.
    let x = tensor(&[1, 2, 2], &[1.0, -2.0, 3.0, f32::NAN]);
    let pad = 500_000;
    for spec in [
        PoolSpec::<1>::new(2 * pad + 1).stride(1).padding(pad),
        PoolSpec::<1>::new(2 * pad + 1).stride(pad).padding(pad).ceil_mode(true),
    ] {
        let (y, indices) = max_pool_with_indices(&x, &spec).unwrap();
        let (expected, expected_indices) = reference::max_pool_with_indices(&x, &spec).unwrap();
        assert_eq!(y.dims(), &[1, 2, 2]);
        assert_bitwise(y.data(), expected.data());
        assert_eq!(indices, expected_indices);
        assert_eq!(indices, [0, 0, 1, 1], "PyTorch's");
        let y = avg_pool(&x, &spec.count_include_pad(false)).unwrap();
        assert_close(y.data(), reference::avg_pool(&x, &spec.count_include_pad(false)).unwrap().data(), 1e-6);
        assert_close(&y.data()[..2], &[-0.5, -0.5], 1e-6);
    }
}

#[test]
fn adaptive_windows_follow_pytorchs_rule() {
    // 10 → 3: [0, 4), [3, 7), [6, 10), overlapping because 3 does not divide 10.
    let windows: Vec<_> = (0..3).map(|i| adaptive_window(i, 10, 3)).collect();
    assert_eq!(windows, [(0, 4), (3, 7), (6, 10)]);
    // 3 → 5: more outputs than inputs, so elements repeat.
    let windows: Vec<_> = (0..5).map(|i| adaptive_window(i, 3, 5)).collect();
    assert_eq!(windows, [(0, 1), (0, 2), (1, 2), (1, 3), (2, 3)]);
    assert_eq!(adaptive_window(usize::MAX - 1, usize::MAX, usize::MAX), (usize::MAX - 1, usize::MAX));
}

#[test]
fn adaptive_pooling_on_non_divisible_sizes() {
    let x = Tensor::from_fn([1, 1, 10], |i| i[2] as f32).unwrap();
    assert_close(adaptive_avg_pool1d(&x, 3).unwrap().data(), &[1.5, 4.5, 7.5], 1e-6);
    assert_eq!(adaptive_max_pool(&x, [3]).unwrap().data(), [3.0, 6.0, 9.0]);
    assert_close(reference::adaptive_avg_pool(&x, [3]).unwrap().data(), &[1.5, 4.5, 7.5], 1e-6);
    assert_eq!(reference::adaptive_max_pool(&x, [3]).unwrap().data(), [3.0, 6.0, 9.0]);

    let x =
        Tensor::from_fn([2, 3, 5, 7], |i| ((i[0] * 71 + i[1] * 13 + i[2] * 7 + i[3]) as f32).cos()).unwrap();
    let y = adaptive_avg_pool2d(&x, [3, 2]).unwrap();
    assert_eq!(y.dims(), &[2, 3, 3, 2]);
    assert_close(y.data(), reference::adaptive_avg_pool(&x, [3, 2]).unwrap().data(), 1e-6);
    assert_bitwise(
        adaptive_max_pool(&x, [3, 2]).unwrap().data(),
        reference::adaptive_max_pool(&x, [3, 2]).unwrap().data(),
    );
}

#[test]
fn global_avg_pool_keeps_the_rank() {
    let x = Tensor::from_fn([2, 3, 4, 5], |i| (i[0] * 60 + i[1] * 20 + i[2] * 5 + i[3]) as f32).unwrap();
    let y = global_avg_pool(&x).unwrap();
    assert_eq!(y.dims(), &[2, 3, 1, 1]);
    // Plane p holds p·20 .. p·20 + 20, whose mean is p·20 + 9.5.
    let expected: Vec<f32> = (0..6).map(|p| p as f32 * 20.0 + 9.5).collect();
    assert_close(y.data(), &expected, 1e-6);
    assert_bitwise(y.data(), adaptive_avg_pool2d(&x, 1).unwrap().data());
    let x1 = Tensor::new([2, 3, 20], x.data().to_vec()).unwrap();
    assert_eq!(global_avg_pool(&x1).unwrap().dims(), &[2, 3, 1]);
    assert_close(global_avg_pool(&x1).unwrap().data(), &expected, 1e-6);
    let x3 = Tensor::new([2, 3, 2, 2, 5], x.data().to_vec()).unwrap();
    assert_eq!(global_avg_pool(&x3).unwrap().dims(), &[2, 3, 1, 1, 1]);
    assert_close(global_avg_pool(&x3).unwrap().data(), &expected, 1e-6);
}

#[test]
fn empty_batch_gives_an_empty_output() {
    let x = Tensor::zeros([0, 3, 8, 8]).unwrap();
    assert_eq!(max_pool2d(&x, &PoolSpec::new(2)).unwrap().dims(), &[0, 3, 4, 4]);
    assert_eq!(avg_pool2d(&x, &PoolSpec::new(2)).unwrap().dims(), &[0, 3, 4, 4]);
    assert_eq!(adaptive_avg_pool2d(&x, 3).unwrap().dims(), &[0, 3, 3, 3]);
}

// --- Fast against reference, one thread against two --------------------------------------------

/// A random pooling problem: the input shape, the spec and how to fill the input.
#[derive(Debug, Clone)]
struct Case<const N: usize> {
    input: Vec<usize>,
    spec: PoolSpec<N>,
    seed: u64,
    values: Values,
}

#[derive(Debug, Clone, Copy)]
enum Values {
    /// Uniform in [−1, 1): no ties.
    Continuous,
    /// Small integers: many ties, to pin down which of equal maxima wins.
    Ties,
    /// Ties plus some NaN and ±∞.
    Specials,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn filled(dims: &[usize], seed: u64, values: Values) -> Tensor {
    let numel = dims.iter().product::<usize>();
    let data = (0..numel as u64)
        .map(|i| {
            let r = splitmix(seed ^ splitmix(i));
            let unit = (r >> 40) as f32 / (1u64 << 24) as f32;
            let small = (r % 5) as f32 - 2.0;
            match values {
                Values::Continuous => unit * 2.0 - 1.0,
                Values::Ties => small,
                Values::Specials => match (r >> 8) % 16 {
                    0 => f32::NAN,
                    1 => f32::NEG_INFINITY,
                    2 => f32::INFINITY,
                    // Beside the 0s of `small`: which of two equal zeros is kept shows.
                    3 => -0.0,
                    _ => small,
                },
            }
        })
        .collect();
    Tensor::new(dims, data).unwrap()
}

fn case<const N: usize>(kind: PoolKind) -> impl Strategy<Value = Case<N>> {
    // Per axis: kernel, stride, dilation, a padding seed and how much the input exceeds the window.
    let axis = (1usize..=4, 1usize..=3, 1usize..=3, 0usize..=4, 0usize..=5);
    let values = prop_oneof![Just(Values::Continuous), Just(Values::Ties), Just(Values::Specials)];
    (
        proptest::collection::vec(axis, N),
        1usize..=3,
        1usize..=3,
        any::<bool>(),
        any::<bool>(),
        proptest::option::of(1usize..=9),
        any::<u64>(),
        values,
    )
        .prop_map(move |(axes, batch, channels, ceil_mode, include_pad, divisor, seed, values)| {
            let mut spec = PoolSpec::<N>::new(1).ceil_mode(ceil_mode).count_include_pad(include_pad);
            let mut input = vec![batch, channels];
            for (i, &(kernel, stride, dilation, pad, extra)) in axes.iter().enumerate() {
                let dilation = if kind == PoolKind::Max { dilation } else { 1 };
                let pad = pad % (kernel / 2 + 1);
                spec.kernel[i] = kernel;
                spec.stride[i] = stride;
                spec.dilation[i] = dilation;
                spec.padding[i] = pad;
                let span = dilation * (kernel - 1) + 1;
                input.push(span.saturating_sub(2 * pad).max(1) + extra);
            }
            if kind == PoolKind::Avg {
                spec.divisor_override = divisor;
            }
            Case { input, spec, seed, values }
        })
}

/// Thread pools of one and two workers, built once for all cases.
fn pools() -> &'static (rayon::ThreadPool, rayon::ThreadPool) {
    static POOLS: OnceLock<(rayon::ThreadPool, rayon::ThreadPool)> = OnceLock::new();
    POOLS.get_or_init(|| {
        let build = |n| rayon::ThreadPoolBuilder::new().num_threads(n).build().unwrap();
        (build(1), build(2))
    })
}

fn check_max<const N: usize>(case: &Case<N>) {
    let x = filled(&case.input, case.seed, case.values);
    let (expected, expected_indices) = reference::max_pool_with_indices(&x, &case.spec).unwrap();
    let (one, two) = pools();
    let (y1, indices1) = one.install(|| max_pool_with_indices(&x, &case.spec)).unwrap();
    let (y2, indices2) = two.install(|| max_pool_with_indices(&x, &case.spec)).unwrap();
    assert_eq!(y1.dims(), expected.dims());
    // The same comparisons in the same order: the fast path must pick the same elements.
    assert_bitwise(y1.data(), expected.data());
    assert_eq!(indices1, expected_indices);
    assert_bitwise(y2.data(), y1.data());
    assert_eq!(indices2, indices1);
    assert_bitwise(max_pool(&x, &case.spec).unwrap().data(), y1.data());
    // The value-only kernels: the portable one too (the CPU picks the AVX2 one above), and the
    // separable passes wherever they accept the geometry (max_pool takes a 2×2 shortcut).
    let g = case.spec.geometry(PoolKind::Max, x.dims()).unwrap();
    for kernel in [separable::Kernel::Portable, separable::Kernel::detect()] {
        assert_bitwise(&separable::max_pool(&g, x.data(), kernel), y1.data());
    }
    // Only a window without input elements (its maximum is −∞) may point outside the plane.
    let plane = case.input[2..].iter().product::<usize>();
    assert!(indices1.iter().zip(y1.data()).all(|(&i, &v)| v == f32::NEG_INFINITY || i < plane));
}

/// Rows wide enough for the AVX2 kernel's four-group loop and its overlapped last group (the
/// random cases stay narrow), at strides 1 to 3 with padding, dilation and ceil mode.
#[test]
fn separable_max_pool_matches_the_reference_on_wide_rows() {
    for (width, kernel, stride, padding, dilation, ceil_mode) in
        [(77, 3, 1, 1, 1, false), (112, 3, 2, 1, 1, true), (75, 3, 2, 0, 1, true), (70, 5, 3, 2, 2, false)]
    {
        for values in [Values::Continuous, Values::Ties, Values::Specials] {
            let x = filled(&[1, 3, 9, width], width as u64, values);
            let spec = PoolSpec::<2>::new(kernel)
                .stride(stride)
                .padding(padding)
                .dilation(dilation)
                .ceil_mode(ceil_mode);
            let expected = reference::max_pool_with_indices(&x, &spec).unwrap().0;
            let g = spec.geometry(PoolKind::Max, x.dims()).unwrap();
            for kernel in [separable::Kernel::Portable, separable::Kernel::detect()] {
                assert_bitwise(&separable::max_pool(&g, x.data(), kernel), expected.data());
            }
        }
    }
}

fn check_avg<const N: usize>(case: &Case<N>) {
    let x = filled(&case.input, case.seed, case.values);
    let expected = reference::avg_pool(&x, &case.spec).unwrap();
    let (one, two) = pools();
    let y1 = one.install(|| avg_pool(&x, &case.spec)).unwrap();
    let y2 = two.install(|| avg_pool(&x, &case.spec)).unwrap();
    assert_eq!(y1.dims(), expected.dims());
    assert_close(y1.data(), expected.data(), 1e-5);
    assert_bitwise(y2.data(), y1.data());
}

fn adaptive_case<const N: usize>() -> impl Strategy<Value = (Vec<usize>, [usize; N], u64)> {
    (1usize..=2, 1usize..=3, proptest::collection::vec((1usize..=12, 1usize..=8), N), any::<u64>()).prop_map(
        |(batch, channels, axes, seed)| {
            let mut input = vec![batch, channels];
            input.extend(axes.iter().map(|a| a.0));
            (input, std::array::from_fn(|i| axes[i].1), seed)
        },
    )
}

fn check_adaptive<const N: usize>(input: &[usize], output: [usize; N], seed: u64) {
    let x = filled(input, seed, Values::Continuous);
    let (one, two) = pools();
    let avg = one.install(|| adaptive_avg_pool(&x, output)).unwrap();
    assert_close(avg.data(), reference::adaptive_avg_pool(&x, output).unwrap().data(), 1e-5);
    assert_bitwise(two.install(|| adaptive_avg_pool(&x, output)).unwrap().data(), avg.data());
    let max = one.install(|| adaptive_max_pool(&x, output)).unwrap();
    assert_bitwise(max.data(), reference::adaptive_max_pool(&x, output).unwrap().data());
    assert_bitwise(two.install(|| adaptive_max_pool(&x, output)).unwrap().data(), max.data());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn max_pool_1d_fast_matches_reference(case in case::<1>(PoolKind::Max)) {
        check_max(&case);
    }

    #[test]
    fn max_pool_2d_fast_matches_reference(case in case::<2>(PoolKind::Max)) {
        check_max(&case);
    }

    #[test]
    fn max_pool_3d_fast_matches_reference(case in case::<3>(PoolKind::Max)) {
        check_max(&case);
    }

    #[test]
    fn avg_pool_1d_fast_matches_reference(case in case::<1>(PoolKind::Avg)) {
        check_avg(&case);
    }

    #[test]
    fn avg_pool_2d_fast_matches_reference(case in case::<2>(PoolKind::Avg)) {
        check_avg(&case);
    }

    #[test]
    fn avg_pool_3d_fast_matches_reference(case in case::<3>(PoolKind::Avg)) {
        check_avg(&case);
    }

    #[test]
    fn adaptive_1d_fast_matches_reference((input, output, seed) in adaptive_case::<1>()) {
        check_adaptive(&input, output, seed);
    }

    #[test]
    fn adaptive_2d_fast_matches_reference((input, output, seed) in adaptive_case::<2>()) {
        check_adaptive(&input, output, seed);
    }

    #[test]
    fn adaptive_3d_fast_matches_reference((input, output, seed) in adaptive_case::<3>()) {
        check_adaptive(&input, output, seed);
    }
}

// --- Backward -----------------------------------------------------------------------------------

fn check_max_backward<const N: usize>(case: &Case<N>) {
    let x = filled(&case.input, case.seed, case.values);
    let (y, indices) = reference::max_pool_with_indices(&x, &case.spec).unwrap();
    let dy = filled(y.dims(), !case.seed, Values::Continuous);
    let expected = reference::max_pool_backward(&x, &indices, &dy, &case.spec).unwrap();
    let (one, two) = pools();
    let dx1 = one.install(|| max_pool_backward(&x, &indices, &dy, &case.spec)).unwrap();
    let dx2 = two.install(|| max_pool_backward(&x, &indices, &dy, &case.spec)).unwrap();
    assert_eq!(dx1.dims(), x.dims());
    assert_close(dx1.data(), expected.data(), 1e-5);
    assert_bitwise(dx2.data(), dx1.data());
    // Every gradient reaches the input unless its window saw only padding (index past the plane).
    let plane = case.input[2..].iter().product::<usize>();
    let lost: f64 =
        dy.data().iter().zip(&indices).filter(|(_, i)| **i >= plane).map(|(&d, _)| d as f64).sum();
    let total: f64 = dy.data().iter().map(|&d| d as f64).sum::<f64>() - lost;
    let reached: f64 = dx1.data().iter().map(|&d| d as f64).sum();
    assert!((total - reached).abs() <= 1e-4 * (1.0 + total.abs()), "{total} vs {reached}");
}

fn check_avg_backward<const N: usize>(case: &Case<N>) {
    let (y_shape, seed) = (case.spec.output_shape(PoolKind::Avg, &case.input).unwrap(), case.seed);
    let dy = filled(y_shape.dims(), seed, Values::Continuous);
    let expected = reference::avg_pool_backward(&case.input, &dy, &case.spec).unwrap();
    let (one, two) = pools();
    let dx1 = one.install(|| avg_pool_backward(&case.input, &dy, &case.spec)).unwrap();
    let dx2 = two.install(|| avg_pool_backward(&case.input, &dy, &case.spec)).unwrap();
    assert_eq!(dx1.dims(), case.input.as_slice());
    assert_close(dx1.data(), expected.data(), 1e-5);
    assert_bitwise(dx2.data(), dx1.data());
}

fn check_adaptive_backward<const N: usize>(input: &[usize], output: [usize; N], seed: u64) {
    let x = filled(input, seed, Values::Ties);
    let (one, two) = pools();
    let (y, indices) = adaptive_max_pool_with_indices(&x, output).unwrap();
    let (expected_y, expected_indices) = reference::adaptive_max_pool_with_indices(&x, output).unwrap();
    assert_bitwise(y.data(), expected_y.data());
    assert_eq!(indices, expected_indices);
    assert_bitwise(y.data(), adaptive_max_pool(&x, output).unwrap().data());
    let dy = filled(y.dims(), !seed, Values::Continuous);
    let max1 = one.install(|| adaptive_max_pool_backward::<N>(input, &indices, &dy)).unwrap();
    let expected = reference::adaptive_max_pool_backward::<N>(input, &indices, &dy).unwrap();
    assert_close(max1.data(), expected.data(), 1e-5);
    assert_bitwise(
        two.install(|| adaptive_max_pool_backward::<N>(input, &indices, &dy)).unwrap().data(),
        max1.data(),
    );
    let avg1 = one.install(|| adaptive_avg_pool_backward::<N>(input, &dy)).unwrap();
    assert_eq!(avg1.dims(), input);
    assert_close(avg1.data(), reference::adaptive_avg_pool_backward::<N>(input, &dy).unwrap().data(), 1e-5);
    assert_bitwise(two.install(|| adaptive_avg_pool_backward::<N>(input, &dy)).unwrap().data(), avg1.data());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn max_pool_1d_backward_fast_matches_reference(case in case::<1>(PoolKind::Max)) {
        check_max_backward(&case);
    }

    #[test]
    fn max_pool_2d_backward_fast_matches_reference(case in case::<2>(PoolKind::Max)) {
        check_max_backward(&case);
    }

    #[test]
    fn max_pool_3d_backward_fast_matches_reference(case in case::<3>(PoolKind::Max)) {
        check_max_backward(&case);
    }

    #[test]
    fn avg_pool_1d_backward_fast_matches_reference(case in case::<1>(PoolKind::Avg)) {
        check_avg_backward(&case);
    }

    #[test]
    fn avg_pool_2d_backward_fast_matches_reference(case in case::<2>(PoolKind::Avg)) {
        check_avg_backward(&case);
    }

    #[test]
    fn avg_pool_3d_backward_fast_matches_reference(case in case::<3>(PoolKind::Avg)) {
        check_avg_backward(&case);
    }

    #[test]
    fn adaptive_1d_backward_fast_matches_reference((input, output, seed) in adaptive_case::<1>()) {
        check_adaptive_backward(&input, output, seed);
    }

    #[test]
    fn adaptive_2d_backward_fast_matches_reference((input, output, seed) in adaptive_case::<2>()) {
        check_adaptive_backward(&input, output, seed);
    }

    #[test]
    fn adaptive_3d_backward_fast_matches_reference((input, output, seed) in adaptive_case::<3>()) {
        check_adaptive_backward(&input, output, seed);
    }
}

/// Distinct values `0.1·k` in a random order: every gap is 0.1, far wider than twice the finite
/// difference step, so no perturbation can change which element of a window is the maximum.
fn tie_free(dims: &[usize], seed: u64) -> Tensor {
    let numel = dims.iter().product::<usize>();
    let mut order: Vec<usize> = (0..numel).collect();
    order.sort_by_key(|&i| splitmix(seed ^ splitmix(i as u64)));
    let mut data = vec![0.0; numel];
    for (rank, &i) in order.iter().enumerate() {
        data[i] = (rank as f32 - numel as f32 / 2.0) * 0.1;
    }
    Tensor::new(dims, data).unwrap()
}

/// `∂L/∂x` by central differences of `L(x) = Σ f(x)·r`, accumulated in f64, with step `eps`.
fn numeric_gradient(x: &Tensor, r: &Tensor, eps: f32, f: impl Fn(&Tensor) -> Tensor) -> Vec<f32> {
    let loss =
        |x: &Tensor| -> f64 { f(x).data().iter().zip(r.data()).map(|(&y, &r)| y as f64 * r as f64).sum() };
    (0..x.numel())
        .map(|i| {
            let mut plus = x.clone();
            plus.data_mut()[i] += eps;
            let mut minus = x.clone();
            minus.data_mut()[i] -= eps;
            ((loss(&plus) - loss(&minus)) / (2.0 * eps as f64)) as f32
        })
        .collect()
}

#[test]
fn max_pool_backward_matches_finite_differences() {
    let cases: [(Vec<usize>, PoolSpec<2>); 3] = [
        (vec![2, 2, 7, 7], PoolSpec::new(3).stride(2).padding(1)),
        (
            vec![1, 2, 9, 8],
            PoolSpec::new([3, 2]).stride([2, 1]).padding([1, 0]).dilation([2, 3]).ceil_mode(true),
        ),
        (vec![1, 1, 6, 6], PoolSpec::new(2).stride(1)),
    ];
    for (seed, (input, spec)) in cases.into_iter().enumerate() {
        let x = tie_free(&input, seed as u64);
        let (y, indices) = max_pool_with_indices(&x, &spec).unwrap();
        let r = filled(y.dims(), seed as u64 + 100, Values::Continuous);
        let numeric = numeric_gradient(&x, &r, 1e-2, |x| max_pool(x, &spec).unwrap());
        assert_close(max_pool_backward(&x, &indices, &r, &spec).unwrap().data(), &numeric, 1e-3);
        assert_close(reference::max_pool_backward(&x, &indices, &r, &spec).unwrap().data(), &numeric, 1e-3);
    }
    let (x1, spec1) = (tie_free(&[2, 3, 11], 7), PoolSpec::<1>::new(3).stride(2).padding(1).ceil_mode(true));
    let (y, indices) = max_pool_with_indices(&x1, &spec1).unwrap();
    let r = filled(y.dims(), 8, Values::Continuous);
    let numeric = numeric_gradient(&x1, &r, 1e-2, |x| max_pool(x, &spec1).unwrap());
    assert_close(max_pool_backward(&x1, &indices, &r, &spec1).unwrap().data(), &numeric, 1e-3);
    let (x3, spec3) =
        (tie_free(&[1, 2, 4, 5, 5], 9), PoolSpec::<3>::new([2, 3, 3]).stride(2).padding([1, 1, 0]));
    let (y, indices) = max_pool_with_indices(&x3, &spec3).unwrap();
    let r = filled(y.dims(), 10, Values::Continuous);
    let numeric = numeric_gradient(&x3, &r, 1e-2, |x| max_pool(x, &spec3).unwrap());
    assert_close(max_pool_backward(&x3, &indices, &r, &spec3).unwrap().data(), &numeric, 1e-3);
}

#[test]
fn avg_pool_backward_matches_finite_differences() {
    let base = PoolSpec::<2>::new(3).stride(2).padding(1);
    let specs = [
        base,
        base.ceil_mode(true),
        base.ceil_mode(true).count_include_pad(false),
        base.divisor_override(Some(5)),
        PoolSpec::new([2, 3]).stride([1, 2]).padding([1, 0]),
    ];
    let x = filled(&[2, 2, 8, 7], 11, Values::Continuous);
    for (seed, spec) in specs.into_iter().enumerate() {
        let y_shape = spec.output_shape(PoolKind::Avg, x.dims()).unwrap();
        let r = filled(y_shape.dims(), seed as u64 + 200, Values::Continuous);
        let numeric = numeric_gradient(&x, &r, 1e-2, |x| avg_pool(x, &spec).unwrap());
        assert_close(avg_pool_backward(x.dims(), &r, &spec).unwrap().data(), &numeric, 1e-3);
        assert_close(reference::avg_pool_backward(x.dims(), &r, &spec).unwrap().data(), &numeric, 1e-3);
    }
    let x = filled(&[1, 2, 5, 4, 6], 12, Values::Continuous);
    let spec =
        PoolSpec::<3>::new([3, 2, 3]).stride(2).padding([1, 1, 0]).ceil_mode(true).count_include_pad(false);
    let r = filled(spec.output_shape(PoolKind::Avg, x.dims()).unwrap().dims(), 13, Values::Continuous);
    let numeric = numeric_gradient(&x, &r, 1e-2, |x| avg_pool(x, &spec).unwrap());
    assert_close(avg_pool_backward(x.dims(), &r, &spec).unwrap().data(), &numeric, 1e-3);
}

#[test]
fn adaptive_and_global_backward_match_finite_differences() {
    let x = tie_free(&[2, 2, 7, 10], 14);
    let r = filled(&[2, 2, 4, 3], 15, Values::Continuous);
    let numeric = numeric_gradient(&x, &r, 1e-2, |x| adaptive_avg_pool(x, [4, 3]).unwrap());
    assert_close(adaptive_avg_pool_backward::<2>(x.dims(), &r).unwrap().data(), &numeric, 1e-3);
    let numeric = numeric_gradient(&x, &r, 1e-2, |x| adaptive_max_pool(x, [4, 3]).unwrap());
    let (_, indices) = adaptive_max_pool_with_indices(&x, [4, 3]).unwrap();
    assert_close(adaptive_max_pool_backward::<2>(x.dims(), &indices, &r).unwrap().data(), &numeric, 1e-3);
    let r = filled(&[2, 2, 1, 1], 16, Values::Continuous);
    let numeric = numeric_gradient(&x, &r, 1e-2, |x| global_avg_pool(x).unwrap());
    assert_close(global_avg_pool_backward(x.dims(), &r).unwrap().data(), &numeric, 1e-3);
    assert_close(reference::global_avg_pool_backward(x.dims(), &r).unwrap().data(), &numeric, 1e-3);
}

#[test]
fn overlapping_max_windows_sum_their_gradients() {
    // plane_4x4 padded 3/2: all four windows choose the 9 at index 5.
    let x = plane_4x4();
    let spec = PoolSpec::<2>::new(3).stride(2).padding(1);
    let (_, indices) = max_pool_with_indices(&x, &spec).unwrap();
    let dy = tensor(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let mut expected = [0.0; 16];
    expected[5] = 10.0;
    assert_eq!(max_pool_backward(&x, &indices, &dy, &spec).unwrap().data(), expected);
    assert_eq!(reference::max_pool_backward(&x, &indices, &dy, &spec).unwrap().data(), expected);
}

#[test]
fn window_with_only_padding_passes_no_gradient() {
    // The forward reports index 2 in a plane of width 2 (see the forward's test): it is skipped.
    let x = tensor(&[1, 1, 2], &[0.0, 1.0]);
    let spec = PoolSpec::<1>::new(2).dilation(3).padding(1);
    let (_, indices) = max_pool_with_indices(&x, &spec).unwrap();
    let dy = tensor(&[1, 1, 1], &[5.0]);
    assert_eq!(max_pool_backward(&x, &indices, &dy, &spec).unwrap().data(), [0.0, 0.0]);
    assert_eq!(reference::max_pool_backward(&x, &indices, &dy, &spec).unwrap().data(), [0.0, 0.0]);
    // Any index past the plane, even one no forward gives, is skipped rather than a panic.
    let x = tensor(&[1, 1, 4], &[0.0; 4]);
    let dx =
        max_pool_backward(&x, &[usize::MAX, 3], &tensor(&[1, 1, 2], &[1.0, 2.0]), &PoolSpec::<1>::new(2));
    assert_eq!(dx.unwrap().data(), [0.0, 0.0, 0.0, 2.0]);
}

#[test]
fn avg_pool_backward_spreads_by_the_forward_divisor() {
    // The windows of avg_pool_divisors: [−1, 2), [1, 4), [3, 6) over 5 inputs.
    let spec = PoolSpec::<1>::new(3).stride(2).padding(1).ceil_mode(true);
    let dy = tensor(&[1, 1, 3], &[6.0, 6.0, 6.0]);
    let cases = [
        (spec, [2.0, 4.0, 2.0, 4.0, 2.0]),
        (spec.count_include_pad(false), [3.0, 5.0, 2.0, 5.0, 3.0]),
        (spec.divisor_override(Some(2)), [3.0, 6.0, 3.0, 6.0, 3.0]),
    ];
    for (spec, expected) in cases {
        assert_close(avg_pool_backward(&[1, 1, 5], &dy, &spec).unwrap().data(), &expected, 1e-6);
        assert_close(reference::avg_pool_backward(&[1, 1, 5], &dy, &spec).unwrap().data(), &expected, 1e-6);
    }
}

#[test]
fn backward_of_an_empty_batch_is_empty() {
    let spec = PoolSpec::<2>::new(2);
    let dy = Tensor::zeros([0, 3, 4, 4]).unwrap();
    assert_eq!(avg_pool_backward(&[0, 3, 8, 8], &dy, &spec).unwrap().dims(), &[0, 3, 8, 8]);
    let x = Tensor::zeros([0, 3, 8, 8]).unwrap();
    assert_eq!(max_pool_backward(&x, &[], &dy, &spec).unwrap().dims(), &[0, 3, 8, 8]);
    assert_eq!(adaptive_avg_pool_backward::<2>(&[0, 3, 8, 8], &dy).unwrap().dims(), &[0, 3, 8, 8]);
}

#[test]
fn backward_errors_name_both_shapes() {
    let x = Tensor::zeros([1, 1, 4, 4]).unwrap();
    let spec = PoolSpec::<2>::new(2);
    let dy = Tensor::zeros([1, 1, 3, 3]).unwrap();
    assert_eq!(
        message(max_pool_backward(&x, &[0; 9], &dy, &spec)),
        "max_pool2d_backward: grad_output has shape [1, 1, 3, 3] but the output for input [1, 1, 4, 4] is [1, 1, 2, 2]"
    );
    assert_eq!(
        message(avg_pool_backward(&[1, 1, 4, 4], &dy, &spec)),
        "avg_pool2d_backward: grad_output has shape [1, 1, 3, 3] but the output for input [1, 1, 4, 4] is [1, 1, 2, 2]"
    );
    let dy = Tensor::zeros([1, 1, 2, 2]).unwrap();
    assert_eq!(
        message(max_pool_backward(&x, &[0; 3], &dy, &spec)),
        "max_pool2d_backward: 3 indices for a grad_output of shape [1, 1, 2, 2] (4 elements); expected one per element"
    );
    assert_eq!(
        message(reference::max_pool_backward(&x, &[0; 3], &dy, &spec)),
        "max_pool2d_backward: 3 indices for a grad_output of shape [1, 1, 2, 2] (4 elements); expected one per element"
    );
    // The forward's own checks, under the backward's name.
    assert_eq!(
        message(avg_pool_backward(&[1, 4, 4], &dy, &spec)),
        "avg_pool2d_backward: input must be a 4-d tensor laid out as NCHW, got shape [1, 4, 4] (rank 3)"
    );
    assert_eq!(
        message(avg_pool_backward(&[1, 1, 4, 4], &dy, &spec.dilation(2))),
        "avg_pool2d_backward: invalid argument: dilation applies to max pooling only, got [2, 2]"
    );
}

#[test]
fn adaptive_and_global_backward_errors() {
    let dy = Tensor::zeros([1, 1, 2]).unwrap();
    assert_eq!(
        message(adaptive_avg_pool_backward::<2>(&[1, 1, 5, 5], &dy)),
        "adaptive_avg_pool2d_backward: grad_output has shape [1, 1, 2] but the output for input [1, 1, 5, 5] must have rank 4"
    );
    let dy = Tensor::zeros([1, 3, 2, 2]).unwrap();
    assert_eq!(
        message(adaptive_avg_pool_backward::<2>(&[1, 2, 5, 5], &dy)),
        "adaptive_avg_pool2d_backward: grad_output has shape [1, 3, 2, 2] but the output for input [1, 2, 5, 5] is [1, 2, 2, 2]"
    );
    assert_eq!(
        message(adaptive_max_pool_backward::<2>(&[1, 3, 5, 5], &[0; 5], &dy)),
        "adaptive_max_pool2d_backward: 5 indices for a grad_output of shape [1, 3, 2, 2] (12 elements); expected one per element"
    );
    assert_eq!(
        message(adaptive_max_pool_backward::<2>(&[1, 3, 0, 5], &[0; 12], &dy)),
        "adaptive_max_pool2d_backward: input height must be at least 1, got shape [1, 3, 0, 5]"
    );
    assert_eq!(
        message(global_avg_pool_backward(&[2, 3], &dy)),
        "global_avg_pool_backward: input must be a 3-, 4- or 5-d tensor laid out as NCW, NCHW or NCDHW, got shape [2, 3] (rank 2)"
    );
    assert_eq!(
        message(global_avg_pool_backward(&[1, 3, 4, 4], &dy)),
        "global_avg_pool_backward: grad_output has shape [1, 3, 2, 2] but the output for input [1, 3, 4, 4] is [1, 3, 1, 1]"
    );
}

#[test]
fn backward_of_an_input_too_large_to_allocate_is_an_error() {
    // A window of the whole width: the output fits, the input does not.
    let (wide, dy) = (usize::MAX / 2, Tensor::zeros([4, 1, 1]).unwrap());
    let err = adaptive_avg_pool_backward::<1>(&[4, 1, wide], &dy);
    assert_eq!(
        message(err),
        format!("shape: invalid argument: [4, 1, {wide}] has more elements than fit in memory")
    );
}

/// The 2×2 stride-2 fast path against the reference: odd sizes whose last row and column no
/// window reaches, ties (the first tap wins), NaN (the last one wins), a 3D [1, 2, 2] window, and
/// the indices the backward uses.
#[test]
fn plain_2x2_max_pool_matches_the_reference_with_ties_and_nan() {
    let values = [3.0, 3.0, -1.0, f32::NAN, 0.5, 3.0, f32::NAN, 2.0, -0.0, 0.0];
    let x = Tensor::from_fn([2, 3, 7, 9], |i| values[(i[0] * 7 + i[1] * 5 + i[2] * 3 + i[3]) % values.len()])
        .unwrap();
    let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    let spec = PoolSpec::<2>::new(2);
    let (fast, fast_at) = max_pool_with_indices(&x, &spec).unwrap();
    let (slow, slow_at) = reference::max_pool_with_indices(&x, &spec).unwrap();
    assert_eq!((bits(&fast), fast_at), (bits(&slow), slow_at));
    let x3 = x.reshape(&[2, 1, 3, 7, 9]).unwrap();
    let spec3 = PoolSpec::<3>::new([1, 2, 2]);
    let (fast, fast_at) = max_pool_with_indices(&x3, &spec3).unwrap();
    let (slow, slow_at) = reference::max_pool_with_indices(&x3, &spec3).unwrap();
    assert_eq!((bits(&fast), fast_at), (bits(&slow), slow_at));
}
