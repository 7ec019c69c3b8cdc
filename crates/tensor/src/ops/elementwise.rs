//! Elementwise arithmetic: binary operations with NumPy/PyTorch broadcasting, operations with a
//! scalar, and unary maps (the activations among them).
//!
//! Broadcasting aligns two shapes at their last dimension; along every aligned dimension the sizes
//! must be equal or one of them 1 (a missing leading dimension counts as 1), and the result takes
//! the larger: `[N, C, H, W] + [C, 1, 1] → [N, C, H, W]`. Results are new contiguous tensors.
//!
//! Large tensors are processed in parallel, in fixed blocks of `CHUNK` elements. Every element is
//! computed by the same scalar expression whichever block or thread it falls in, so results are
//! bitwise identical for any number of threads. NaN propagates through every operation, `maximum`
//! and `minimum` included (as `torch.maximum`, unlike `f32::max`).
//!
//! ```
//! use stride_tensor::Tensor;
//! let x = Tensor::new([2, 3], vec![-1.0, 0.5, 2.0, -3.0, 1.0, 0.0]).unwrap();
//! let bias = Tensor::new([3], vec![1.0, 1.0, -1.0]).unwrap();
//! let y = x.add(&bias).unwrap().relu();
//! assert_eq!(y.data(), &[0.0, 1.5, 1.0, 0.0, 2.0, 0.0]);
//! ```

use rayon::prelude::*;

use crate::buffer::collect_blocks;

use super::layout::{coalesce, for_each_run, gather};
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Elements per parallel task: 128 KiB of f32, enough work to amortise scheduling, small enough to
/// balance two to dozens of cores.
pub(crate) const CHUNK: usize = 32 * 1024;

/// Runs `body(offset, block)` over consecutive blocks of `chunk ≥ 1` elements of `out`, in parallel
/// when there is more than one block. The blocks depend on `chunk` only, never on the thread count.
pub(crate) fn fill_chunks<T: Send>(out: &mut [T], chunk: usize, body: impl Fn(usize, &mut [T]) + Sync) {
    if out.len() <= chunk {
        body(0, out);
    } else {
        out.par_chunks_mut(chunk).enumerate().for_each(|(i, block)| body(i * chunk, block));
    }
}

/// The shape `a` and `b` broadcast to, or an error naming both and the first dimension (counted in
/// the result) where they disagree.
pub fn broadcast_shapes(op: &str, a: &Shape, b: &Shape) -> Result<Shape> {
    let rank = a.rank().max(b.rank());
    let aligned = |s: &Shape, j: usize| j.checked_sub(rank - s.rank()).map_or(1, |i| s.dims()[i]);
    let mut dims = Vec::with_capacity(rank);
    for j in 0..rank {
        let (x, y) = (aligned(a, j), aligned(b, j));
        dims.push(match (x, y) {
            _ if x == y => x,
            (1, _) => y,
            (_, 1) => x,
            _ => {
                return Err(Error::shape(
                    op,
                    format!("shapes {a} and {b} do not broadcast: dimension {j} is {x} vs {y}"),
                ));
            }
        });
    }
    Ok(Shape::new(dims))
}

/// Why `from` does not broadcast to exactly `to`, or `None` when it does.
pub(crate) fn broadcast_mismatch(from: &Shape, to: &Shape) -> Option<String> {
    let Some(pad) = to.rank().checked_sub(from.rank()) else {
        return Some(format!("it has more dimensions ({}) than {to} ({})", from.rank(), to.rank()));
    };
    from.dims()
        .iter()
        .zip(&to.dims()[pad..])
        .enumerate()
        .find(|(_, (f, t))| f != t && **f != 1)
        .map(|(i, (f, t))| format!("dimension {} is {f} vs {t}", i + pad))
}

/// Strides that read `shape` as if broadcast to `out`: 0 along the dimensions it lacks or repeats.
pub(crate) fn broadcast_strides(shape: &Shape, out: &[usize]) -> Vec<usize> {
    let pad = out.len() - shape.rank();
    let strides = shape.strides();
    (0..out.len())
        .map(|j| match j.checked_sub(pad) {
            Some(i) if shape.dims()[i] == out[j] => strides[i],
            _ => 0,
        })
        .collect()
}

