//! Convolution tests: real layers' geometry, every error branch, the fast kernels against the
//! reference over random shapes, and thread-count independence.

use proptest::prelude::*;

use super::*;

fn seeded(shape: &[usize], seed: u64) -> Tensor {
    // A small LCG keeps the tests free of an RNG dependency and reproducible across platforms.
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    Tensor::from_fn(shape.to_vec(), |_| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    })
    .unwrap()
}

/// |fast − reference| within f32 rounding of a sum of `terms` products of values in [−1, 1].
fn assert_close(fast: &Tensor, reference: &Tensor, terms: usize, context: &str) {
    assert_eq!(fast.shape(), reference.shape(), "{context}");
    let tolerance = 1e-6 * (terms as f32 + 1.0) * 4.0;
    for (i, (a, b)) in fast.data().iter().zip(reference.data()).enumerate() {
        assert!((a - b).abs() <= tolerance, "{context}: element {i}: fast {a} vs reference {b}");
    }
}

/// A named layer: input shape, weight shape, spec, expected output shape.
type LayerRow = (&'static str, [usize; 4], [usize; 4], ConvSpec<2>, [usize; 4]);

#[test]
fn real_layer_output_shapes() {
    let rows: [LayerRow; 5] = [
        (
            "alexnet conv1",
            [1, 3, 224, 224],
            [64, 3, 11, 11],
            ConvSpec::new().stride(4).padding(2),
            [1, 64, 55, 55],
        ),
        (
            "resnet stem",
            [2, 3, 224, 224],
            [64, 3, 7, 7],
            ConvSpec::new().stride(2).padding(3),
            [2, 64, 112, 112],
        ),
        ("vgg 3x3", [1, 64, 224, 224], [64, 64, 3, 3], ConvSpec::new().padding(1), [1, 64, 224, 224]),
        ("lenet c1", [1, 1, 32, 32], [6, 1, 5, 5], ConvSpec::new(), [1, 6, 28, 28]),
        ("googlenet 1x1", [1, 192, 28, 28], [64, 192, 1, 1], ConvSpec::new(), [1, 64, 28, 28]),
    ];
    for (name, x, w, spec, y) in rows {
        assert_eq!(spec.output_shape(&x, &w).unwrap().dims(), &y, "{name}");
    }
    let same = ConvSpec::<1>::new().padding(Padding::Same);
    assert_eq!(same.output_shape(&[1, 1, 12], &[1, 1, 4]).unwrap().dims(), &[1, 1, 12]);
    let conv3d = ConvSpec::<3>::new().stride([1, 2, 2]).padding(1);
    assert_eq!(conv3d.output_shape(&[2, 3, 8, 16, 16], &[4, 3, 3, 3, 3]).unwrap().dims(), &[2, 4, 8, 8, 8]);
}

#[test]
fn kernel_larger_than_padded_input() {
    let err =
        ConvSpec::<2>::new().stride(4).padding(2).output_shape(&[1, 3, 6, 6], &[96, 3, 11, 11]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d: kernel 11 does not fit in height 6 padded to 10: \
         O = ⌊(I + 2P − D·(F−1) − 1)/S⌋ + 1 = ⌊(6 + 2·2 − 1·(11−1) − 1)/4⌋ + 1 < 1 \
         (input [1, 3, 6, 6], weight [96, 3, 11, 11])"
    );
}

#[test]
fn channel_mismatch_names_both_numbers() {
    let err = ConvSpec::<2>::new().output_shape(&[1, 1, 28, 28], &[6, 3, 5, 5]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d: the filters span 3 channels (weight [6, 3, 5, 5], groups 1) so the input needs 3 \
         channels, but it has 1 (input [1, 1, 28, 28])"
    );
}

#[test]
fn groups_must_divide_channels() {
    let err = ConvSpec::<2>::new().groups(4).output_shape(&[1, 6, 8, 8], &[8, 1, 3, 3]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d: groups 4 must divide both the input channels (6) and the output channels (8); \
         input [1, 6, 8, 8], weight [8, 1, 3, 3]"
    );
    let err = ConvSpec::<2>::new().groups(0).output_shape(&[1, 6, 8, 8], &[8, 1, 3, 3]).unwrap_err();
    assert_eq!(err.to_string(), "conv2d: invalid argument: groups must be at least 1, got 0");
}

#[test]
fn wrong_rank_names_the_layout() {
    let err = ConvSpec::<2>::new().output_shape(&[3, 28, 28], &[6, 3, 5, 5]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d: input must be a 4-d tensor laid out as NCHW, got shape [3, 28, 28] (rank 3)"
    );
    let err = ConvSpec::<1>::new().output_shape(&[1, 3, 28], &[6, 3]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv1d: weight must be a 3-d tensor [C_out, C_in/groups, W], got shape [6, 3]"
    );
}

#[test]
fn zero_stride_and_dilation_are_invalid() {
    let err = ConvSpec::<2>::new().stride([1, 0]).output_shape(&[1, 1, 8, 8], &[1, 1, 3, 3]).unwrap_err();
    assert_eq!(err.to_string(), "conv2d: invalid argument: stride must be at least 1 along width, got 0");
    assert!(ConvSpec::<3>::new().dilation(0).output_shape(&[1, 1, 8, 8, 8], &[1, 1, 3, 3, 3]).is_err());
}

#[test]
fn bias_must_have_one_value_per_filter() {
    let x = seeded(&[1, 2, 5, 5], 1);
    let w = seeded(&[4, 2, 3, 3], 2);
    let b = seeded(&[3], 3);
    let err = conv2d(&x, &w, Some(&b), &ConvSpec::new()).unwrap_err();
    assert_eq!(err.to_string(), "conv2d: bias must have shape [4] (one per filter), got [3]");
}

#[test]
fn data_length_must_match_shape() {
    assert!(Tensor::new([1, 1, 4], vec![0.0; 3]).is_err());
}

/// The lecture's noisy-sensor example, s_t = Σ_a x_{t−a} w_{−a}: a true convolution with the
/// kernel k_a = w_{−a}, or equally a cross-correlation with the taps stored as w_{−6} .. w_0.
#[test]
fn lecture_sensor_example() {
    let x =
        Tensor::new([1, 1, 12], vec![1.0, 1.1, 1.2, 1.4, 1.7, 1.8, 1.9, 2.1, 2.2, 2.4, 2.5, 2.7]).unwrap();
    let w_lecture_order = vec![0.01, 0.01, 0.02, 0.02, 0.04, 0.4, 0.5];
    let k: Vec<f32> = w_lecture_order.iter().rev().copied().collect();
    let expected = [1.811, 1.967, 2.112, 2.269, 2.413, 2.569];
    let convolution = ConvSpec::<1>::new().mode(KernelMode::Convolution);
    let s = conv1d(&x, &Tensor::new([1, 1, 7], k).unwrap(), None, &convolution).unwrap();
    let correlated =
        conv1d(&x, &Tensor::new([1, 1, 7], w_lecture_order).unwrap(), None, &ConvSpec::new()).unwrap();
    for result in [s, correlated] {
        for (got, want) in result.data().iter().zip(expected) {
            assert!((got - want).abs() < 1e-5, "{:?}", result.data());
        }
    }
}

#[test]
fn flipped_kernel_mode_equals_correlation_with_reversed_taps() {
    let x = seeded(&[2, 3, 7, 6], 11);
    let w = seeded(&[4, 3, 3, 2], 12);
    let reversed = Tensor::new(w.shape().clone(), flip_kernel(w.data(), 6)).unwrap();
    let spec = ConvSpec::<2>::new().padding(1);
    let a = conv2d(&x, &w, None, &spec.mode(KernelMode::Convolution)).unwrap();
    let b = conv2d(&x, &reversed, None, &spec).unwrap();
    assert_eq!(a, b);
}

#[test]
fn hand_computed_2d_example() {
    // The lecture's toy example: a 3×4 input, a 2×2 kernel w x / y z.
    let x = Tensor::new([1, 1, 3, 4], (1..=12).map(|v| v as f32).collect()).unwrap();
    let w = Tensor::new([1, 1, 2, 2], vec![1.0, 10.0, 100.0, 1000.0]).unwrap();
    let y = conv2d(&x, &w, Some(&Tensor::new([1], vec![0.5]).unwrap()), &ConvSpec::new()).unwrap();
    // a·w + b·x + e·y + f·z with a=1, b=2, e=5, f=6 ...
    assert_eq!(y.dims(), &[1, 1, 2, 3]);
    assert_eq!(y.data(), &[6521.5, 7632.5, 8743.5, 10965.5, 12076.5, 13187.5]);
}

#[test]
fn empty_batch_and_zero_channels() {
    let y = conv2d(&seeded(&[0, 2, 5, 5], 1), &seeded(&[3, 2, 3, 3], 2), None, &ConvSpec::new()).unwrap();
    assert_eq!(y.dims(), &[0, 3, 3, 3]);
    let b = Tensor::new([3], vec![1.0, 2.0, 3.0]).unwrap();
    let y = conv2d(&seeded(&[1, 0, 5, 5], 1), &seeded(&[3, 0, 3, 3], 2), Some(&b), &ConvSpec::new()).unwrap();
    assert_eq!(y.data()[..9], [1.0; 9]);
    // 1×1 with no input channels on a map of several tiles (the in-place path must not engage).
    let y =
        conv2d(&seeded(&[1, 0, 20, 20], 1), &seeded(&[3, 0, 1, 1], 2), Some(&b), &ConvSpec::new()).unwrap();
    assert_eq!(y.dims(), &[1, 3, 20, 20]);
    assert!(y.data()[400..800].iter().all(|&v| v == 2.0));
    // A zero-width input padded to a one-column output, strided, with enough filters to split
    // them across tasks (the shared im2col tile of an empty plane): every tap reads padding.
    let b8 = Tensor::new([8], (0..8).map(|k| k as f32).collect()).unwrap();
    let spec = ConvSpec::new().stride([2, 2]).padding([1, 1]);
    let y = conv2d(&seeded(&[1, 1, 0, 4], 1), &seeded(&[8, 1, 1, 1], 2), Some(&b8), &spec).unwrap();
    assert_eq!(y.dims(), &[1, 8, 1, 3]);
    assert!(y.data().chunks(3).enumerate().all(|(k, plane)| plane.iter().all(|&v| v == k as f32)));
    // No input channels on the per-image paths, whole rows and tiles, strided or not, after a
    // convolution that left its numbers in the workers' scratch buffers: the bias alone.
    let b3 = Tensor::new([3], vec![-1.0, 2.0, 3.0]).unwrap();
    let busy = seeded(&[16, 3, 16, 16], 5);
    conv2d(&busy, &seeded(&[3, 3, 3, 3], 6), None, &ConvSpec::new().padding(1)).unwrap();
    for (xs, spec) in [
        ([16, 0, 16, 16], ConvSpec::<2>::new().padding(1)),
        ([16, 0, 9, 9], ConvSpec::new().padding(1)),
        ([16, 0, 9, 9], ConvSpec::new().stride(2)),
        ([1, 0, 9, 9], ConvSpec::new().stride(2)),
    ] {
        let (x, w) = (seeded(&xs, 1), seeded(&[3, 0, 3, 3], 2));
        for relu in [false, true] {
            let y = if relu { conv_relu(&x, &w, Some(&b3), &spec) } else { conv(&x, &w, Some(&b3), &spec) };
            let y = y.unwrap();
            let plane = y.dims()[2] * y.dims()[3];
            for (i, &v) in y.data().iter().enumerate() {
                let b = b3.data()[i / plane % 3];
                assert_eq!(v, if relu { b.max(0.0) } else { b }, "{xs:?} {spec:?} relu {relu} element {i}");
            }
        }
    }
}

/// 1×1 layers that read their input in place: several tiles per image whose last one ends in a
/// partial strip (so the last image's tail is copied), a batch, and groups.
#[test]
fn pointwise_in_place_matches_the_reference() {
    for (batch, groups, cin_g, cout_g, side) in
        [(1, 1, 5, 7, 21), (2, 1, 3, 13, 17), (3, 2, 4, 6, 19), (1, 3, 2, 5, 32)]
    {
        let x = seeded(&[batch, groups * cin_g, side, side], 3);
        let w = seeded(&[groups * cout_g, cin_g, 1, 1], 4);
        let spec = ConvSpec::new().groups(groups);
        let fast = conv2d(&x, &w, None, &spec).unwrap();
        let expected = conv_reference(&x, &w, None, &spec).unwrap();
        assert_close(&fast, &expected, cin_g, &format!("{batch}×{groups}×{cin_g}→{cout_g} on {side}²"));
    }
}

/// Case for the property tests: a random valid convolution.
#[derive(Debug, Clone)]
struct Case {
    rank: usize,
    batch: usize,
    groups: usize,
    cin_g: usize,
    cout_g: usize,
    input: [usize; 3],
    kernel: [usize; 3],
    stride: [usize; 3],
    dilation: [usize; 3],
    pad_begin: [usize; 3],
    pad_end: [usize; 3],
    bias: bool,
}

fn case() -> impl Strategy<Value = Case> {
    (1usize..=3, 1usize..=3, 1usize..=3, 1usize..=4, 1usize..=4, any::<bool>()).prop_flat_map(
        |(rank, batch, groups, cin_g, cout_g, bias)| {
            let axis = (1usize..=4, 1usize..=3, 1usize..=2, 0usize..=2, 0usize..=2, 0usize..=6);
            proptest::collection::vec(axis, rank).prop_map(move |axes| {
                let mut c = Case {
                    rank,
                    batch,
                    groups,
                    cin_g,
                    cout_g,
                    input: [1; 3],
                    kernel: [1; 3],
                    stride: [1; 3],
                    dilation: [1; 3],
                    pad_begin: [0; 3],
                    pad_end: [0; 3],
                    bias,
                };
                for (i, (k, s, d, pb, pe, extra)) in axes.into_iter().enumerate() {
                    // Input at least as large as the dilated kernel, so every case is valid.
                    c.input[i] = d * (k - 1) + 1 + extra;
                    c.kernel[i] = k;
                    c.stride[i] = s;
                    c.dilation[i] = d;
                    c.pad_begin[i] = pb;
                    c.pad_end[i] = pe;
                }
                c
            })
        },
    )
}

fn run_case<const N: usize>(c: &Case, seed: u64) {
    let r = c.rank;
    let mut xs = vec![c.batch, c.groups * c.cin_g];
    xs.extend(&c.input[..r]);
    let mut ws = vec![c.groups * c.cout_g, c.cin_g];
    ws.extend(&c.kernel[..r]);
    let x = seeded(&xs, seed);
    let w = seeded(&ws, seed + 1);
    let b = c.bias.then(|| seeded(&[c.groups * c.cout_g], seed + 2));
    let spec = ConvSpec::<N> {
        stride: c.stride[..N].try_into().unwrap(),
        padding: Padding::asymmetric(
            c.pad_begin[..N].try_into().unwrap(),
            c.pad_end[..N].try_into().unwrap(),
        ),
        dilation: c.dilation[..N].try_into().unwrap(),
        groups: c.groups,
        mode: KernelMode::CrossCorrelation,
    };
    let fast = conv(&x, &w, b.as_ref(), &spec).unwrap();
    let reference = conv_reference(&x, &w, b.as_ref(), &spec).unwrap();
    let terms = c.cin_g * c.kernel.iter().product::<usize>();
    assert_close(&fast, &reference, terms, &format!("{c:?}"));
    // The fused epilogue is the same sums with ReLU applied on the way out.
    let fused = conv_relu(&x, &w, b.as_ref(), &spec).unwrap();
    assert_eq!(fused, fast.relu(), "conv_relu {c:?}");
    // Filters packed beforehand give the same outputs, bit for bit.
    let packed = PackedFilters::new(&w, &spec).unwrap();
    assert_eq!(packed.weight_shape(), w.shape());
    assert_eq!(conv_prepacked(&x, &packed, b.as_ref(), &spec, false).unwrap(), fast, "conv_prepacked {c:?}");
    assert_eq!(
        conv_prepacked(&x, &packed, b.as_ref(), &spec, true).unwrap(),
        fused,
        "conv_prepacked relu {c:?}"
    );
}

#[test]
fn prepacked_filters_are_checked_against_the_call() {
    let x = seeded(&[1, 4, 8, 8], 1);
    let w = seeded(&[6, 2, 3, 3], 2);
    let spec = ConvSpec::<2>::new().groups(2);
    let packed = PackedFilters::new(&w, &spec).unwrap();
    let err = conv_prepacked(&x, &packed, None, &ConvSpec::<2>::new(), false).unwrap_err().to_string();
    assert!(err.contains("packed for groups=2 and CrossCorrelation, the convolution has groups=1"), "{err}");
    // The input's channels are checked against the packed weights' shape, as conv checks them.
    let err = conv_prepacked(&seeded(&[1, 6, 8, 8], 3), &packed, None, &spec, false).unwrap_err().to_string();
    assert_eq!(err, conv(&seeded(&[1, 6, 8, 8], 3), &w, None, &spec).unwrap_err().to_string());
    // A weight of the wrong rank, or channels that the groups do not divide, is refused.
    assert!(PackedFilters::new(&seeded(&[6, 2, 3], 4), &spec).is_err());
    assert!(PackedFilters::new(&seeded(&[5, 2, 3, 3], 4), &spec).is_err());
}

/// Winograd's F(2×2, 3×3) against the reference on any 3×3 stride-1 shape (called directly, so
/// small channel counts and maps are covered too), with both micro-kernels and both epilogues.
fn run_winograd_case(
    batch: usize,
    cin: usize,
    cout: usize,
    hw: [usize; 2],
    pads: [usize; 4],
    bias: bool,
    seed: u64,
) {
    let spec = ConvSpec::<2>::new().padding(Padding::asymmetric([pads[0], pads[1]], [pads[2], pads[3]]));
    let (xs, ws) = ([batch, cin, hw[0], hw[1]], [cout, cin, 3, 3]);
    let g = spec.geometry(&xs, &ws).unwrap();
    let (x, w) = (seeded(&xs, seed), seeded(&ws, seed + 1));
    let b = bias.then(|| seeded(&[cout], seed + 2));
    let b_data = b.as_ref().map(Tensor::data);
    let filters = winograd::Filters::new(w.data(), cout, cin);
    let fast = winograd::forward(&g, x.data(), &filters, b_data, fast::Epilogue::Bias, false);
    let fast = Tensor::from_parts(g.output_shape(), fast);
    let reference = conv_reference(&x, &w, b.as_ref(), &spec).unwrap();
    let context = format!("Winograd {xs:?} {ws:?} pads {pads:?}");
    assert_close(&fast, &reference, cin * 9, &context);
    let portable = winograd::forward(&g, x.data(), &filters, b_data, fast::Epilogue::Bias, true);
    assert_eq!(portable, fast.data(), "{context}: portable micro-kernel");
    let relu = winograd::forward(&g, x.data(), &filters, b_data, fast::Epilogue::BiasRelu, false);
    let relu_portable = winograd::forward(&g, x.data(), &filters, b_data, fast::Epilogue::BiasRelu, true);
    assert_eq!(relu, relu_portable, "{context}: portable ReLU epilogue");
    assert_eq!(Tensor::from_parts(g.output_shape(), relu), fast.relu(), "{context}: ReLU epilogue");
}

/// NaN and −0 go through the AVX2 and portable transforms and epilogues alike, bit for bit, and
/// the ReLU keeps a NaN as PyTorch's does.
#[test]
fn winograd_keeps_nan_and_negative_zero_as_the_portable_path() {
    let spec = ConvSpec::<2>::new().padding(1);
    let (xs, ws) = ([1, 32, 12, 12], [16, 32, 3, 3]);
    let g = spec.geometry(&xs, &ws).unwrap();
    let mut x = seeded(&xs, 5).data().to_vec();
    x[100] = f32::NAN;
    x[2000] = -0.0;
    // And a whole channel of −0.
    x[144 * 31..].iter_mut().for_each(|v| *v = -0.0);
    let w = seeded(&ws, 6);
    let filters = winograd::Filters::new(w.data(), 16, 32);
    for epilogue in [fast::Epilogue::Bias, fast::Epilogue::BiasRelu] {
        let avx = winograd::forward(&g, &x, &filters, None, epilogue, false);
        let portable = winograd::forward(&g, &x, &filters, None, epilogue, true);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&avx), bits(&portable));
        assert!(avx.iter().any(|v| v.is_nan()), "the NaN input reaches the outputs around it");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn winograd_matches_reference(
        batch in 1usize..=3,
        cin in 1usize..=40,
        cout in 1usize..=40,
        hw in (1usize..=20, 1usize..=20),
        pads in (0usize..=2, 0usize..=2, 0usize..=2, 0usize..=2),
        bias in any::<bool>(),
        seed in 0u64..1000,
    ) {
        let pads = [pads.0, pads.1, pads.2, pads.3];
        // At least one output: the padded input must reach the 3×3 kernel.
        prop_assume!(hw.0 + pads[0] + pads[2] >= 3 && hw.1 + pads[1] + pads[3] >= 3);
        run_winograd_case(batch, cin, cout, [hw.0, hw.1], pads, bias, seed);
    }
}

