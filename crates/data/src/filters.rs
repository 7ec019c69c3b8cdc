//! The lecture's 2-D filters (Module 11.1) and how they slide over an image.
//!
//! ```text
//! image  [C, H, W]             from crate::image_io, values in [0, 1]
//! kernel [F_h, F_w]            a Kernel: blur, sharpen, edge or parsed from "0,-1,0;-1,5,-1;0,-1,0"
//! per channel: w [C·K, 1, F_h, F_w], groups = C  →  y [C·K, H', W']   (depthwise: colour stays colour)
//! depth:       w [K, C, F_h, F_w],   groups = 1  →  y [K, H', W']     (one feature map per filter)
//! ```
//!
//! `H', W'` follow the size rule `O = ⌊(I + 2P − F)/S⌋ + 1` (stride_tensor::geometry); padding
//! `same` keeps `O = ⌈I/S⌉`. Depth mode is the lecture's 3D case: a filter spans the full depth of
//! its input and sums over it, so an RGB image and one filter give a single-channel feature map.
//!
//! The sum is cross-correlation, `y[i, j] = Σ_{a,b} K[a, b] · x[i + a, j + b]`, as PyTorch and as the
//! lecture's toy example (`aw + bx + ey + fz`). The lecture's three kernels are symmetric under a
//! half turn, so for them convolution and cross-correlation agree; a user kernel is applied as
//! written. All the arithmetic is `stride_tensor::ops::conv::conv2d`; this module only builds the
//! weight tensor.

use std::fmt;

use stride_tensor::Tensor;
use stride_tensor::ops::conv::{ConvSpec, Padding, conv2d};

use crate::error::{Error, Result};

/// A 2-D kernel: `rows × cols` values, row-major, divided by `divisor` when applied.
///
/// Keeping the divisor apart lets `blur` print as the lecture writes it (all ones, normalised by
/// 1/9) instead of as nine copies of 0.1111.
#[derive(Debug, Clone, PartialEq)]
pub struct Kernel {
    name: String,
    rows: usize,
    cols: usize,
    values: Vec<f32>,
    divisor: f32,
}

impl Kernel {
    /// The names [`Kernel::named`] knows.
    pub const NAMES: [&'static str; 3] = ["blur", "sharpen", "edge"];

    /// A named kernel of `rows × cols` values (row-major); errors when the count does not match.
    pub fn new(name: impl Into<String>, rows: usize, cols: usize, values: Vec<f32>) -> Result<Self> {
        let name = name.into();
        if rows == 0 || cols == 0 || rows.checked_mul(cols) != Some(values.len()) {
            return Err(Error::Kernel {
                text: name,
                message: format!("a {rows}×{cols} kernel cannot hold {} values", values.len()),
            });
        }
        Ok(Kernel { name, rows, cols, values, divisor: 1.0 })
    }

    /// 3×3 ones divided by 9: each pixel becomes the mean of its neighbourhood, which smooths noise
    /// and fine detail alike.
    pub fn blur() -> Self {
        Kernel { name: "blur".into(), rows: 3, cols: 3, values: vec![1.0; 9], divisor: 9.0 }
    }

    /// `0,-1,0; -1,5,-1; 0,-1,0`: the pixel plus its difference from its four neighbours. Flat
    /// areas are unchanged (the weights sum to 1); edges are exaggerated.
    pub fn sharpen() -> Self {
        let values = vec![0.0, -1.0, 0.0, -1.0, 5.0, -1.0, 0.0, -1.0, 0.0];
        Kernel { name: "sharpen".into(), rows: 3, cols: 3, values, divisor: 1.0 }
    }

    /// `1,1,1; 1,-8,1; 1,1,1`: the neighbours minus eight times the pixel. The weights sum to 0, so
    /// flat areas go to 0 (black) and only changes of intensity, the edges, remain.
    pub fn edge() -> Self {
        let values = vec![1.0, 1.0, 1.0, 1.0, -8.0, 1.0, 1.0, 1.0, 1.0];
        Kernel { name: "edge".into(), rows: 3, cols: 3, values, divisor: 1.0 }
    }

    /// One of the lecture's kernels by name (`blur`, `sharpen`, `edge`), case-insensitive.
    pub fn named(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "blur" => Some(Self::blur()),
            "sharpen" => Some(Self::sharpen()),
            "edge" => Some(Self::edge()),
            _ => None,
        }
    }

