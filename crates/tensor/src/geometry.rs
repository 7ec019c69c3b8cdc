//! The size rule of convolution and pooling, in one place.
//!
//! Along every spatial axis a window of `F` taps, `D` apart (dilation), slides with stride `S`
//! over the input of size `I` padded by `P_begin` and `P_end`:
//!
//! ```text
//! O = ⌊(I + P_begin + P_end − D·(F−1) − 1) / S⌋ + 1
//! ```
//!
//! With `D = 1` and symmetric padding this is the lecture's `W2 = (W1 − F + 2P)/S + 1`; the depth
//! of a convolution's output is the number of filters, `D2 = K`. Pooling's `ceil_mode` rounds up
//! instead, with PyTorch's rule that the last window must start inside the input or left padding.
//!
//! Every other module asks this one; all arithmetic is checked, so a bad geometry is an error
//! that spells out the formula with the numbers put in, never a panic or an underflow.

use crate::error::{Error, Result};

/// How the division in the size rule is rounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Rounding {
    /// Convolution and pooling by default: windows that would cross the padded end are dropped.
    #[default]
    Floor,
    /// Pooling with `ceil_mode=True`: a last partial window is kept if it starts inside the input
    /// or the left padding (PyTorch's rule; GoogLeNet's 112 → 56 pools rely on it).
    Ceil,
}

/// The parameters of one spatial axis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AxisParams {
    pub input: usize,
    pub kernel: usize,
    pub stride: usize,
    pub pad_begin: usize,
    pub pad_end: usize,
    pub dilation: usize,
}

impl AxisParams {
    /// The extent the dilated kernel covers: `D·(F−1) + 1`.
    pub fn effective_kernel(&self) -> usize {
        self.dilation.saturating_mul(self.kernel.saturating_sub(1)).saturating_add(1)
    }

    fn padding_text(&self) -> (String, String) {
        if self.pad_begin == self.pad_end {
            ("2P".into(), format!("2·{}", self.pad_begin))
        } else {
            ("P_begin + P_end".into(), format!("{} + {}", self.pad_begin, self.pad_end))
        }
    }

    /// `O = ⌊(I + 2P − D·(F−1) − 1)/S⌋ + 1` with this axis' numbers put in.
    pub fn formula(&self, rounding: Rounding) -> String {
        let (open, close) = match rounding {
            Rounding::Floor => ("⌊", "⌋"),
            Rounding::Ceil => ("⌈", "⌉"),
        };
        let (pad_symbol, pad_value) = self.padding_text();
        format!(
            "O = {open}(I + {pad_symbol} − D·(F−1) − 1)/S{close} + 1 = {open}({} + {pad_value} − {}·({}−1) − 1)/{}{close} + 1",
            self.input, self.dilation, self.kernel, self.stride
        )
    }
}

/// A per-axis parameter given as one value for every axis or one per axis.
pub trait PerAxis<const N: usize> {
    fn per_axis(self) -> [usize; N];
}

impl<const N: usize> PerAxis<N> for usize {
    fn per_axis(self) -> [usize; N] {
        [self; N]
    }
}

impl<const N: usize> PerAxis<N> for [usize; N] {
    fn per_axis(self) -> [usize; N] {
        self
    }
}

impl AxisParams {
    /// The size rule in the lecture's form, with `input` as the name of the input size:
    /// `(W1 − F + 2P)/S + 1`, or with dilation `(W1 + 2P − D·(F−1) − 1)/S + 1`.
    pub fn rule(&self, input: &str) -> String {
        let (pad_symbol, _) = self.padding_text();
        if self.dilation == 1 {
            format!("({input} − F + {pad_symbol})/S + 1")
        } else {
            format!("({input} + {pad_symbol} − D·(F−1) − 1)/S + 1")
        }
    }

    /// The rule with this axis' numbers put in and its result, saying when the division was
    /// rounded: `(227 − 11 + 2·0)/4 + 1 = 55`.
    pub fn worked(&self, op: &str, axis: &str, rounding: Rounding) -> Result<String> {
        let out = output_size(op, axis, *self, rounding)?;
        let numerator = self.input + self.pad_begin + self.pad_end - self.effective_kernel();
        let (_, pad_value) = self.padding_text();
        let text = if self.dilation == 1 {
            format!("({} − {} + {pad_value})/{} + 1 = {out}", self.input, self.kernel, self.stride)
        } else {
            format!(
                "({} + {pad_value} − {}·({}−1) − 1)/{} + 1 = {out}",
                self.input, self.dilation, self.kernel, self.stride
            )
        };
        let exact = numerator as f64 / self.stride as f64 + 1.0;
        let rounded = match rounding {
            _ if numerator.is_multiple_of(self.stride) => String::new(),
            Rounding::Floor => format!(" (rounded down from {exact:.2})"),
            Rounding::Ceil => format!(" (ceil_mode: rounded up from {exact:.2})"),
        };
        Ok(text + &rounded)
    }
}