/// `x` repeated along its size-1 and missing leading dimensions to fill `shape`.
pub fn broadcast_to(x: &Tensor, shape: impl Into<Shape>) -> Result<Tensor> {
    let target = shape.into();
    if let Some(why) = broadcast_mismatch(x.shape(), &target) {
        return Err(Error::shape(
            "broadcast_to",
            format!("shape {} cannot be broadcast to {target}: {why}", x.shape()),
        ));
    }
    if target.checked_numel()? == 0 {
        return Ok(Tensor::from_parts(target, Vec::new()));
    }
    let strides = broadcast_strides(x.shape(), target.dims());
    let data = gather(x.data(), target.dims(), &strides, 0);
    Ok(Tensor::from_parts(target, data))
}

/// `f(a, b)` elementwise over the broadcast shape; `op` names the operation in errors. The building
/// block of the binary operations, public for kernels such as activation backwards.
pub fn zip_map(op: &str, a: &Tensor, b: &Tensor, f: impl Fn(f32, f32) -> f32 + Sync) -> Result<Tensor> {
    let (xa, xb) = (a.data(), b.data());
    if a.dims() == b.dims() {
        let out = collect_blocks(xa.len(), CHUNK, 1, |_, range| {
            xa[range.clone()].iter().zip(&xb[range]).map(|(&x, &y)| f(x, y))
        });
        return Ok(Tensor::from_parts(a.shape().clone(), out));
    }
    let shape = broadcast_shapes(op, a.shape(), b.shape())?;
    let numel = shape.checked_numel()?;
    if numel == 0 {
        // Also spares computing the strides of empty operands, which may overflow.
        return Ok(Tensor::from_parts(shape, Vec::new()));
    }
    let sa = broadcast_strides(a.shape(), shape.dims());
    let sb = broadcast_strides(b.shape(), shape.dims());
    let (dims, [sa, sb]) = coalesce(shape.dims(), [&sa, &sb]);
    // After coalescing, an operand's last stride is 1 (it varies along the run) or 0 (repeated).
    let steps = (sa.last().copied().unwrap_or(0), sb.last().copied().unwrap_or(0));
    let mut out = vec![0.0; numel];
    fill_chunks(&mut out, CHUNK, |start, block| {
        for_each_run(&dims, [&sa, &sb], [0, 0], start..start + block.len(), |position, len, [oa, ob]| {
            let dst = &mut block[position - start..][..len];
            match steps {
                (1, 1) => {
                    for ((o, &x), &y) in dst.iter_mut().zip(&xa[oa..oa + len]).zip(&xb[ob..ob + len]) {
                        *o = f(x, y);
                    }
                }
                (1, 0) => {
                    let y = xb[ob];
                    for (o, &x) in dst.iter_mut().zip(&xa[oa..oa + len]) {
                        *o = f(x, y);
                    }
                }
                (0, 1) => {
                    let x = xa[oa];
                    for (o, &y) in dst.iter_mut().zip(&xb[ob..ob + len]) {
                        *o = f(x, y);
                    }
                }
                (step_a, step_b) => {
                    for (j, o) in dst.iter_mut().enumerate() {
                        *o = f(xa[oa + j * step_a], xb[ob + j * step_b]);
                    }
                }
            }
        });
    });
    Ok(Tensor::from_parts(shape, out))
}

/// `f(x)` elementwise. The building block of the unary operations.
pub fn map(x: &Tensor, f: impl Fn(f32) -> f32 + Sync) -> Tensor {
    let src = x.data();
    let out = collect_blocks(src.len(), CHUNK, 1, |_, range| src[range].iter().map(|&v| f(v)));
    Tensor::from_parts(x.shape().clone(), out)
}

/// The larger value, NaN if either is NaN.
fn max_nan(x: f32, y: f32) -> f32 {
    if x > y || x.is_nan() { x } else { y }
}

/// The smaller value, NaN if either is NaN.
fn min_nan(x: f32, y: f32) -> f32 {
    if x < y || x.is_nan() { x } else { y }
}

/// `a + b` with broadcasting.
pub fn add(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    zip_map("add", a, b, |x, y| x + y)
}

/// `a − b` with broadcasting.
pub fn sub(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    zip_map("sub", a, b, |x, y| x - y)
}

/// `a · b` (elementwise) with broadcasting.
pub fn mul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    zip_map("mul", a, b, |x, y| x * y)
}

/// `a / b` with broadcasting; IEEE semantics (division by zero gives ±inf or NaN).
pub fn div(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    zip_map("div", a, b, |x, y| x / y)
}

/// The larger of `a` and `b` elementwise, with broadcasting; NaN wins.
pub fn maximum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    zip_map("maximum", a, b, max_nan)
}