#[test]
fn winograd_on_resnet_sized_layers() {
    run_winograd_case(2, 64, 64, [56, 56], [1; 4], true, 7);
    run_winograd_case(1, 130, 70, [28, 28], [1; 4], false, 8);
}

/// The layers the other tests run through Winograd's F(2×2, 3×3) do go through it (and the
/// ones kept off it do not), so that a change to the choice cannot quietly drop the coverage.
#[test]
fn winograd_is_chosen_where_the_tests_expect() {
    let geometry = |xs: [usize; 4], ws: [usize; 4], pads: ([usize; 2], [usize; 2])| {
        ConvSpec::<2>::new().padding(Padding::asymmetric(pads.0, pads.1)).geometry(&xs, &ws).unwrap()
    };
    let one = ([1, 1], [1, 1]);
    for (xs, ws, pads) in [
        ([2, 64, 30, 30], [64, 64, 3, 3], one),
        ([6, 64, 15, 29], [65, 64, 3, 3], ([2, 0], [1, 2])),
        ([19, 64, 14, 14], [64, 64, 3, 3], one),
        ([1, 64, 32, 32], [64, 64, 3, 3], one),
        ([16, 64, 56, 56], [64, 64, 3, 3], one),
    ] {
        assert!(winograd::chosen(&geometry(xs, ws, pads)), "{xs:?} {ws:?}");
    }
    for (xs, ws) in [
        ([128, 16, 32, 32], [16, 16, 3, 3]),
        ([128, 32, 16, 16], [32, 32, 3, 3]),
        ([16, 512, 7, 7], [512, 512, 3, 3]),
        ([1, 256, 14, 14], [256, 256, 3, 3]),
    ] {
        assert!(!winograd::chosen(&geometry(xs, ws, one)), "{xs:?} {ws:?}");
    }
}

