//! The lecture's kernels, kernel parsing (every error branch, with its wording) and how a kernel
//! slides over an image: per channel, across the depth, with each padding and stride.

use stride_data::Error;
use stride_data::filters::{FilterMode, FilterSpec, Kernel, apply, apply_bank, parse_padding};
use stride_tensor::Tensor;
use stride_tensor::ops::conv::Padding;

fn constant(channels: usize, size: usize, value: f32) -> Tensor {
    Tensor::full([channels, size, size], value).unwrap()
}

/// Asserts `f(c, i, j)` holds away from the border that `same` padding fills with zeros.
fn check_interior(y: &Tensor, margin: usize, f: impl Fn(usize, usize, usize, f32) -> bool) {
    let &[c, h, w] = y.dims() else { panic!("expected [C, H, W], got {:?}", y.dims()) };
    for ch in 0..c {
        for i in margin..h - margin {
            for j in margin..w - margin {
                let v = y.get(&[ch, i, j]).unwrap();
                assert!(f(ch, i, j, v), "channel {ch}, ({i}, {j}) = {v}");
            }
        }
    }
}

fn parse_err(text: &str) -> String {
    let err = Kernel::parse(text).unwrap_err();
    assert!(matches!(err, Error::Kernel { .. }), "{err:?}");
    err.to_string()
}

#[test]
fn lecture_kernels_have_the_lecture_weights() {
    let ninth = 1.0 / 9.0;
    assert_eq!(Kernel::blur().weights(), vec![ninth; 9]);
    assert_eq!(Kernel::sharpen().weights(), vec![0.0, -1.0, 0.0, -1.0, 5.0, -1.0, 0.0, -1.0, 0.0]);
    assert_eq!(Kernel::edge().weights(), vec![1.0, 1.0, 1.0, 1.0, -8.0, 1.0, 1.0, 1.0, 1.0]);
    for name in Kernel::NAMES {
        assert_eq!(Kernel::named(name).unwrap().name(), name);
    }
    assert_eq!(Kernel::named("EDGE"), Some(Kernel::edge()));
    assert_eq!(Kernel::named("emboss"), None);
}

#[test]
fn kernels_print_in_the_syntax_they_parse_from() {
    assert_eq!(Kernel::blur().to_string(), "blur [1,1,1; 1,1,1; 1,1,1] / 9");
    assert_eq!(Kernel::sharpen().to_string(), "sharpen [0,-1,0; -1,5,-1; 0,-1,0]");
    assert_eq!(Kernel::edge().to_string(), "edge [1,1,1; 1,-8,1; 1,1,1]");
    let custom = Kernel::parse("0.5, -1.25 ; 2,0").unwrap();
    assert_eq!(custom.to_string(), "custom [0.5,-1.25; 2,0]");
    let again = Kernel::parse("0.5,-1.25; 2,0").unwrap();
    assert_eq!(again, custom);
}

#[test]
fn new_checks_the_value_count() {
    let k = Kernel::new("box", 1, 2, vec![0.5, 0.5]).unwrap();
    assert_eq!(k.to_string(), "box [0.5,0.5]");
    let err = Kernel::new("box", 2, 2, vec![1.0; 3]).unwrap_err();
    assert_eq!(err.to_string(), "kernel \"box\": a 2×2 kernel cannot hold 3 values");
    assert!(Kernel::new("none", 0, 0, vec![]).is_err());
}

#[test]
fn parse_reads_rows_and_values() {
    let k = Kernel::parse("0,-1,0;-1,5,-1;0,-1,0").unwrap();
    assert_eq!((k.rows(), k.cols()), (3, 3));
    assert_eq!(k.weights(), Kernel::sharpen().weights());
    let k = Kernel::parse(" 1 , 2 , 3 ").unwrap();
    assert_eq!((k.rows(), k.cols()), (1, 3));
    let k = Kernel::parse("1;2").unwrap();
    assert_eq!((k.rows(), k.cols()), (2, 1));
    assert_eq!(k.to_tensor().unwrap().dims(), &[2, 1]);
}