    /// Parses rows separated by `;` and values by `,`, e.g. `"0,-1,0;-1,5,-1;0,-1,0"`. Spaces
    /// around values are allowed. Errors name the row and value at fault.
    pub fn parse(text: &str) -> Result<Self> {
        let err = |message: String| Error::Kernel { text: text.to_string(), message };
        if text.trim().is_empty() {
            return Err(err(
                "is empty; write rows separated by ';' and values by ',', e.g. \"0,-1,0;-1,5,-1;0,-1,0\""
                    .into(),
            ));
        }
        let mut values = Vec::new();
        let mut cols = 0;
        let mut rows = 0;
        for (r, row) in text.split(';').enumerate() {
            let (row_no, mut count) = (r + 1, 0);
            if row.trim().is_empty() {
                return Err(err(format!("row {row_no} is empty")));
            }
            for (c, item) in row.split(',').enumerate() {
                let (item, col_no) = (item.trim(), c + 1);
                if item.is_empty() {
                    return Err(err(format!("row {row_no}, value {col_no} is empty")));
                }
                let v: f32 = item
                    .parse()
                    .map_err(|_| err(format!("row {row_no}, value {col_no}: {item:?} is not a number")))?;
                if !v.is_finite() {
                    return Err(err(format!(
                        "row {row_no}, value {col_no}: {item:?} is not a finite number"
                    )));
                }
                values.push(v);
                count += 1;
            }
            if r == 0 {
                cols = count;
            } else if count != cols {
                return Err(err(format!(
                    "row {row_no} has {count} value{} but row 1 has {cols}; every row needs the same number",
                    if count == 1 { "" } else { "s" }
                )));
            }
            rows += 1;
        }
        Ok(Kernel { name: "custom".into(), rows, cols, values, divisor: 1.0 })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The weights as applied (values divided by the divisor), row-major.
    pub fn weights(&self) -> Vec<f32> {
        self.values.iter().map(|v| v / self.divisor).collect()
    }

    /// The weights as a `[F_h, F_w]` tensor.
    pub fn to_tensor(&self) -> Result<Tensor> {
        Ok(Tensor::new([self.rows, self.cols], self.weights())?)
    }
}

/// `blur [1,1,1; 1,1,1; 1,1,1] / 9`: the name, the values in the syntax [`Kernel::parse`] reads,
/// and the divisor when there is one.
impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rows: Vec<String> = self
            .values
            .chunks(self.cols)
            .map(|row| row.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(","))
            .collect();
        write!(f, "{} [{}]", self.name, rows.join("; "))?;
        if self.divisor != 1.0 {
            write!(f, " / {}", self.divisor)?;
        }
        Ok(())
    }
}

/// Parses `same`, `valid` or a number of zero pixels added on every side.
pub fn parse_padding(text: &str) -> Result<Padding<2>> {
    match text.trim().to_ascii_lowercase().as_str() {
        "same" => Ok(Padding::Same),
        "valid" => Ok(Padding::valid()),
        n => n.parse::<usize>().map(Padding::from).map_err(|_| Error::Padding { text: text.to_string() }),
    }
}

/// The most values one filter call may produce (4 GiB of f32), far above any photo's size.
pub const MAX_OUTPUT_ELEMENTS: usize = 1 << 30;

/// Whether a kernel filters each channel on its own or spans them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterMode {
    /// Depthwise: each channel is filtered separately and keeps its place (colour in, colour out).
    #[default]
    PerChannel,
    /// The lecture's 3D case: one filter spans all `C` channels (the 2-D kernel repeated over the
    /// depth) and sums over them, giving one feature map per filter.
    Depth,
}

/// How a filter slides: padding, stride and mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FilterSpec {
    pub padding: Padding<2>,
    pub stride: usize,
    pub mode: FilterMode,
}

impl Default for FilterSpec {
    /// `same` padding and stride 1: the output has the input's size, as an image editor would do.
    fn default() -> Self {
        FilterSpec { padding: Padding::Same, stride: 1, mode: FilterMode::PerChannel }
    }
}