/// Filters packed for an input use the algorithm `conv` uses there, and say when a new input
/// needs another packing; Winograd filters refuse a convolution they cannot compute.
#[test]
fn filters_packed_for_an_input_follow_the_algorithm() {
    let spec = ConvSpec::<2>::new().padding(1);
    let w = seeded(&[64, 64, 3, 3], 1);
    let (large, small) = ([8, 64, 20, 20], [1, 64, 6, 6]);
    let x = seeded(&large, 2);
    let g = spec.geometry(&large, w.dims()).unwrap();
    assert!(winograd::chosen(&g) && !winograd::chosen(&spec.geometry(&small, w.dims()).unwrap()));
    let packed = PackedFilters::for_input(&w, &spec, &large).unwrap();
    assert!(packed.suits(&spec, &large) && !packed.suits(&spec, &small));
    assert!(!PackedFilters::new(&w, &spec).unwrap().suits(&spec, &large));
    assert_eq!(conv_prepacked(&x, &packed, None, &spec, false).unwrap(), conv(&x, &w, None, &spec).unwrap());
    assert_eq!(
        conv_prepacked(&x, &packed, None, &spec, true).unwrap(),
        conv_relu(&x, &w, None, &spec).unwrap()
    );
    // On a small input the packing still computes the right numbers, through Winograd.
    let x_small = seeded(&small, 3);
    let y = conv_prepacked(&x_small, &packed, None, &spec, false).unwrap();
    assert_close(&y, &conv_reference(&x_small, &w, None, &spec).unwrap(), 64 * 9, "small input");
    // An empty batch gives the empty output conv gives.
    let empty = Tensor::zeros([0, 64, 20, 20]).unwrap();
    assert_eq!(
        conv_prepacked(&empty, &packed, None, &spec, false).unwrap(),
        conv(&empty, &w, None, &spec).unwrap()
    );
    let strided = ConvSpec::<2>::new().padding(1).stride(2);
    let err = conv_prepacked(&x, &packed, None, &strided, false).unwrap_err().to_string();
    assert!(err.contains("Winograd") && err.contains("PackedFilters::new"), "{err}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn fast_matches_reference(c in case(), seed in 0u64..1000) {
        match c.rank {
            1 => run_case::<1>(&c, seed),
            2 => run_case::<2>(&c, seed),
            _ => run_case::<3>(&c, seed),
        }
    }
}