#[test]
fn parse_errors_point_at_the_row_and_value() {
    assert_eq!(
        parse_err(""),
        "kernel \"\": is empty; write rows separated by ';' and values by ',', e.g. \"0,-1,0;-1,5,-1;0,-1,0\""
    );
    assert!(parse_err("   ").contains("is empty"));
    assert_eq!(
        parse_err("1,2,3;4,5"),
        "kernel \"1,2,3;4,5\": row 2 has 2 values but row 1 has 3; every row needs the same number"
    );
    assert_eq!(parse_err("1,2;3,x"), "kernel \"1,2;3,x\": row 2, value 2: \"x\" is not a number");
    assert_eq!(parse_err("1,,2"), "kernel \"1,,2\": row 1, value 2 is empty");
    assert_eq!(parse_err("1;;2"), "kernel \"1;;2\": row 2 is empty");
    assert_eq!(parse_err("1,2;"), "kernel \"1,2;\": row 2 is empty");
    assert_eq!(parse_err("1,inf"), "kernel \"1,inf\": row 1, value 2: \"inf\" is not a finite number");
    assert!(parse_err("NaN").contains("not a finite number"));
    assert!(parse_err("1 2 3").contains("\"1 2 3\" is not a number"));
}

#[test]
fn padding_parses_same_valid_or_a_number() {
    assert_eq!(parse_padding("same").unwrap(), Padding::Same);
    assert_eq!(parse_padding(" VALID ").unwrap(), Padding::valid());
    assert_eq!(parse_padding("2").unwrap(), Padding::symmetric([2, 2]));
    let err = parse_padding("-1").unwrap_err();
    assert_eq!(err.to_string(), "padding \"-1\": expected `same`, `valid` or a number of pixels such as 1");
    assert!(parse_padding("full").is_err());
}

#[test]
fn blur_of_a_constant_image_is_constant_in_the_interior() {
    let y = apply(&constant(3, 8, 0.6), &Kernel::blur(), &FilterSpec::new()).unwrap();
    assert_eq!(y.dims(), &[3, 8, 8]);
    check_interior(&y, 1, |_, _, _, v| (v - 0.6).abs() < 1e-6);
    // Same padding adds zeros: a corner sees 4 of its 9 neighbours.
    assert!((y.get(&[0, 0, 0]).unwrap() - 0.6 * 4.0 / 9.0).abs() < 1e-6);
}

#[test]
fn edge_of_a_constant_image_is_zero_in_the_interior() {
    let y = apply(&constant(1, 6, 0.7), &Kernel::edge(), &FilterSpec::new()).unwrap();
    check_interior(&y, 1, |_, _, _, v| v.abs() < 1e-6);
    // At the border the zero padding is an edge: 5 missing neighbours of weight 1.
    assert!((y.get(&[0, 0, 0]).unwrap() - (3.0 - 8.0) * 0.7).abs() < 1e-5);
}

#[test]
fn sharpen_keeps_flat_areas() {
    let y = apply(&constant(3, 5, 0.25), &Kernel::sharpen(), &FilterSpec::new()).unwrap();
    check_interior(&y, 1, |_, _, _, v| (v - 0.25).abs() < 1e-6);
}

#[test]
fn edge_finds_a_vertical_step() {
    // Left half 0, right half 1: the response is non-zero only in the two columns at the step.
    let image = Tensor::from_fn([1, 6, 6], |i| if i[2] >= 3 { 1.0 } else { 0.0 }).unwrap();
    let y = apply(&image, &Kernel::edge(), &FilterSpec::new().padding(Padding::valid())).unwrap();
    assert_eq!(y.dims(), &[1, 4, 4]);
    for i in 0..4 {
        // Output column j is centred on input column j + 1.
        assert_eq!(y.get(&[0, i, 0]).unwrap(), 0.0);
        assert_eq!(y.get(&[0, i, 1]).unwrap(), 3.0);
        assert_eq!(y.get(&[0, i, 2]).unwrap(), -3.0);
        assert_eq!(y.get(&[0, i, 3]).unwrap(), 0.0);
    }
}

#[test]
fn a_user_kernel_is_applied_as_cross_correlation() {
    // Weight on the right neighbour: y[i, j] = x[i, j + 1], unflipped (a flip would shift right).
    let image = Tensor::from_fn([1, 3, 4], |i| (i[1] * 4 + i[2]) as f32).unwrap();
    let kernel = Kernel::parse("0,0,0;0,0,1;0,0,0").unwrap();
    let y = apply(&image, &kernel, &FilterSpec::new()).unwrap();
    assert_eq!(y.data(), &[1.0, 2.0, 3.0, 0.0, 5.0, 6.0, 7.0, 0.0, 9.0, 10.0, 11.0, 0.0]);
}