/// The names of the spatial axes of a 1, 2 or 3-d layout (`W`; `H, W`; `D, H, W`).
pub fn axis_names(spatial_rank: usize) -> &'static [&'static str] {
    match spatial_rank {
        1 => &["width"],
        2 => &["height", "width"],
        _ => &["depth", "height", "width"],
    }
}

/// Output size of one axis; `op` and `axis` name the place in the error.
pub fn output_size(op: &str, axis: &str, p: AxisParams, rounding: Rounding) -> Result<usize> {
    for (name, value) in [("kernel size", p.kernel), ("stride", p.stride), ("dilation", p.dilation)] {
        if value == 0 {
            return Err(Error::invalid(op, format!("{name} must be at least 1 along {axis}, got 0")));
        }
    }
    // i128 holds every combination of usize terms without overflow.
    let padded = p.input as i128 + p.pad_begin as i128 + p.pad_end as i128;
    let span = p.dilation as i128 * (p.kernel as i128 - 1) + 1;
    let stride = p.stride as i128;
    let numerator = padded - span;
    let fits = numerator >= 0;
    let mut out = if fits {
        match rounding {
            Rounding::Floor => numerator / stride + 1,
            Rounding::Ceil => (numerator + stride - 1) / stride + 1,
        }
    } else {
        0
    };
    if fits && rounding == Rounding::Ceil && (out - 1) * stride >= p.input as i128 + p.pad_begin as i128 {
        out -= 1;
    }
    if out < 1 {
        let what = if p.dilation > 1 {
            format!("kernel {} (dilation {}, spanning {})", p.kernel, p.dilation, span)
        } else {
            format!("kernel {}", p.kernel)
        };
        return Err(Error::shape(
            op,
            format!(
                "{what} does not fit in {axis} {} padded to {padded}: {} < 1",
                p.input,
                p.formula(rounding)
            ),
        ));
    }
    usize::try_from(out).map_err(|_| Error::invalid(op, format!("output {axis} {out} is too large")))
}