/// Shapes large enough to split into many tiles, with pointwise, strided and grouped cases.
#[test]
fn fast_matches_reference_on_multi_tile_layers() {
    let cases: [([usize; 4], [usize; 4], ConvSpec<2>); 7] = [
        ([2, 8, 40, 40], [16, 8, 3, 3], ConvSpec::new().padding(1)),
        // Through Winograd's F(2×2, 3×3): even and odd output sizes, uneven padding.
        ([2, 64, 30, 30], [64, 64, 3, 3], ConvSpec::new().padding(1)),
        ([6, 64, 15, 29], [65, 64, 3, 3], ConvSpec::new().padding(Padding::asymmetric([2, 0], [1, 2]))),
        ([1, 32, 20, 20], [8, 32, 1, 1], ConvSpec::new()),
        ([1, 32, 20, 20], [8, 32, 1, 1], ConvSpec::new().stride(2)),
        ([2, 12, 33, 31], [12, 1, 5, 5], ConvSpec::new().groups(12).padding([2, 1]).stride([1, 2])),
        ([1, 4, 64, 64], [6, 2, 3, 3], ConvSpec::new().groups(2).dilation(2).padding(Padding::Same)),
    ];
    for (i, (xs, ws, spec)) in cases.into_iter().enumerate() {
        let (x, w) = (seeded(&xs, i as u64), seeded(&ws, 100 + i as u64));
        let b = seeded(&[ws[0]], 200);
        let fast = conv2d(&x, &w, Some(&b), &spec).unwrap();
        let reference = conv_reference(&x, &w, Some(&b), &spec).unwrap();
        assert_close(&fast, &reference, ws[1] * ws[2] * ws[3], &format!("case {i}: {xs:?} {ws:?} {spec:?}"));
        assert_eq!(conv_relu(&x, &w, Some(&b), &spec).unwrap(), fast.relu(), "conv_relu case {i}");
    }
}