/// The smaller of `a` and `b` elementwise, with broadcasting; NaN wins.
pub fn minimum(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    zip_map("minimum", a, b, min_nan)
}

pub fn add_scalar(x: &Tensor, s: f32) -> Tensor {
    map(x, |v| v + s)
}

pub fn sub_scalar(x: &Tensor, s: f32) -> Tensor {
    map(x, |v| v - s)
}

pub fn mul_scalar(x: &Tensor, s: f32) -> Tensor {
    map(x, |v| v * s)
}

pub fn div_scalar(x: &Tensor, s: f32) -> Tensor {
    map(x, |v| v / s)
}

pub fn neg(x: &Tensor) -> Tensor {
    map(x, |v| -v)
}

pub fn abs(x: &Tensor) -> Tensor {
    map(x, f32::abs)
}

pub fn exp(x: &Tensor) -> Tensor {
    map(x, f32::exp)
}

/// Natural logarithm: −inf at 0, NaN below.
pub fn ln(x: &Tensor) -> Tensor {
    map(x, f32::ln)
}

/// Square root: NaN below 0.
pub fn sqrt(x: &Tensor) -> Tensor {
    map(x, f32::sqrt)
}

pub fn square(x: &Tensor) -> Tensor {
    map(x, |v| v * v)
}

/// `x^exponent` (`f32::powf`).
pub fn powf(x: &Tensor, exponent: f32) -> Tensor {
    map(x, |v| v.powf(exponent))
}

/// `max(x, 0)`, NaN kept.
pub fn relu(x: &Tensor) -> Tensor {
    map(x, |v| if v < 0.0 { 0.0 } else { v })
}

/// `x` where positive, `slope · x` elsewhere.
pub fn leaky_relu(x: &Tensor, slope: f32) -> Tensor {
    map(x, |v| if v < 0.0 { slope * v } else { v })
}

pub fn tanh(x: &Tensor) -> Tensor {
    map(x, f32::tanh)
}

/// `1 / (1 + e^−x)`, evaluated so that `e^…` never overflows: for negative `x` as `e^x / (1 + e^x)`.
pub fn sigmoid(x: &Tensor) -> Tensor {
    map(x, |v| {
        if v >= 0.0 {
            1.0 / (1.0 + (-v).exp())
        } else {
            let e = v.exp();
            e / (1.0 + e)
        }
    })
}

/// Every element limited to `[min, max]`; NaN elements stay NaN. Errors when `min > max` or either
/// bound is NaN (where `f32::clamp` would panic).
pub fn clamp(x: &Tensor, min: f32, max: f32) -> Result<Tensor> {
    if min.is_nan() || max.is_nan() || min > max {
        return Err(Error::invalid("clamp", format!("needs min ≤ max, got min {min} and max {max}")));
    }
    Ok(map(x, |v| {
        if v < min {
            min
        } else if v > max {
            max
        } else {
            v
        }
    }))
}

impl Tensor {
    /// See [`add`].
    pub fn add(&self, other: &Tensor) -> Result<Tensor> {
        add(self, other)
    }

    /// See [`sub`].
    pub fn sub(&self, other: &Tensor) -> Result<Tensor> {
        sub(self, other)
    }

    /// See [`mul`].
    pub fn mul(&self, other: &Tensor) -> Result<Tensor> {
        mul(self, other)
    }

    /// See [`div`].
    pub fn div(&self, other: &Tensor) -> Result<Tensor> {
        div(self, other)
    }

    /// See [`maximum`].
    pub fn maximum(&self, other: &Tensor) -> Result<Tensor> {
        maximum(self, other)
    }

    /// See [`minimum`].
    pub fn minimum(&self, other: &Tensor) -> Result<Tensor> {
        minimum(self, other)
    }

    /// See [`broadcast_to`].
    pub fn broadcast_to(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        broadcast_to(self, shape)
    }

    /// See [`map`].
    pub fn map(&self, f: impl Fn(f32) -> f32 + Sync) -> Tensor {
        map(self, f)
    }

    pub fn add_scalar(&self, s: f32) -> Tensor {
        add_scalar(self, s)
    }

    pub fn sub_scalar(&self, s: f32) -> Tensor {
        sub_scalar(self, s)
    }

    pub fn mul_scalar(&self, s: f32) -> Tensor {
        mul_scalar(self, s)
    }

    pub fn div_scalar(&self, s: f32) -> Tensor {
        div_scalar(self, s)
    }