/// Padding that keeps `O = ⌈I/S⌉` (for stride 1, the input size). The odd extra element goes at
/// the end, as in PyTorch's `padding="same"` (which allows only stride 1) and TensorFlow's "SAME".
pub fn same_padding(input: usize, kernel: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let stride = stride.max(1);
    let out = input.div_ceil(stride);
    let span = dilation.saturating_mul(kernel.saturating_sub(1)).saturating_add(1);
    let total = ((out.saturating_sub(1)).saturating_mul(stride) + span).saturating_sub(input);
    (total / 2, total - total / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(input: usize, kernel: usize, stride: usize, pad: usize) -> AxisParams {
        AxisParams { input, kernel, stride, pad_begin: pad, pad_end: pad, dilation: 1 }
    }

    fn floor(p: AxisParams) -> Result<usize> {
        output_size("conv2d", "width", p, Rounding::Floor)
    }

    /// Real networks as rows: the sizes everyone can check against the papers.
    #[test]
    fn sizes_of_real_layers() {
        let rows = [
            ("alexnet conv1", axis(224, 11, 4, 2), 55),
            ("alexnet 2012 conv1 on 227", axis(227, 11, 4, 0), 55),
            ("alexnet pool1", axis(55, 3, 2, 0), 27),
            ("resnet stem conv", axis(224, 7, 2, 3), 112),
            ("resnet stem pool", axis(112, 3, 2, 1), 56),
            ("vgg 3x3 same", axis(224, 3, 1, 1), 224),
            ("lenet c1", axis(32, 5, 1, 0), 28),
            ("lenet s2", axis(28, 2, 2, 0), 14),
            ("lenet c3", axis(14, 5, 1, 0), 10),
            ("lenet s4", axis(10, 2, 2, 0), 5),
            ("zfnet conv1", axis(224, 7, 2, 1), 110),
        ];
        for (name, p, expected) in rows {
            assert_eq!(floor(p).unwrap(), expected, "{name}");
        }
    }

    #[test]
    fn googlenet_ceil_mode_pool() {
        let p = axis(112, 3, 2, 0);
        assert_eq!(output_size("max_pool2d", "width", p, Rounding::Floor).unwrap(), 55);
        assert_eq!(output_size("max_pool2d", "width", p, Rounding::Ceil).unwrap(), 56);
    }

    #[test]
    fn ceil_mode_drops_a_window_starting_in_right_padding() {
        // PyTorch: input 5, kernel 2, stride 2, padding 1 -> ceil gives 4 windows, but the last
        // would start at padded index 6 >= 5 + 1, so 3 remain.
        let p = axis(5, 2, 2, 1);
        assert_eq!(output_size("pool", "width", p, Rounding::Ceil).unwrap(), 3);
    }

    #[test]
    fn dilation_widens_the_window() {
        let p = AxisParams { dilation: 2, ..axis(10, 3, 1, 0) };
        assert_eq!(floor(p).unwrap(), 6);
    }

    #[test]
    fn kernel_too_large_spells_out_the_formula() {
        let err = floor(axis(6, 11, 4, 2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "conv2d: kernel 11 does not fit in width 6 padded to 10: \
             O = ⌊(I + 2P − D·(F−1) − 1)/S⌋ + 1 = ⌊(6 + 2·2 − 1·(11−1) − 1)/4⌋ + 1 < 1"
        );
    }

    #[test]
    fn asymmetric_padding_is_shown_per_side() {
        let p = AxisParams { pad_begin: 0, pad_end: 1, ..axis(1, 4, 1, 0) };
        let err = floor(p).unwrap_err().to_string();
        assert!(err.contains("(I + P_begin + P_end − D·(F−1) − 1)"), "{err}");
        assert!(err.contains("(1 + 0 + 1 − 1·(4−1) − 1)"), "{err}");
    }

    #[test]
    fn zero_stride_is_an_error_not_a_division_by_zero() {
        let err = floor(axis(8, 3, 0, 0)).unwrap_err();
        assert_eq!(err.to_string(), "conv2d: invalid argument: stride must be at least 1 along width, got 0");
        assert!(floor(AxisParams { dilation: 0, ..axis(8, 3, 1, 0) }).is_err());
        assert!(floor(axis(8, 0, 1, 0)).is_err());
    }

    #[test]
    fn huge_values_do_not_overflow() {
        // 3·MAX − MAX + 1 windows cannot be counted in usize: an error, not a wrap-around.
        let p = axis(usize::MAX, usize::MAX, 1, usize::MAX);
        assert!(floor(p).is_err());
        let p = AxisParams { dilation: usize::MAX, ..axis(3, 3, 1, 0) };
        assert!(floor(p).is_err());
    }

    #[test]
    fn worked_formula_in_the_lectures_form() {
        let p = axis(227, 11, 4, 0);
        assert_eq!(p.rule("W1"), "(W1 − F + 2P)/S + 1");
        assert_eq!(p.worked("conv2d", "width", Rounding::Floor).unwrap(), "(227 − 11 + 2·0)/4 + 1 = 55");
        let p = axis(28, 5, 2, 0);
        assert_eq!(
            p.worked("conv2d", "width", Rounding::Floor).unwrap(),
            "(28 − 5 + 2·0)/2 + 1 = 12 (rounded down from 12.50)"
        );
        let p = AxisParams { dilation: 2, ..axis(10, 3, 1, 1) };
        assert_eq!(p.rule("H1"), "(H1 + 2P − D·(F−1) − 1)/S + 1");
        assert_eq!(
            p.worked("conv2d", "width", Rounding::Floor).unwrap(),
            "(10 + 2·1 − 2·(3−1) − 1)/1 + 1 = 8"
        );
        let p = axis(112, 3, 2, 0);
        assert_eq!(
            p.worked("max_pool2d", "width", Rounding::Ceil).unwrap(),
            "(112 − 3 + 2·0)/2 + 1 = 56 (ceil_mode: rounded up from 55.50)"
        );
        assert!(axis(2, 5, 1, 0).worked("conv2d", "width", Rounding::Floor).is_err());
    }

    #[test]
    fn same_padding_keeps_the_size() {
        assert_eq!(same_padding(28, 5, 1, 1), (2, 2));
        assert_eq!(same_padding(28, 4, 1, 1), (1, 2));
        assert_eq!(same_padding(28, 3, 1, 2), (2, 2));
        // Stride 2: output ⌈7/2⌉ = 4 needs (4−1)·2 + 3 − 7 = 2.
        assert_eq!(same_padding(7, 3, 2, 1), (1, 1));
        for (i, k, s, d) in [(28, 5, 1, 1), (7, 3, 2, 1), (10, 4, 3, 2), (1, 7, 1, 1)] {
            let (b, e) = same_padding(i, k, s, d);
            let p = AxisParams { input: i, kernel: k, stride: s, pad_begin: b, pad_end: e, dilation: d };
            assert_eq!(floor(p).unwrap(), i.div_ceil(s), "{i} {k} {s} {d}");
        }
    }
}