#[test]
fn one_thread_and_many_threads_agree_bitwise() {
    let cases: [([usize; 4], [usize; 4], ConvSpec<2>); 8] = [
        ([4, 8, 30, 30], [16, 8, 3, 3], ConvSpec::new().padding(1)),
        // Winograd, with many tile blocks and with two (the filters then split too).
        ([19, 64, 14, 14], [64, 64, 3, 3], ConvSpec::new().padding(1)),
        ([1, 64, 32, 32], [64, 64, 3, 3], ConvSpec::new().padding(1)),
        ([37, 6, 14, 14], [16, 6, 5, 5], ConvSpec::new()),
        ([21, 1, 28, 28], [6, 1, 5, 5], ConvSpec::new().padding(2)),
        // A single image with few tiles: the GEMM itself is spread over the threads.
        ([1, 64, 7, 7], [64, 64, 3, 3], ConvSpec::new().padding(1)),
        ([1, 256, 14, 14], [64, 256, 1, 1], ConvSpec::new()),
        ([3, 6, 17, 17], [6, 1, 3, 3], ConvSpec::new().groups(6).stride(2)),
    ];
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let many = rayon::ThreadPoolBuilder::new().num_threads(4).build().unwrap();
    for (i, (xs, ws, spec)) in cases.into_iter().enumerate() {
        let (x, w) = (seeded(&xs, i as u64), seeded(&ws, 50 + i as u64));
        let a = one.install(|| conv2d(&x, &w, None, &spec).unwrap());
        let b = many.install(|| conv2d(&x, &w, None, &spec).unwrap());
        assert!(a.data().iter().zip(b.data()).all(|(p, q)| p.to_bits() == q.to_bits()), "case {i}");
    }
}

/// Layers whose batch keeps every thread busy pad each image inside its task and, where
/// output rows are whole strips, write the GEMM straight into the output; with more threads than
/// images the whole batch is padded up front and copied out of tiles. Both give the same bits.
#[test]
fn per_image_padding_and_direct_rows_agree_with_the_batch_path() {
    let cases: [(Vec<usize>, Vec<usize>, ConvSpec<3>); 10] = [
        // Rows of two strips (ResNet-20's first stage) and of one, written straight out.
        (vec![8, 5, 1, 32, 32], vec![7, 5, 1, 3, 3], ConvSpec::new().padding([0, 1, 1])),
        (vec![9, 6, 1, 16, 16], vec![14, 3, 1, 3, 3], ConvSpec::new().padding([0, 1, 1]).groups(2)),
        // Whole-strip rows with asymmetric padding, a dilation and a depth axis.
        (
            vec![8, 3, 3, 20, 17],
            vec![4, 3, 2, 3, 3],
            ConvSpec::new().padding(Padding::asymmetric([1, 0, 1], [0, 1, 0])),
        ),
        (vec![8, 2, 1, 20, 20], vec![5, 2, 1, 3, 3], ConvSpec::new().dilation([1, 2, 2])),
        // Rows that are not whole strips: tiles, copied out.
        (vec![8, 4, 1, 14, 14], vec![6, 4, 1, 3, 3], ConvSpec::new().padding([0, 1, 1])),
        (vec![10, 3, 4, 9, 11], vec![8, 3, 3, 3, 3], ConvSpec::new().padding(1)),
        (vec![8, 6, 1, 12, 12], vec![16, 6, 1, 5, 5], ConvSpec::new()),
        // Strided, through the stride's phases: ResNet-20's stride-2 3×3 layer (rows of one
        // strip), a 3D one and an 11×11 stride-4 one as AlexNet's stem.
        (vec![8, 4, 1, 32, 32], vec![6, 4, 1, 3, 3], ConvSpec::new().stride([1, 2, 2]).padding([0, 1, 1])),
        (vec![8, 3, 9, 13, 15], vec![5, 3, 3, 3, 3], ConvSpec::new().stride(2).padding(1)),
        (vec![8, 2, 1, 35, 39], vec![4, 2, 1, 11, 11], ConvSpec::new().stride([1, 4, 4]).padding([0, 2, 2])),
    ];
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let many = rayon::ThreadPoolBuilder::new().num_threads(8).build().unwrap();
    let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    // Sums that round to −0 (each product underflows below the smallest subnormal): both paths
    // write +0, as adding a bias of +0 does.
    let (tiny, negative_tiny) = (Tensor::full([8, 1, 16, 16], 1e-25), Tensor::full([1, 1, 3, 3], -1e-25));
    let spec = ConvSpec::<2>::new().padding(1);
    let by_image =
        one.install(|| conv2d(&tiny.clone().unwrap(), &negative_tiny.clone().unwrap(), None, &spec).unwrap());
    let whole_batch = many.install(|| conv2d(&tiny.unwrap(), &negative_tiny.unwrap(), None, &spec).unwrap());
    assert_eq!(bits(&by_image), bits(&whole_batch), "sums of −0");
    for (i, (xs, ws, spec)) in cases.into_iter().enumerate() {
        let (x, w) = (seeded(&xs, 300 + i as u64), seeded(&ws, 400 + i as u64));
        let b = seeded(&[ws[0]], 500 + i as u64);
        let no_bias = (
            one.install(|| conv(&x, &w, None, &spec).unwrap()),
            many.install(|| conv(&x, &w, None, &spec).unwrap()),
        );
        assert_eq!(bits(&no_bias.0), bits(&no_bias.1), "case {i} without a bias");
        let g = spec.geometry(x.dims(), w.dims()).unwrap();
        // One thread takes the per-image path, eight the whole-batch one (fewer than 32 images).
        assert!(g.batch * g.groups >= 4 && g.batch * g.groups < 32, "case {i}");
        let reference = conv_reference(&x, &w, Some(&b), &spec).unwrap();
        for relu in [false, true] {
            let run =
                || if relu { conv_relu(&x, &w, Some(&b), &spec) } else { conv(&x, &w, Some(&b), &spec) };
            let by_image = one.install(|| run().unwrap());
            let whole_batch = many.install(|| run().unwrap());
            let same =
                by_image.data().iter().zip(whole_batch.data()).all(|(p, q)| p.to_bits() == q.to_bits());
            assert!(same, "case {i}, relu {relu}");
            let expected = if relu { reference.relu() } else { reference.clone() };
            assert_close(
                &by_image,
                &expected,
                ws[1] * ws[2] * ws[3] * ws[4],
                &format!("case {i}, relu {relu}"),
            );
        }
    }
}