    pub fn neg(&self) -> Tensor {
        neg(self)
    }

    pub fn abs(&self) -> Tensor {
        abs(self)
    }

    pub fn exp(&self) -> Tensor {
        exp(self)
    }

    pub fn ln(&self) -> Tensor {
        ln(self)
    }

    pub fn sqrt(&self) -> Tensor {
        sqrt(self)
    }

    pub fn square(&self) -> Tensor {
        square(self)
    }

    pub fn powf(&self, exponent: f32) -> Tensor {
        powf(self, exponent)
    }

    pub fn relu(&self) -> Tensor {
        relu(self)
    }

    pub fn leaky_relu(&self, slope: f32) -> Tensor {
        leaky_relu(self, slope)
    }

    pub fn tanh(&self) -> Tensor {
        tanh(self)
    }

    pub fn sigmoid(&self) -> Tensor {
        sigmoid(self)
    }

    /// See [`clamp`].
    pub fn clamp(&self, min: f32, max: f32) -> Result<Tensor> {
        clamp(self, min, max)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn t(dims: &[usize], data: &[f32]) -> Tensor {
        Tensor::new(dims, data.to_vec()).unwrap()
    }

    fn ramp(dims: &[usize]) -> Tensor {
        // Irregular values so that a wrong index cannot give the right answer by symmetry.
        Tensor::from_fn(dims, |i| i.iter().fold(0.0, |acc, &v| acc * 7.3 + v as f32 + 0.25)).unwrap()
    }

    #[test]
    fn binary_ops_broadcast() {
        let a = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let row = t(&[3], &[10.0, 20.0, 30.0]);
        let col = t(&[2, 1], &[100.0, 200.0]);
        assert_eq!(a.add(&row).unwrap().data(), &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
        assert_eq!(a.sub(&col).unwrap().data(), &[-99.0, -98.0, -97.0, -196.0, -195.0, -194.0]);
        assert_eq!(a.mul(&Tensor::scalar(2.0)).unwrap().data(), &[2.0, 4.0, 6.0, 8.0, 10.0, 12.0]);
        assert_eq!(Tensor::scalar(6.0).div(&a).unwrap().dims(), &[2, 3]);
        let outer = row.add(&col).unwrap();
        assert_eq!(outer.dims(), &[2, 3]);
        assert_eq!(outer.data(), &[110.0, 120.0, 130.0, 210.0, 220.0, 230.0]);
        assert_eq!(a.maximum(&t(&[1], &[3.5])).unwrap().data(), &[3.5, 3.5, 3.5, 4.0, 5.0, 6.0]);
        assert_eq!(a.minimum(&t(&[1], &[3.5])).unwrap().data(), &[1.0, 2.0, 3.0, 3.5, 3.5, 3.5]);
        assert_eq!(Tensor::scalar(1.0).add(&Tensor::scalar(2.0)).unwrap(), Tensor::scalar(3.0));
        let empty = Tensor::zeros([0, 3]).unwrap();
        assert_eq!(empty.add(&row).unwrap().dims(), &[0, 3]);
    }

    #[test]
    fn bias_over_channels() {
        // The layout of a convolution bias: [N, C, H, W] + [C, 1, 1].
        let x = ramp(&[2, 3, 4, 5]);
        let b = t(&[3, 1, 1], &[1.0, 2.0, 3.0]);
        let y = x.add(&b).unwrap();
        for (p, (&yv, &xv)) in y.data().iter().zip(x.data()).enumerate() {
            assert_eq!(yv, xv + [1.0, 2.0, 3.0][p / 20 % 3]);
        }
    }

    #[test]
    fn broadcast_errors_name_both_shapes() {
        let a = Tensor::zeros([2, 3]).unwrap();
        let b = Tensor::zeros([4]).unwrap();
        assert_eq!(
            a.add(&b).unwrap_err().to_string(),
            "add: shapes [2, 3] and [4] do not broadcast: dimension 1 is 3 vs 4"
        );
        let c = Tensor::zeros([5, 1, 3]).unwrap();
        let d = Tensor::zeros([4, 2, 3]).unwrap();
        assert_eq!(
            c.maximum(&d).unwrap_err().to_string(),
            "maximum: shapes [5, 1, 3] and [4, 2, 3] do not broadcast: dimension 0 is 5 vs 4"
        );
        for (name, result) in
            [("sub", a.sub(&b)), ("mul", a.mul(&b)), ("div", a.div(&b)), ("minimum", a.minimum(&b))]
        {
            assert_eq!(result.unwrap_err().op(), name);
        }
    }

    #[test]
    fn broadcast_to_repeats() {
        let x = t(&[2, 1], &[1.0, 2.0]);
        let y = x.broadcast_to([3, 2, 2]).unwrap();
        assert_eq!(y.data(), &[1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0, 1.0, 1.0, 2.0, 2.0]);
        assert_eq!(
            x.broadcast_to([3, 3]).unwrap_err().to_string(),
            "broadcast_to: shape [2, 1] cannot be broadcast to [3, 3]: dimension 0 is 2 vs 3"
        );
        assert_eq!(
            x.broadcast_to([2]).unwrap_err().to_string(),
            "broadcast_to: shape [2, 1] cannot be broadcast to [2]: it has more dimensions (2) than [2] (1)"
        );
        assert!(x.broadcast_to([usize::MAX, 2, 2]).is_err());
    }

    #[test]
    fn empty_tensors_with_huge_axes() {
        // The strides of [0, usize::MAX, 2] overflow; nothing may compute them.
        let x = Tensor::zeros([0, usize::MAX, 2]).unwrap();
        assert_eq!(x.add(&Tensor::zeros([1, 1, 2]).unwrap()).unwrap().dims(), &[0, usize::MAX, 2]);
        assert_eq!(x.mul(&x).unwrap().dims(), &[0, usize::MAX, 2]);
        assert_eq!(x.broadcast_to([3, 0, usize::MAX, 2]).unwrap().numel(), 0);
        assert_eq!(x.relu().numel(), 0);
    }

    #[test]
    fn scalar_ops() {
        let x = t(&[3], &[1.0, -2.0, 4.0]);
        assert_eq!(x.add_scalar(1.0).data(), &[2.0, -1.0, 5.0]);
        assert_eq!(x.sub_scalar(1.0).data(), &[0.0, -3.0, 3.0]);
        assert_eq!(x.mul_scalar(-2.0).data(), &[-2.0, 4.0, -8.0]);
        assert_eq!(x.div_scalar(2.0).data(), &[0.5, -1.0, 2.0]);
    }

    #[test]
    fn unary_ops() {
        let x = t(&[4], &[-2.0, -0.5, 0.0, 3.0]);
        assert_eq!(x.neg().data(), &[2.0, 0.5, -0.0, -3.0]);
        assert_eq!(x.abs().data(), &[2.0, 0.5, 0.0, 3.0]);
        assert_eq!(x.square().data(), &[4.0, 0.25, 0.0, 9.0]);
        assert_eq!(x.relu().data(), &[0.0, 0.0, 0.0, 3.0]);
        assert_eq!(x.leaky_relu(0.1).data(), &[-0.2, -0.05, 0.0, 3.0]);
        assert_eq!(x.clamp(-1.0, 1.0).unwrap().data(), &[-1.0, -0.5, 0.0, 1.0]);
        assert_eq!(x.exp().data()[2], 1.0);
        assert_eq!(t(&[2], &[1.0, 0.0]).ln().data(), &[0.0, f32::NEG_INFINITY]);
        assert_eq!(t(&[2], &[9.0, 0.25]).sqrt().data(), &[3.0, 0.5]);
        assert_eq!(t(&[2], &[2.0, 9.0]).powf(0.5).data(), &[2f32.sqrt(), 3.0]);
        assert_eq!(x.tanh().data()[3], 3f32.tanh());
        assert_eq!(x.map(|v| v * 10.0).data(), &[-20.0, -5.0, 0.0, 30.0]);
    }

    #[test]
    fn sigmoid_is_stable_at_the_extremes() {
        let y = t(&[5], &[-1000.0, -20.0, 0.0, 20.0, 1000.0]).sigmoid();
        assert_eq!(y.data()[0], 0.0);
        assert_eq!(y.data()[2], 0.5);
        assert_eq!(y.data()[4], 1.0);
        assert!((y.data()[1] - 2.0611537e-9).abs() < 1e-15);
        assert!(y.data().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn nan_propagates() {
        let x = t(&[3], &[f32::NAN, 1.0, 2.0]);
        let y = t(&[3], &[0.0, f32::NAN, 1.0]);
        for r in [x.maximum(&y).unwrap(), x.minimum(&y).unwrap()] {
            assert!(r.data()[0].is_nan() && r.data()[1].is_nan());
        }
        assert!(x.relu().data()[0].is_nan());
        assert!(x.clamp(0.0, 1.0).unwrap().data()[0].is_nan());
    }

    #[test]
    fn clamp_rejects_inverted_bounds() {
        let x = t(&[1], &[0.0]);
        assert_eq!(
            x.clamp(2.0, 1.0).unwrap_err().to_string(),
            "clamp: invalid argument: needs min ≤ max, got min 2 and max 1"
        );
        assert_eq!(
            x.clamp(f32::NAN, 1.0).unwrap_err().to_string(),
            "clamp: invalid argument: needs min ≤ max, got min NaN and max 1"
        );
    }

    #[test]
    fn large_ops_are_bitwise_identical_for_any_thread_count() {
        let a = ramp(&[3, 70, 1000]).map(|v| (v * 0.001).sin());
        let b = ramp(&[70, 1]).map(|v| v.cos());
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap().install(|| {
                let y = a.mul(&b).unwrap().add(&a).unwrap().sigmoid();
                (y, a.exp(), a.broadcast_to([2, 3, 70, 1000]).unwrap())
            })
        };
        let (one, two) = (run(1), run(2));
        assert!(one.0.data().iter().zip(two.0.data()).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(one.1.data().iter().zip(two.1.data()).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert_eq!(one.2, two.2);
        // The parallel path agrees with the scalar definition.
        for (p, &y) in one.0.data().iter().enumerate().step_by(997) {
            let x = a.data()[p];
            let s = x * b.data()[p / 1000 % 70] + x;
            assert_eq!(y.to_bits(), (1.0 / (1.0 + (-s).exp())).to_bits());
        }
    }

    /// An output shape and two operand shapes that broadcast to it: each operand drops some leading
    /// dimensions and replaces some others by 1.
    fn broadcast_case() -> impl Strategy<Value = (Tensor, Tensor)> {
        prop::collection::vec(prop_oneof![1 => Just(0usize), 10 => 1usize..5], 0..5)
            .prop_flat_map(|out| {
                let rank = out.len();
                let operand = (0..=rank, prop::collection::vec(any::<bool>(), rank)).prop_map({
                    let out = out.clone();
                    move |(drop, ones)| {
                        out[drop..]
                            .iter()
                            .zip(&ones[drop..])
                            .map(|(&d, &one)| if one { 1 } else { d })
                            .collect()
                    }
                });
                (operand.clone(), operand)
            })
            .prop_flat_map(|(da, db): (Vec<usize>, Vec<usize>)| {
                let (na, nb) = (da.iter().product::<usize>(), db.iter().product::<usize>());
                (
                    prop::collection::vec(-10.0f32..10.0, na)
                        .prop_map(move |v| Tensor::new(da.clone(), v).unwrap()),
                    prop::collection::vec(-10.0f32..10.0, nb)
                        .prop_map(move |v| Tensor::new(db.clone(), v).unwrap()),
                )
            })
    }

    /// The element of `x` that position `index` of a broadcast result reads.
    fn broadcast_read(x: &Tensor, index: &[usize]) -> f32 {
        let pad = index.len() - x.rank();
        let i: Vec<usize> =
            x.dims().iter().zip(&index[pad..]).map(|(&d, &i)| if d == 1 { 0 } else { i }).collect();
        x.get(&i).unwrap()
    }

    proptest! {
        #[test]
        fn broadcasting_matches_index_arithmetic((a, b) in broadcast_case()) {
            let sum = a.add(&b).unwrap();
            let max = a.maximum(&b).unwrap();
            let quotient = b.div(&a).unwrap();
            prop_assert_eq!(sum.shape(), &broadcast_shapes("t", a.shape(), b.shape()).unwrap());
            for p in 0..sum.numel() {
                let mut index = vec![0; sum.rank()];
                let mut rest = p;
                for axis in (0..sum.rank()).rev() {
                    index[axis] = rest % sum.dims()[axis];
                    rest /= sum.dims()[axis];
                }
                let (x, y) = (broadcast_read(&a, &index), broadcast_read(&b, &index));
                prop_assert_eq!(sum.data()[p].to_bits(), (x + y).to_bits());
                prop_assert_eq!(max.data()[p], x.max(y));
                prop_assert_eq!(quotient.data()[p].to_bits(), (y / x).to_bits());
            }
            let expanded = a.broadcast_to(sum.shape()).unwrap();
            prop_assert_eq!(expanded.add(&b).unwrap(), sum);
        }
    }
}