#[test]
fn per_channel_filters_each_channel_on_its_own() {
    let image = Tensor::from_fn([3, 5, 5], |i| [0.1, 0.5, 0.9][i[0]]).unwrap();
    let y = apply(&image, &Kernel::blur(), &FilterSpec::new()).unwrap();
    assert_eq!(y.dims(), &[3, 5, 5]);
    check_interior(&y, 1, |c, _, _, v| (v - [0.1, 0.5, 0.9][c]).abs() < 1e-6);
}

#[test]
fn depth_mode_gives_one_channel_per_filter() {
    let image = Tensor::from_fn([3, 6, 6], |i| [0.1, 0.2, 0.3][i[0]]).unwrap();
    let depth = FilterSpec::new().mode(FilterMode::Depth);
    let y = apply(&image, &Kernel::blur(), &depth).unwrap();
    assert_eq!(y.dims(), &[1, 6, 6]);
    // One filter spans the depth: the blurred channels add up, 0.1 + 0.2 + 0.3.
    check_interior(&y, 1, |_, _, _, v| (v - 0.6).abs() < 1e-6);

    let bank = [Kernel::blur(), Kernel::edge(), Kernel::sharpen()];
    let y = apply_bank(&image, &bank, &depth).unwrap();
    assert_eq!(y.dims(), &[3, 6, 6]);
    check_interior(&y, 1, |k, _, _, v| (v - [0.6, 0.0, 0.6][k]).abs() < 1e-5);

    // Per channel, K kernels give C·K maps, kernel-minor.
    let y = apply_bank(&image, &bank[..2], &FilterSpec::new()).unwrap();
    assert_eq!(y.dims(), &[6, 6, 6]);
    check_interior(&y, 1, |m, _, _, v| {
        let expected = if m % 2 == 0 { [0.1, 0.2, 0.3][m / 2] } else { 0.0 };
        (v - expected).abs() < 1e-6
    });
}

#[test]
fn padding_and_stride_follow_the_size_rule() {
    let image = constant(1, 8, 1.0);
    let sizes = [
        (FilterSpec::new(), 8),
        (FilterSpec::new().padding(Padding::valid()), 6),
        (FilterSpec::new().padding(2), 10),
        (FilterSpec::new().stride(2), 4),
        (FilterSpec::new().padding(Padding::valid()).stride(2), 3),
    ];
    for (spec, expected) in sizes {
        let y = apply(&image, &Kernel::edge(), &spec).unwrap();
        assert_eq!(y.dims(), &[1, expected, expected], "{spec:?}");
    }
    let wide = Kernel::parse("1,1,1,1,1").unwrap();
    let y = apply(&image, &wide, &FilterSpec::new()).unwrap();
    assert_eq!(y.dims(), &[1, 8, 8]);
    let y = apply(&image, &wide, &FilterSpec::new().padding(Padding::valid())).unwrap();
    assert_eq!(y.dims(), &[1, 8, 4]);
}

#[test]
fn geometry_errors_come_from_the_tensor_core() {
    let image = constant(3, 2, 1.0);
    let err = apply(&image, &Kernel::blur(), &FilterSpec::new().padding(Padding::valid())).unwrap_err();
    assert!(matches!(err, Error::Tensor(_)), "{err:?}");
    assert!(err.to_string().starts_with("conv2d: kernel 3 does not fit in height 2 padded to 2"), "{err}");
    let err = apply(&image, &Kernel::blur(), &FilterSpec::new().stride(0)).unwrap_err();
    assert!(err.to_string().contains("stride must be at least 1"), "{err}");
    let err = apply(&Tensor::zeros([4, 4]).unwrap(), &Kernel::blur(), &FilterSpec::new()).unwrap_err();
    assert!(err.to_string().contains("[C, H, W]"), "{err}");
}

#[test]
fn a_bank_needs_kernels_of_one_size() {
    let image = constant(1, 5, 1.0);
    let bank = [Kernel::blur(), Kernel::parse("1,1").unwrap()];
    let err = apply_bank(&image, &bank, &FilterSpec::new()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernel \"custom [1,1]\": is 1×2 but blur is 3×3; a filter bank needs kernels of one size"
    );
    assert!(apply_bank(&image, &[], &FilterSpec::new()).is_err());
}

#[test]
fn an_absurd_padding_is_an_error_not_an_allocation_failure() {
    let err = apply(&constant(3, 4, 1.0), &Kernel::blur(), &FilterSpec::new().padding(100_000)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "filter: invalid argument: the output [1, 3, 200002, 200002] would hold 120002400012 values, more \
         than the 1073741824 (4 GiB of f32) a filter may produce; use a smaller padding or a larger stride"
    );
}