/// The AVX2 micro-kernel and the portable one run the same FMAs in the same order.
#[test]
fn simd_and_portable_kernels_agree_bitwise() {
    let cases: [([usize; 4], [usize; 4], ConvSpec<2>); 3] = [
        ([2, 5, 19, 23], [13, 5, 3, 3], ConvSpec::new().padding(1)),
        ([1, 8, 20, 20], [7, 8, 1, 1], ConvSpec::new()),
        ([2, 4, 17, 17], [6, 2, 3, 3], ConvSpec::new().groups(2).stride(2).padding([0, 1])),
    ];
    for (i, (xs, ws, spec)) in cases.into_iter().enumerate() {
        let (x, w) = (seeded(&xs, 70 + i as u64), seeded(&ws, 80 + i as u64));
        let b = seeded(&[ws[0]], 90);
        let g = spec.geometry(x.dims(), w.dims()).unwrap();
        let simd = fast::forward(&g, x.data(), w.data(), Some(b.data()));
        let portable = fast::forward_portable(&g, x.data(), w.data(), Some(b.data()));
        assert!(simd.iter().zip(&portable).all(|(p, q)| p.to_bits() == q.to_bits()), "case {i}");
    }
}

// ---- Backward -------------------------------------------------------------------------------

/// Fast against reference for all three gradients. `dx` sums `C_out/G·|F|` products, `dw` and
/// `db` sum `N·P` of them; the tolerance follows the longest sum.
fn assert_grads_close(fast: &ConvGrads, reference: &ConvGrads, terms: usize, context: &str) {
    assert_close(&fast.input, &reference.input, terms, &format!("{context}: dx"));
    assert_close(&fast.weight, &reference.weight, terms, &format!("{context}: dw"));
    assert_close(&fast.bias, &reference.bias, terms, &format!("{context}: db"));
}

fn spec_of<const N: usize>(c: &Case, mode: KernelMode) -> ConvSpec<N> {
    ConvSpec::<N> {
        stride: c.stride[..N].try_into().unwrap(),
        padding: Padding::asymmetric(
            c.pad_begin[..N].try_into().unwrap(),
            c.pad_end[..N].try_into().unwrap(),
        ),
        dilation: c.dilation[..N].try_into().unwrap(),
        groups: c.groups,
        mode,
    }
}