impl FilterSpec {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn padding(mut self, padding: impl Into<Padding<2>>) -> Self {
        self.padding = padding.into();
        self
    }

    pub fn stride(mut self, stride: usize) -> Self {
        self.stride = stride;
        self
    }

    pub fn mode(mut self, mode: FilterMode) -> Self {
        self.mode = mode;
        self
    }
}

/// Applies one kernel to an image `[C, H, W]`: `[C, H', W']` per channel, `[1, H', W']` in depth mode.
///
/// ```
/// use stride_data::filters::{FilterMode, FilterSpec, Kernel, apply};
/// use stride_tensor::Tensor;
///
/// let flat = Tensor::full([3, 5, 5], 0.5).unwrap();
/// let edges = apply(&flat, &Kernel::edge(), &FilterSpec::new()).unwrap();
/// assert_eq!(edges.dims(), &[3, 5, 5]);
/// assert_eq!(edges.get(&[0, 2, 2]).unwrap(), 0.0); // no edge inside a flat area
///
/// let depth = FilterSpec::new().mode(FilterMode::Depth).padding(0);
/// assert_eq!(apply(&flat, &Kernel::edge(), &depth).unwrap().dims(), &[1, 3, 3]);
/// ```
pub fn apply(image: &Tensor, kernel: &Kernel, spec: &FilterSpec) -> Result<Tensor> {
    apply_bank(image, std::slice::from_ref(kernel), spec)
}

/// Applies `K` kernels of one size to an image `[C, H, W]`.
///
/// Per channel, output channel `c·K + k` is kernel `k` over input channel `c` (`[C·K, H', W']`);
/// in depth mode, output channel `k` is kernel `k` spanning all channels (`[K, H', W']`).
pub fn apply_bank(image: &Tensor, kernels: &[Kernel], spec: &FilterSpec) -> Result<Tensor> {
    image.expect_rank("filter", 3, "[C, H, W]")?;
    let (channels, height, width) = (image.dims()[0], image.dims()[1], image.dims()[2]);
    let Some(first) = kernels.first() else {
        return Err(Error::Kernel { text: String::new(), message: "no kernel given".into() });
    };
    let (rows, cols) = (first.rows, first.cols);
    if let Some(other) = kernels.iter().find(|k| (k.rows, k.cols) != (rows, cols)) {
        return Err(Error::Kernel {
            text: other.to_string(),
            message: format!(
                "is {}×{} but {} is {rows}×{cols}; a filter bank needs kernels of one size",
                other.rows, other.cols, first.name
            ),
        });
    }
    // Weights in [out, depth, F_h, F_w] order. Per channel: for each channel c, its K kernels,
    // each one deep. Depth: for each kernel, the same 2-D taps repeated over the C channels.
    let (weight_shape, groups, outer, depth) = match spec.mode {
        FilterMode::PerChannel => ([channels * kernels.len(), 1, rows, cols], channels, channels, 1),
        FilterMode::Depth => ([kernels.len(), channels, rows, cols], 1, 1, channels),
    };
    let mut weights = Vec::new();
    for _ in 0..outer {
        for kernel in kernels {
            let taps = kernel.weights();
            for _ in 0..depth {
                weights.extend_from_slice(&taps);
            }
        }
    }
    let w = Tensor::new(weight_shape, weights)?;
    let x = Tensor::new([1, channels, height, width], image.data().to_vec())?;
    let conv = ConvSpec::<2>::new().stride(spec.stride).padding(spec.padding).groups(groups);
    let out_shape = conv.output_shape(x.dims(), w.dims())?;
    let elements = out_shape.numel();
    // A padding typed by mistake (1000000 for 1) would otherwise ask the allocator for terabytes
    // and abort the process; an error is kinder than an out-of-memory kill.
    if elements > MAX_OUTPUT_ELEMENTS {
        return Err(stride_tensor::Error::invalid(
            "filter",
            format!(
                "the output {out_shape} would hold {elements} values, more than the {MAX_OUTPUT_ELEMENTS} \
                 (4 GiB of f32) a filter may produce; use a smaller padding or a larger stride"
            ),
        )
        .into());
    }
    let y = conv2d(&x, &w, None, &conv)?;
    let out_dims = y.dims()[1..].to_vec();
    Ok(Tensor::new(out_dims, y.into_data())?)
}