fn run_backward_case<const N: usize>(c: &Case, mode: KernelMode, seed: u64) {
    let mut xs = vec![c.batch, c.groups * c.cin_g];
    xs.extend(&c.input[..N]);
    let mut ws = vec![c.groups * c.cout_g, c.cin_g];
    ws.extend(&c.kernel[..N]);
    let spec = spec_of::<N>(c, mode);
    let (x, w) = (seeded(&xs, seed), seeded(&ws, seed + 1));
    let dy = seeded(spec.output_shape(&xs, &ws).unwrap().dims(), seed + 2);
    let fast = conv_backward(&x, &w, &dy, &spec).unwrap();
    let reference = conv_backward_reference(&x, &w, &dy, &spec).unwrap();
    let terms = (c.cout_g * c.kernel.iter().product::<usize>()).max(dy.numel());
    assert_grads_close(&fast, &reference, terms, &format!("{c:?} {mode:?}"));
    // Without dx, the same parameter gradients, bit for bit.
    let params = conv_backward_params(&x, &w, &dy, &spec).unwrap();
    assert_eq!((&params.weight, &params.bias), (&fast.weight, &fast.bias), "{c:?} {mode:?}");
    // Without dw, the same input gradient, bit for bit.
    let dx = conv_backward_input(&xs, &w, &dy, &spec).unwrap();
    assert_eq!(dx, fast.input, "{c:?} {mode:?}");
    // Each choice of wanted gradients: exactly those, bit for bit.
    for (input, bias) in [(false, false), (false, true), (true, false), (true, true)] {
        let some = conv_backward_wanted(&x, &w, &dy, &spec, ConvGradsWanted { input, bias }).unwrap();
        assert_eq!(some.input.as_ref(), input.then_some(&fast.input), "{c:?} {mode:?} input {input}");
        assert_eq!(some.weight, fast.weight, "{c:?} {mode:?}");
        assert_eq!(some.bias.as_ref(), bias.then_some(&fast.bias), "{c:?} {mode:?} bias {bias}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn fast_backward_matches_reference(c in case(), flip in any::<bool>(), seed in 0u64..1000) {
        let mode = if flip { KernelMode::Convolution } else { KernelMode::CrossCorrelation };
        match c.rank {
            1 => run_backward_case::<1>(&c, mode, seed),
            2 => run_backward_case::<2>(&c, mode, seed),
            _ => run_backward_case::<3>(&c, mode, seed),
        }
    }
}

/// Shapes with more positions than one backward tile (1024), so the sums over tiles and the
/// scatter of several tiles onto one image are exercised, with strided, grouped, depthwise and
/// 1×1 cases and enough channels to split the weight gradient into several tasks; and small maps
/// with batches that put several images into one GEMM, with a partial last batch of images.
#[test]
fn fast_backward_matches_reference_on_multi_tile_layers() {
    let cases: [([usize; 4], [usize; 4], ConvSpec<2>); 11] = [
        // ResNet-20's stride-2 layer: the weight gradient from the padded image's phases.
        ([10, 16, 32, 32], [32, 16, 3, 3], ConvSpec::new().stride(2).padding(1)),
        // ResNet-20's first stage on 28×28: the weight gradient from the padded image, 19 images
        // in chunks of 8, 898 padded positions (several KC blocks of the packed GEMM).
        ([19, 16, 28, 28], [16, 16, 3, 3], ConvSpec::new().padding(1)),
        ([9, 6, 11, 13], [10, 3, 3, 2], ConvSpec::new().groups(2).dilation([2, 1]).padding([3, 0])),
        // LeNet's conv2: 10×10 outputs, 10 images per GEMM, 37 = 3·10 + 7 images.
        ([37, 6, 14, 14], [16, 6, 5, 5], ConvSpec::new()),
        ([19, 4, 9, 9], [6, 2, 3, 3], ConvSpec::new().groups(2).padding(1)),
        ([2, 8, 40, 40], [16, 8, 3, 3], ConvSpec::new().padding(1)),
        // 20 channels of 3×3 taps: weight-gradient tasks of 8, 8 and 4 channels.
        ([2, 20, 34, 34], [6, 20, 3, 3], ConvSpec::new().padding(1)),
        ([1, 32, 36, 36], [8, 32, 1, 1], ConvSpec::new()),
        ([2, 12, 67, 31], [12, 1, 5, 5], ConvSpec::new().groups(12).padding([2, 1]).stride([1, 2])),
        ([1, 4, 70, 64], [6, 2, 3, 3], ConvSpec::new().groups(2).dilation(2).padding(Padding::Same)),
        ([2, 3, 75, 75], [4, 3, 11, 11], ConvSpec::new().stride(4).padding(2)),
    ];
    for (i, (xs, ws, spec)) in cases.into_iter().enumerate() {
        let (x, w) = (seeded(&xs, i as u64), seeded(&ws, 100 + i as u64));
        let dy = seeded(spec.output_shape(&xs, &ws).unwrap().dims(), 200 + i as u64);
        let fast = conv_backward(&x, &w, &dy, &spec).unwrap();
        let reference = conv_backward_reference(&x, &w, &dy, &spec).unwrap();
        let terms = (ws[0] / spec.groups * ws[2] * ws[3]).max(dy.numel());
        assert_grads_close(&fast, &reference, terms, &format!("case {i}: {xs:?} {ws:?} {spec:?}"));
    }
}

/// A strided layer's input gradient flows back from the real output positions only: the
/// positions its phases compute past each row's end must not carry an infinite filter's NaN
/// (infinity times their zero gradient) onto the input.
#[test]
fn strided_backward_input_keeps_non_finite_filters_where_they_reach() {
    let (xs, ws) = ([3, 2, 13, 12], [4, 2, 3, 3]);
    let spec = ConvSpec::<2>::new().stride(2).padding(1);
    let x = seeded(&xs, 7);
    let mut w = seeded(&ws, 8).data().to_vec();
    // Tap (1, 0) of the first filter: past a row's end it lands on the last input column.
    w[3] = f32::INFINITY;
    let w = Tensor::new(ws.to_vec(), w).unwrap();
    let dy = seeded(spec.output_shape(&xs, &ws).unwrap().dims(), 9);
    let fast = conv_backward(&x, &w, &dy, &spec).unwrap().input;
    let reference = conv_backward_reference(&x, &w, &dy, &spec).unwrap().input;
    assert!(fast.data().iter().any(|v| v.is_infinite()), "the infinite tap reaches the input");
    assert_same_where_non_finite(&fast, &reference, "dx");
}

/// Close where both are finite; elsewhere the same infinity, or both NaN.
fn assert_same_where_non_finite(fast: &Tensor, reference: &Tensor, context: &str) {
    for (i, (a, b)) in fast.data().iter().zip(reference.data()).enumerate() {
        let same = if a.is_finite() && b.is_finite() {
            (a - b).abs() <= 1e-4
        } else {
            a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
        };
        assert!(same, "{context}, element {i}: fast {a} vs reference {b}");
    }
}

/// The weight gradient through the phases sums over positions past each row's end too (with a
/// zero gradient); an infinite input there must not turn into a NaN the exact sum does not have.
#[test]
fn weight_gradient_of_non_finite_inputs_matches_the_reference() {
    let cases: [([usize; 4], [usize; 4], ConvSpec<2>, usize); 2] = [
        // Column 7 is never read (the output size's floor drops it) but the phases' sum reads it.
        ([1, 1, 2, 8], [1, 1, 1, 3], ConvSpec::new().stride([1, 2]), 7),
        ([9, 2, 6, 6], [3, 2, 3, 3], ConvSpec::new().padding(1), 40),
    ];
    for (i, (xs, ws, spec, at)) in cases.into_iter().enumerate() {
        let mut x = seeded(&xs, 20 + i as u64).data().to_vec();
        x[at] = f32::INFINITY;
        let x = Tensor::new(xs.to_vec(), x).unwrap();
        let w = seeded(&ws, 30 + i as u64);
        let dy = seeded(spec.output_shape(&xs, &ws).unwrap().dims(), 40 + i as u64);
        let fast = conv_backward(&x, &w, &dy, &spec).unwrap().weight;
        let reference = conv_backward_reference(&x, &w, &dy, &spec).unwrap().weight;
        assert_same_where_non_finite(&fast, &reference, &format!("case {i}, dw"));
    }
}

#[test]
fn backward_one_thread_and_two_threads_agree_bitwise() {
    let cases: [([usize; 4], [usize; 4], ConvSpec<2>); 8] = [
        ([4, 8, 30, 30], [16, 8, 3, 3], ConvSpec::new().padding(1)),
        // Winograd, with many tile blocks and with two (the filters then split too).
        ([19, 64, 14, 14], [64, 64, 3, 3], ConvSpec::new().padding(1)),
        ([1, 64, 32, 32], [64, 64, 3, 3], ConvSpec::new().padding(1)),
        ([37, 6, 14, 14], [16, 6, 5, 5], ConvSpec::new()),
        ([21, 1, 28, 28], [6, 1, 5, 5], ConvSpec::new().padding(2)),
        ([1, 64, 7, 7], [64, 64, 3, 3], ConvSpec::new().padding(1)),
        ([2, 16, 40, 40], [8, 16, 1, 1], ConvSpec::new()),
        ([3, 6, 17, 17], [6, 1, 3, 3], ConvSpec::new().groups(6).stride(2)),
    ];
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let two = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for (i, (xs, ws, spec)) in cases.into_iter().enumerate() {
        let (x, w) = (seeded(&xs, i as u64), seeded(&ws, 50 + i as u64));
        let dy = seeded(spec.output_shape(&xs, &ws).unwrap().dims(), 60 + i as u64);
        let a = one.install(|| conv_backward(&x, &w, &dy, &spec).unwrap());
        let b = two.install(|| conv_backward(&x, &w, &dy, &spec).unwrap());
        assert_eq!(bits(&a.input), bits(&b.input), "case {i}: dx");
        assert_eq!(bits(&a.weight), bits(&b.weight), "case {i}: dw");
        assert_eq!(bits(&a.bias), bits(&b.bias), "case {i}: db");
    }
}

/// `L = Σ y·r` for a fixed `r`, in f64, with the reference forward (which sums in f64 too).
fn loss<const N: usize>(x: &Tensor, w: &Tensor, b: &Tensor, r: &Tensor, spec: &ConvSpec<N>) -> f64 {
    let y = conv_reference(x, w, Some(b), spec).unwrap();
    y.data().iter().zip(r.data()).map(|(&y, &r)| y as f64 * r as f64).sum()
}

/// Central differences of `L` along every element of `which` (0 = x, 1 = w, 2 = b) against
/// `analytic`. Convolution is linear, so the difference quotient has no truncation error and a
/// wide step (1e-2) only shrinks the f32 rounding of `y` relative to the step.
fn check_fd<const N: usize>(
    operands: [&Tensor; 3],
    r: &Tensor,
    spec: &ConvSpec<N>,
    which: usize,
    analytic: &Tensor,
) {
    const EPS: f32 = 1e-2;
    let mut probe = [operands[0].clone(), operands[1].clone(), operands[2].clone()];
    for i in 0..analytic.numel() {
        let original = probe[which].data()[i];
        let (up, down) = (original + EPS, original - EPS);
        probe[which].data_mut()[i] = up;
        let l_up = loss(&probe[0], &probe[1], &probe[2], r, spec);
        probe[which].data_mut()[i] = down;
        let l_down = loss(&probe[0], &probe[1], &probe[2], r, spec);
        probe[which].data_mut()[i] = original;
        // The step actually taken in f32, not the one asked for.
        let numeric = (l_up - l_down) / (up as f64 - down as f64);
        let a = analytic.data()[i] as f64;
        assert!(
            (numeric - a).abs() <= 1e-3 * (1.0 + a.abs()),
            "{spec:?}: operand {which} element {i}: finite difference {numeric} vs backward {a}"
        );
    }
}

fn finite_differences<const N: usize>(xs: &[usize], ws: &[usize], spec: ConvSpec<N>, seed: u64) {
    let (x, w, b) = (seeded(xs, seed), seeded(ws, seed + 1), seeded(&ws[..1], seed + 2));
    let r = seeded(spec.output_shape(xs, ws).unwrap().dims(), seed + 3);
    for backward in [conv_backward::<N>, conv_backward_reference::<N>] {
        let grads = backward(&x, &w, &r, &spec).unwrap();
        for (which, analytic) in [&grads.input, &grads.weight, &grads.bias].into_iter().enumerate() {
            check_fd([&x, &w, &b], &r, &spec, which, analytic);
        }
    }
}

#[test]
fn backward_matches_finite_differences() {
    finite_differences(
        &[2, 2, 9],
        &[3, 2, 3],
        ConvSpec::<1>::new().stride(2).padding(Padding::asymmetric([1], [2])),
        1,
    );
    finite_differences(
        &[1, 4, 7],
        &[4, 2, 2],
        ConvSpec::<1>::new().dilation(3).groups(2).mode(KernelMode::Convolution),
        2,
    );
    finite_differences(
        &[2, 2, 6, 5],
        &[2, 2, 3, 2],
        ConvSpec::<2>::new().stride([2, 1]).padding(Padding::asymmetric([0, 1], [2, 0])).dilation([1, 2]),
        3,
    );
    finite_differences(
        &[1, 3, 5, 5],
        &[3, 1, 3, 3],
        ConvSpec::<2>::new().groups(3).padding(1).mode(KernelMode::Convolution),
        4,
    );
    finite_differences(
        &[1, 2, 4, 4, 3],
        &[2, 1, 2, 3, 2],
        ConvSpec::<3>::new().groups(2).stride([1, 2, 1]).padding([1, 0, 1]),
        5,
    );
}

/// The example of `conv_backward`'s docs, worked by hand in 2D: a 2×2 kernel on a 2×3 input.
#[test]
fn hand_computed_backward() {
    let x = Tensor::new([1, 1, 2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
    let w = Tensor::new([1, 1, 2, 2], vec![1.0, 10.0, 100.0, 1000.0]).unwrap();
    let dy = Tensor::new([1, 1, 1, 2], vec![1.0, 2.0]).unwrap();
    let grads = conv_backward(&x, &w, &dy, &ConvSpec::<2>::new()).unwrap();
    // dx: each output scatters dy·w onto the 2×2 window it read.
    assert_eq!(grads.input.data(), &[1.0, 12.0, 20.0, 100.0, 1200.0, 2000.0]);
    // dw[f] = Σ_o dy[o]·x[o + f]: 1·1 + 2·2, 1·2 + 2·3, 1·4 + 2·5, 1·5 + 2·6.
    assert_eq!(grads.weight.data(), &[5.0, 8.0, 14.0, 17.0]);
    assert_eq!(grads.bias.data(), &[3.0]);
    assert_eq!(grads, conv_backward_reference(&x, &w, &dy, &ConvSpec::<2>::new()).unwrap());
}

#[test]
fn backward_output_gradient_must_match_the_output_shape() {
    let x = seeded(&[2, 3, 8, 8], 1);
    let w = seeded(&[4, 3, 3, 3], 2);
    let dy = seeded(&[2, 4, 8, 8], 3);
    let spec = ConvSpec::<2>::new();
    let expected = "conv2d: the output gradient must have the output's shape [2, 4, 6, 6], got [2, 4, 8, 8] \
                    (input [2, 3, 8, 8], weight [4, 3, 3, 3])";
    assert_eq!(conv_backward(&x, &w, &dy, &spec).unwrap_err().to_string(), expected);
    assert_eq!(conv_backward_reference(&x, &w, &dy, &spec).unwrap_err().to_string(), expected);
    assert_eq!(conv_backward_input(x.dims(), &w, &dy, &spec).unwrap_err().to_string(), expected);
    let err = conv_backward(
        &seeded(&[1, 2, 5], 1),
        &seeded(&[1, 2, 3], 2),
        &seeded(&[3], 3),
        &ConvSpec::<1>::new(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv1d: the output gradient must have the output's shape [1, 1, 3], got [3] \
         (input [1, 2, 5], weight [1, 2, 3])"
    );
}

/// The backward validates `x` and `w` through the same geometry as the forward, with the same words.
#[test]
fn backward_rejects_what_the_forward_rejects() {
    let dy = seeded(&[1, 6, 24, 24], 3);
    let err =
        conv_backward(&seeded(&[1, 1, 28, 28], 1), &seeded(&[6, 3, 5, 5], 2), &dy, &ConvSpec::<2>::new())
            .unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d: the filters span 3 channels (weight [6, 3, 5, 5], groups 1) so the input needs 3 \
         channels, but it has 1 (input [1, 1, 28, 28])"
    );
    let err = conv_backward(
        &seeded(&[1, 6, 8, 8], 1),
        &seeded(&[8, 1, 3, 3], 2),
        &dy,
        &ConvSpec::<2>::new().groups(0),
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "conv2d: invalid argument: groups must be at least 1, got 0");
    let err = conv_backward(
        &seeded(&[1, 3, 6, 6], 1),
        &seeded(&[96, 3, 11, 11], 2),
        &dy,
        &ConvSpec::<2>::new().stride(4).padding(2),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "conv2d: kernel 11 does not fit in height 6 padded to 10: \
         O = ⌊(I + 2P − D·(F−1) − 1)/S⌋ + 1 = ⌊(6 + 2·2 − 1·(11−1) − 1)/4⌋ + 1 < 1 \
         (input [1, 3, 6, 6], weight [96, 3, 11, 11])"
    );
}

/// Degenerate but valid shapes give gradients of the right shapes instead of panicking: an
/// empty batch, no input channels, no filters, and a zero-width input padded to a valid size.
#[test]
fn backward_of_empty_shapes() {
    let cases: [([usize; 3], [usize; 3], ConvSpec<1>); 4] = [
        ([0, 2, 5], [3, 2, 3], ConvSpec::new()),
        ([1, 0, 5], [3, 0, 3], ConvSpec::new()),
        ([2, 2, 1500], [0, 2, 3], ConvSpec::new()),
        ([2, 2, 0], [3, 2, 1], ConvSpec::new().padding(1)),
    ];
    for (xs, ws, spec) in cases {
        let (x, w) = (seeded(&xs, 1), seeded(&ws, 2));
        let dy = seeded(spec.output_shape(&xs, &ws).unwrap().dims(), 3);
        let fast = conv_backward(&x, &w, &dy, &spec).unwrap();
        assert_eq!(fast, conv_backward_reference(&x, &w, &dy, &spec).unwrap(), "{xs:?} {ws:?}");
        assert_eq!((fast.input.dims(), fast.weight.dims(), fast.bias.dims()), (&xs[..], &ws[..], &ws[..1]));
    }
}
