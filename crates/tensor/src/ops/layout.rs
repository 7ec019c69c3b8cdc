//! Layout operations: reshape, flatten, squeeze/unsqueeze, permute, transpose, pad, concat, stack,
//! slice/narrow and split/chunk.
//!
//! Shapes are row-major and every result is a new contiguous tensor (see `tensor.rs`). Axes are
//! `isize`, negative ones counting from the end as in PyTorch (`-1` is the last axis).
//!
//! Most of them reduce to one primitive, a strided gather: output position `p`, row-major over the
//! output shape with multi-index `i(p)`, reads `src[base + Σ_d i_d(p) · stride_d]`. A permutation
//! permutes the strides, a slice multiplies one by its step and moves `base` to its start,
//! broadcasting sets strides to 0. Adjacent axes that are walked contiguously are merged first, so
//! the inner loop is a `memcpy` whenever the layout allows.

use std::borrow::Borrow;
use std::ops::Range;

use super::elementwise::{CHUNK, fill_chunks};
use crate::error::{Error, Result};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Drops axes of size 1 and merges each axis into the one before it when every stride set walks
/// the pair as one axis (`stride_outer = stride_inner · size_inner`): `[N, C, H, W]` read in
/// order becomes one axis of `N·C·H·W` elements, and the inner loops run as long as possible.
pub(crate) fn coalesce<const K: usize>(
    dims: &[usize],
    strides: [&[usize]; K],
) -> (Vec<usize>, [Vec<usize>; K]) {
    let mut out_dims: Vec<usize> = Vec::with_capacity(dims.len());
    let mut out_strides: [Vec<usize>; K] = std::array::from_fn(|_| Vec::with_capacity(dims.len()));
    for (axis, &size) in dims.iter().enumerate() {
        if size == 1 {
            continue;
        }
        let last = out_dims.len();
        let merges =
            last > 0 && out_strides.iter().zip(strides).all(|(merged, s)| merged[last - 1] == s[axis] * size);
        if merges {
            out_dims[last - 1] *= size;
            for (merged, s) in out_strides.iter_mut().zip(strides) {
                merged[last - 1] = s[axis];
            }
        } else {
            out_dims.push(size);
            for (merged, s) in out_strides.iter_mut().zip(strides) {
                merged.push(s[axis]);
            }
        }
    }
    (out_dims, out_strides)
}

/// Walks the row-major positions `range` of `dims` as runs along the last axis: calls
/// `run(position, length, offsets)` where `offsets[k] = base[k] + Σ_d index_d · strides[k][d]` for
/// the run's first element. A 0-d `dims` is a single position.
pub(crate) fn for_each_run<const K: usize>(
    dims: &[usize],
    strides: [&[usize]; K],
    base: [usize; K],
    range: Range<usize>,
    mut run: impl FnMut(usize, usize, [usize; K]),
) {
    if range.is_empty() {
        return;
    }
    let Some(&inner) = dims.last() else {
        run(range.start, 1, base);
        return;
    };
    let rank = dims.len();
    // A non-empty range means no dimension is 0, so the divisions below are safe.
    let mut index = vec![0usize; rank];
    let mut rest = range.start;
    for axis in (0..rank).rev() {
        index[axis] = rest % dims[axis];
        rest /= dims[axis];
    }
    let mut position = range.start;
    while position < range.end {
        let len = (inner - index[rank - 1]).min(range.end - position);
        let offsets = std::array::from_fn(|k| {
            base[k] + index.iter().zip(strides[k]).map(|(i, s)| i * s).sum::<usize>()
        });
        run(position, len, offsets);
        position += len;
        index[rank - 1] += len;
        let mut axis = rank - 1;
        while axis > 0 && index[axis] == dims[axis] {
            index[axis] = 0;
            axis -= 1;
            index[axis] += 1;
        }
    }
}

/// The strided gather of the module docs, in parallel over fixed blocks of the output, whose
/// shape `dims` the caller has checked to fit in memory.
pub(crate) fn gather(src: &[f32], dims: &[usize], strides: &[usize], base: usize) -> Vec<f32> {
    if dims.contains(&0) {
        return Vec::new();
    }
    let numel = dims.iter().product();
    let (dims, [strides]) = coalesce(dims, [strides]);
    let step = strides.last().copied().unwrap_or(1);
    let mut out = vec![0.0; numel];
    fill_chunks(&mut out, CHUNK, |start, block| {
        for_each_run(&dims, [&strides], [base], start..start + block.len(), |position, len, [offset]| {
            let dst = &mut block[position - start..][..len];
            match step {
                1 => dst.copy_from_slice(&src[offset..offset + len]),
                0 => dst.fill(src[offset]),
                _ => {
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = src[offset + j * step];
                    }
                }
            }
        });
    });
    out
}

/// The shape `dims` describes for a tensor of `shape`, with at most one `-1` inferred from the
/// element count. Needs no data: a layer can answer its output shape with it.
pub fn resolve_reshape(shape: &Shape, dims: &[isize]) -> Result<Shape> {
    const OP: &str = "reshape";
    let numel = shape.numel();
    let mut inferred = None;
    let mut known = Some(1usize);
    let mut out = Vec::with_capacity(dims.len());
    for (position, &d) in dims.iter().enumerate() {
        if d == -1 {
            if inferred.replace(position).is_some() {
                return Err(Error::invalid(OP, format!("only one dimension can be -1, got {dims:?}")));
            }
            out.push(0);
        } else if d < 0 {
            return Err(Error::invalid(
                OP,
                format!(
                    "dimension {d} at position {position} of {dims:?} is negative; only -1 (inferred) \
                     is allowed"
                ),
            ));
        } else {
            known = known.and_then(|k| k.checked_mul(d as usize));
            out.push(d as usize);
        }
    }
    let Some(known) = known else {
        return Err(Error::shape(
            OP,
            format!(
                "cannot reshape {shape} ({numel} elements) into {dims:?}: more elements than fit in memory"
            ),
        ));
    };
    match inferred {
        None if known != numel => Err(Error::shape(
            OP,
            format!("cannot reshape {shape} ({numel} elements) into {dims:?} ({known} elements)"),
        )),
        None => Ok(Shape::new(out)),
        Some(_) if known == 0 => Err(Error::shape(
            OP,
            format!(
                "cannot reshape {shape} ({numel} elements) into {dims:?}: the size of -1 is ambiguous \
                 when the other dimensions hold 0 elements"
            ),
        )),
        Some(_) if !numel.is_multiple_of(known) => Err(Error::shape(
            OP,
            format!(
                "cannot reshape {shape} ({numel} elements) into {dims:?}: {numel} is not a multiple of \
                 {known}"
            ),
        )),
        Some(position) => {
            out[position] = numel / known;
            Ok(Shape::new(out))
        }
    }
}

/// The same elements under a new shape; one dimension may be `-1` (inferred).
pub fn reshape(x: &Tensor, dims: &[isize]) -> Result<Tensor> {
    Ok(Tensor::from_parts(resolve_reshape(x.shape(), dims)?, x.data().to_vec()))
}

/// The shape after merging axes `start_axis..=end_axis` (inclusive, as `torch.flatten`) into one.
/// A 0-d shape flattens to `[1]`.
pub fn flatten_shape(shape: &Shape, start_axis: isize, end_axis: isize) -> Result<Shape> {
    const OP: &str = "flatten";
    if shape.rank() == 0 && matches!(start_axis, 0 | -1) && matches!(end_axis, 0 | -1) {
        return Ok(Shape::from([1]));
    }
    let start = shape.axis(OP, start_axis)?;
    let end = shape.axis(OP, end_axis)?;
    if start > end {
        return Err(Error::shape(
            OP,
            format!("start axis {start_axis} comes after end axis {end_axis} in shape {shape}"),
        ));
    }
    let dims = shape.dims();
    let mut out = dims[..start].to_vec();
    // Checked: a tensor with a 0 elsewhere may have axes whose product overflows.
    let merged =
        dims[start..=end].iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).ok_or_else(|| {
            Error::invalid(OP, format!("merging axes {start}..={end} of shape {shape} overflows"))
        })?;
    out.push(merged);
    out.extend_from_slice(&dims[end + 1..]);
    Ok(Shape::new(out))
}

/// Merges axes `start_axis..=end_axis` into one: `flatten(x, 1, -1)` turns `[N, C, H, W]` into
/// `[N, C·H·W]`.
pub fn flatten(x: &Tensor, start_axis: isize, end_axis: isize) -> Result<Tensor> {
    Ok(Tensor::from_parts(flatten_shape(x.shape(), start_axis, end_axis)?, x.data().to_vec()))
}

/// Removes `axis`, which must have size 1.
pub fn squeeze(x: &Tensor, axis: isize) -> Result<Tensor> {
    let a = x.shape().axis("squeeze", axis)?;
    let size = x.dims()[a];
    if size != 1 {
        return Err(Error::shape(
            "squeeze",
            format!("axis {axis} of shape {} has size {size}, not 1", x.shape()),
        ));
    }
    let mut dims = x.dims().to_vec();
    dims.remove(a);
    Ok(Tensor::from_parts(Shape::new(dims), x.data().to_vec()))
}

/// Removes every axis of size 1.
pub fn squeeze_all(x: &Tensor) -> Tensor {
    let dims: Vec<usize> = x.dims().iter().copied().filter(|&d| d != 1).collect();
    Tensor::from_parts(Shape::new(dims), x.data().to_vec())
}

/// Where a new axis goes in `shape`: `0..=rank`, negative counting from the end of the result.
fn insertion_axis(op: &str, shape: &Shape, axis: isize) -> Result<usize> {
    let rank = shape.rank() as isize;
    let resolved = if axis < 0 { axis + rank + 1 } else { axis };
    if !(0..=rank).contains(&resolved) {
        return Err(Error::shape(
            op,
            format!(
                "axis {axis} is out of range for inserting into shape {shape} (valid: {}..={rank})",
                -rank - 1
            ),
        ));
    }
    Ok(resolved as usize)
}

/// Inserts an axis of size 1 at `axis` (`-1` appends it).
pub fn unsqueeze(x: &Tensor, axis: isize) -> Result<Tensor> {
    let a = insertion_axis("unsqueeze", x.shape(), axis)?;
    let mut dims = x.dims().to_vec();
    dims.insert(a, 1);
    Ok(Tensor::from_parts(Shape::new(dims), x.data().to_vec()))
}

/// `axes` resolved to indices, checked to name every axis of `shape` exactly once.
fn resolve_permutation(shape: &Shape, axes: &[isize]) -> Result<Vec<usize>> {
    let rank = shape.rank();
    let not_a_permutation = || {
        Error::shape("permute", format!("{axes:?} is not a permutation of the {rank} axes of shape {shape}"))
    };
    if axes.len() != rank {
        return Err(not_a_permutation());
    }
    let mut seen = vec![false; rank];
    let mut resolved = Vec::with_capacity(rank);
    for &axis in axes {
        let a = if axis < 0 { axis + rank as isize } else { axis };
        if !(0..rank as isize).contains(&a) || seen[a as usize] {
            return Err(not_a_permutation());
        }
        seen[a as usize] = true;
        resolved.push(a as usize);
    }
    Ok(resolved)
}

/// Axis `i` of the result is axis `perm[i]` of `x` (`torch.permute`).
fn permute_resolved(x: &Tensor, perm: &[usize]) -> Tensor {
    let dims: Vec<usize> = perm.iter().map(|&p| x.dims()[p]).collect();
    if x.numel() == 0 {
        // The strides of an empty tensor may overflow (`[0, usize::MAX, 2]`) and nothing is read.
        return Tensor::from_parts(Shape::new(dims), Vec::new());
    }
    let strides = x.shape().strides();
    let src_strides: Vec<usize> = perm.iter().map(|&p| strides[p]).collect();
    let data = gather(x.data(), &dims, &src_strides, 0);
    Tensor::from_parts(Shape::new(dims), data)
}

/// Reorders the axes: axis `i` of the result is axis `axes[i]` of `x`.
pub fn permute(x: &Tensor, axes: &[isize]) -> Result<Tensor> {
    let perm = resolve_permutation(x.shape(), axes)?;
    Ok(permute_resolved(x, &perm))
}

/// Swaps two axes.
pub fn transpose(x: &Tensor, axis_a: isize, axis_b: isize) -> Result<Tensor> {
    let a = x.shape().axis("transpose", axis_a)?;
    let b = x.shape().axis("transpose", axis_b)?;
    let mut perm: Vec<usize> = (0..x.rank()).collect();
    perm.swap(a, b);
    Ok(permute_resolved(x, &perm))
}

/// Surrounds the tensor with `value`: `pads[d] = (before, after)` elements along axis `d`, one pair
/// per axis.
pub fn pad(x: &Tensor, pads: &[(usize, usize)], value: f32) -> Result<Tensor> {
    const OP: &str = "pad";
    let shape = x.shape();
    if pads.len() != shape.rank() {
        return Err(Error::shape(
            OP,
            format!(
                "{} (before, after) pairs given for shape {shape} (rank {}); give one pair per axis",
                pads.len(),
                shape.rank()
            ),
        ));
    }
    let too_large = || Error::invalid(OP, format!("padding {pads:?} makes shape {shape} too large"));
    let dims = shape
        .dims()
        .iter()
        .zip(pads)
        .map(|(&d, &(before, after))| d.checked_add(before)?.checked_add(after))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(too_large)?;
    let out_shape = Shape::new(dims);
    let numel = out_shape.checked_numel().map_err(|_| too_large())?;
    let mut out = vec![value; numel];
    if x.numel() == 0 {
        return Ok(Tensor::from_parts(out_shape, out));
    }
    let out_strides = out_shape.strides();
    let base = pads.iter().zip(&out_strides).map(|(&(before, _), s)| before * s).sum();
    // Walk the input in order (so its offset is the run position) and scatter each run.
    let (runs, [dst_strides]) = coalesce(shape.dims(), [&out_strides]);
    let step = dst_strides.last().copied().unwrap_or(1);
    let src = x.data();
    for_each_run(&runs, [&dst_strides], [base], 0..src.len(), |position, len, [offset]| {
        let values = &src[position..position + len];
        if step == 1 {
            out[offset..offset + len].copy_from_slice(values);
        } else {
            for (j, &v) in values.iter().enumerate() {
                out[offset + j * step] = v;
            }
        }
    });
    Ok(Tensor::from_parts(out_shape, out))
}

/// `outer` rows, row `o` made of block `o` of every part in turn (a part `(data, block)` being
/// cut into blocks of `block` elements): the memory order of a concatenation. In parallel over
/// whole rows; `numel` (the total) is not 0.
fn interleave(parts: &[(&[f32], usize)], outer: usize, numel: usize) -> Vec<f32> {
    let row = numel / outer;
    let mut out = vec![0.0; numel];
    fill_chunks(&mut out, (CHUNK / row).max(1) * row, |start, rows| {
        for (r, dst) in rows.chunks_mut(row).enumerate() {
            let o = start / row + r;
            let mut at = 0;
            for &(data, block) in parts {
                dst[at..at + block].copy_from_slice(&data[o * block..(o + 1) * block]);
                at += block;
            }
        }
    });
    out
}

/// Joins tensors along an existing axis; all other dimensions must agree.
pub fn concat<T: Borrow<Tensor>>(tensors: &[T], axis: isize) -> Result<Tensor> {
    const OP: &str = "concat";
    let Some(first) = tensors.first().map(Borrow::borrow) else {
        return Err(Error::invalid(OP, "needs at least one tensor"));
    };
    let a = first.shape().axis(OP, axis)?;
    let mut total = 0usize;
    for (i, t) in tensors.iter().map(Borrow::borrow).enumerate() {
        let fits = t.rank() == first.rank()
            && t.dims().iter().zip(first.dims()).enumerate().all(|(d, (x, y))| d == a || x == y);
        if !fits {
            return Err(Error::shape(
                OP,
                format!(
                    "tensor {i} has shape {} but tensor 0 has shape {}; all dimensions but axis {a} \
                     must match",
                    t.shape(),
                    first.shape()
                ),
            ));
        }
        total = total.checked_add(t.dims()[a]).ok_or_else(|| {
            Error::invalid(OP, format!("axis {a} would hold more elements than fit in memory"))
        })?;
    }
    let mut dims = first.dims().to_vec();
    dims[a] = total;
    let out_shape = Shape::new(dims);
    let numel = out_shape.checked_numel()?;
    if numel == 0 {
        return Ok(Tensor::from_parts(out_shape, Vec::new()));
    }
    let outer: usize = first.dims()[..a].iter().product();
    let inner: usize = first.dims()[a + 1..].iter().product();
    let parts: Vec<(&[f32], usize)> =
        tensors.iter().map(Borrow::borrow).map(|t| (t.data(), t.dims()[a] * inner)).collect();
    Ok(Tensor::from_parts(out_shape, interleave(&parts, outer, numel)))
}

/// Joins equally shaped tensors along a new axis inserted at `axis`.
pub fn stack<T: Borrow<Tensor>>(tensors: &[T], axis: isize) -> Result<Tensor> {
    const OP: &str = "stack";
    let Some(first) = tensors.first().map(Borrow::borrow) else {
        return Err(Error::invalid(OP, "needs at least one tensor"));
    };
    let a = insertion_axis(OP, first.shape(), axis)?;
    for (i, t) in tensors.iter().map(Borrow::borrow).enumerate() {
        if t.dims() != first.dims() {
            return Err(Error::shape(
                OP,
                format!(
                    "tensor {i} has shape {} but tensor 0 has shape {}; stacked tensors must have equal \
                     shapes",
                    t.shape(),
                    first.shape()
                ),
            ));
        }
    }
    let mut dims = first.dims().to_vec();
    dims.insert(a, tensors.len());
    let out_shape = Shape::new(dims);
    let numel = out_shape.checked_numel()?;
    if numel == 0 {
        return Ok(Tensor::from_parts(out_shape, Vec::new()));
    }
    let outer: usize = first.dims()[..a].iter().product();
    let inner: usize = first.dims()[a..].iter().product();
    let parts: Vec<(&[f32], usize)> = tensors.iter().map(|t| (t.borrow().data(), inner)).collect();
    Ok(Tensor::from_parts(out_shape, interleave(&parts, outer, numel)))
}

/// Elements `start, start + step, …` below `end` along the resolved axis `a`; bounds checked.
fn slice_resolved(x: &Tensor, a: usize, start: usize, end: usize, step: usize) -> Tensor {
    let mut dims = x.dims().to_vec();
    dims[a] = (end - start).div_ceil(step);
    if x.numel() == 0 {
        // As in `permute_resolved`: nothing to read, strides not needed.
        return Tensor::from_parts(Shape::new(dims), Vec::new());
    }
    let mut strides = x.shape().strides();
    let base = start * strides[a];
    strides[a] *= step;
    let data = gather(x.data(), &dims, &strides, base);
    Tensor::from_parts(Shape::new(dims), data)
}

/// Elements `start..end` with stride `step ≥ 1` along `axis` (Python's `x[..., start:end:step]`).
pub fn slice(x: &Tensor, axis: isize, start: usize, end: usize, step: usize) -> Result<Tensor> {
    const OP: &str = "slice";
    let a = x.shape().axis(OP, axis)?;
    if step == 0 {
        return Err(Error::invalid(OP, "step must be at least 1, got 0"));
    }
    let size = x.dims()[a];
    if end > size {
        return Err(Error::shape(
            OP,
            format!("end {end} is past the size {size} of axis {axis} (shape {})", x.shape()),
        ));
    }
    if start > end {
        return Err(Error::shape(
            OP,
            format!("start {start} is after end {end} on axis {axis} (shape {})", x.shape()),
        ));
    }
    Ok(slice_resolved(x, a, start, end, step))
}

/// `length` elements from `start` along `axis` (`torch.narrow`).
pub fn narrow(x: &Tensor, axis: isize, start: usize, length: usize) -> Result<Tensor> {
    let a = x.shape().axis("narrow", axis)?;
    let size = x.dims()[a];
    match start.checked_add(length) {
        Some(end) if end <= size => Ok(slice_resolved(x, a, start, end, 1)),
        _ => Err(Error::shape(
            "narrow",
            format!(
                "start {start} + length {length} exceeds the size {size} of axis {axis} (shape {})",
                x.shape()
            ),
        )),
    }
}

/// Pieces of `split_size` elements along `axis`, the last one smaller if the size is not a
/// multiple (`torch.split` with an integer). An empty axis gives one empty piece.
pub fn split(x: &Tensor, split_size: usize, axis: isize) -> Result<Vec<Tensor>> {
    let a = x.shape().axis("split", axis)?;
    if split_size == 0 {
        return Err(Error::invalid("split", "split size must be at least 1, got 0"));
    }
    let size = x.dims()[a];
    if size == 0 {
        return Ok(vec![x.clone()]);
    }
    Ok((0..size).step_by(split_size).map(|s| slice_resolved(x, a, s, size.min(s + split_size), 1)).collect())
}

/// Pieces of the given sizes along `axis`; they must add up to its size.
pub fn split_sizes(x: &Tensor, sizes: &[usize], axis: isize) -> Result<Vec<Tensor>> {
    let a = x.shape().axis("split_sizes", axis)?;
    let size = x.dims()[a];
    let total = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
    if total != Some(size) {
        let total = total.map_or_else(|| "more than fits in memory".to_string(), |t| t.to_string());
        return Err(Error::shape(
            "split_sizes",
            format!(
                "sizes {sizes:?} add up to {total} but axis {axis} of shape {} has size {size}",
                x.shape()
            ),
        ));
    }
    let mut start = 0;
    Ok(sizes
        .iter()
        .map(|&len| {
            start += len;
            slice_resolved(x, a, start - len, start, 1)
        })
        .collect())
}

/// `chunks` pieces of `⌈size/chunks⌉` elements along `axis` (`torch.chunk`): fewer when the size
/// runs out first, e.g. 5 elements in 4 chunks give pieces of 2, 2 and 1.
pub fn chunk(x: &Tensor, chunks: usize, axis: isize) -> Result<Vec<Tensor>> {
    let a = x.shape().axis("chunk", axis)?;
    if chunks == 0 {
        return Err(Error::invalid("chunk", "number of chunks must be at least 1, got 0"));
    }
    let size = x.dims()[a];
    if size == 0 {
        return Ok(vec![x.clone(); chunks]);
    }
    split(x, size.div_ceil(chunks), axis)
}

impl Tensor {
    /// See [`reshape`]; copies the data, [`Tensor::into_reshape`] does not.
    pub fn reshape(&self, dims: &[isize]) -> Result<Tensor> {
        reshape(self, dims)
    }

    /// [`reshape`] reusing this tensor's buffer.
    pub fn into_reshape(self, dims: &[isize]) -> Result<Tensor> {
        let shape = resolve_reshape(self.shape(), dims)?;
        Ok(Tensor::from_parts(shape, self.into_data()))
    }

    /// See [`flatten`].
    pub fn flatten(&self, start_axis: isize, end_axis: isize) -> Result<Tensor> {
        flatten(self, start_axis, end_axis)
    }

    /// See [`squeeze`].
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        squeeze(self, axis)
    }

    /// See [`unsqueeze`].
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor> {
        unsqueeze(self, axis)
    }

    /// See [`permute`].
    pub fn permute(&self, axes: &[isize]) -> Result<Tensor> {
        permute(self, axes)
    }

    /// See [`transpose`].
    pub fn transpose(&self, axis_a: isize, axis_b: isize) -> Result<Tensor> {
        transpose(self, axis_a, axis_b)
    }

    /// See [`pad`].
    pub fn pad(&self, pads: &[(usize, usize)], value: f32) -> Result<Tensor> {
        pad(self, pads, value)
    }

    /// See [`slice()`].
    pub fn slice(&self, axis: isize, start: usize, end: usize, step: usize) -> Result<Tensor> {
        slice(self, axis, start, end, step)
    }

    /// See [`narrow`].
    pub fn narrow(&self, axis: isize, start: usize, length: usize) -> Result<Tensor> {
        narrow(self, axis, start, length)
    }

    /// See [`split`].
    pub fn split(&self, split_size: usize, axis: isize) -> Result<Vec<Tensor>> {
        split(self, split_size, axis)
    }

    /// See [`chunk`].
    pub fn chunk(&self, chunks: usize, axis: isize) -> Result<Vec<Tensor>> {
        chunk(self, chunks, axis)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn iota(dims: &[usize]) -> Tensor {
        let n = dims.iter().product();
        Tensor::new(dims, (0..n).map(|i| i as f32).collect()).unwrap()
    }

    fn message(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn coalesce_merges_contiguous_axes_and_drops_ones() {
        let (dims, [s]) = coalesce(&[2, 1, 3, 4], [&[12, 12, 4, 1]]);
        assert_eq!((dims, s), (vec![24], vec![1]));
        // A transposed pair cannot merge, but the contiguous tail can.
        let (dims, [s]) = coalesce(&[3, 2, 4], [&[4, 12, 1]]);
        assert_eq!((dims, s), (vec![3, 2, 4], vec![4, 12, 1]));
        let (dims, [a, b]) = coalesce(&[2, 3, 4], [&[12, 4, 1], &[0, 0, 1]]);
        assert_eq!((dims, a, b), (vec![6, 4], vec![4, 1], vec![0, 1]));
    }

    #[test]
    fn runs_cover_a_range_in_order() {
        let mut seen = Vec::new();
        for_each_run(&[2, 3], [&[3, 1]], [0], 2..5, |p, len, [o]| seen.push((p, len, o)));
        assert_eq!(seen, vec![(2, 1, 2), (3, 2, 3)]);
        let mut scalar = Vec::new();
        for_each_run(&[], [&[]], [7], 0..1, |p, len, [o]| scalar.push((p, len, o)));
        assert_eq!(scalar, vec![(0, 1, 7)]);
    }

    #[test]
    fn reshape_infers_one_dimension() {
        let x = iota(&[2, 3, 4]);
        let y = x.reshape(&[4, -1]).unwrap();
        assert_eq!(y.dims(), &[4, 6]);
        assert_eq!(y.data(), x.data());
        assert_eq!(x.clone().into_reshape(&[-1]).unwrap().dims(), &[24]);
        assert_eq!(iota(&[0, 3]).reshape(&[3, 0, 2]).unwrap().dims(), &[3, 0, 2]);
        assert_eq!(Tensor::scalar(1.0).reshape(&[1, 1]).unwrap().dims(), &[1, 1]);
    }

    #[test]
    fn reshape_errors() {
        let x = iota(&[2, 3]);
        assert_eq!(
            message(x.reshape(&[4, 2])),
            "reshape: cannot reshape [2, 3] (6 elements) into [4, 2] (8 elements)"
        );
        assert_eq!(
            message(x.reshape(&[4, -1])),
            "reshape: cannot reshape [2, 3] (6 elements) into [4, -1]: 6 is not a multiple of 4"
        );
        assert_eq!(
            message(x.reshape(&[-1, 2, -1])),
            "reshape: invalid argument: only one dimension can be -1, got [-1, 2, -1]"
        );
        assert_eq!(
            message(x.reshape(&[3, -2])),
            "reshape: invalid argument: dimension -2 at position 1 of [3, -2] is negative; only -1 \
             (inferred) is allowed"
        );
        assert_eq!(
            message(iota(&[0, 3]).reshape(&[0, -1])),
            "reshape: cannot reshape [0, 3] (0 elements) into [0, -1]: the size of -1 is ambiguous when \
             the other dimensions hold 0 elements"
        );
        assert_eq!(
            message(x.reshape(&[isize::MAX, isize::MAX])),
            format!(
                "reshape: cannot reshape [2, 3] (6 elements) into [{m}, {m}]: more elements than fit in memory",
                m = isize::MAX
            )
        );
    }

    #[test]
    fn flatten_merges_an_inclusive_range() {
        let x = iota(&[2, 3, 4, 5]);
        assert_eq!(x.flatten(1, -1).unwrap().dims(), &[2, 60]);
        assert_eq!(x.flatten(0, 1).unwrap().dims(), &[6, 4, 5]);
        assert_eq!(x.flatten(2, 2).unwrap().dims(), &[2, 3, 4, 5]);
        assert_eq!(Tensor::scalar(3.0).flatten(0, -1).unwrap().dims(), &[1]);
        assert_eq!(
            message(x.flatten(2, 1)),
            "flatten: start axis 2 comes after end axis 1 in shape [2, 3, 4, 5]"
        );
        assert_eq!(
            message(x.flatten(0, 4)),
            "flatten: axis 4 is out of range for a tensor of shape [2, 3, 4, 5] (rank 4)"
        );
    }

    #[test]
    fn squeeze_and_unsqueeze() {
        let x = iota(&[2, 1, 3, 1]);
        assert_eq!(x.squeeze(1).unwrap().dims(), &[2, 3, 1]);
        assert_eq!(x.squeeze(-1).unwrap().dims(), &[2, 1, 3]);
        assert_eq!(squeeze_all(&x).dims(), &[2, 3]);
        assert_eq!(message(x.squeeze(0)), "squeeze: axis 0 of shape [2, 1, 3, 1] has size 2, not 1");
        let y = iota(&[2, 3]);
        assert_eq!(y.unsqueeze(0).unwrap().dims(), &[1, 2, 3]);
        assert_eq!(y.unsqueeze(2).unwrap().dims(), &[2, 3, 1]);
        assert_eq!(y.unsqueeze(-1).unwrap().dims(), &[2, 3, 1]);
        assert_eq!(y.unsqueeze(-3).unwrap().dims(), &[1, 2, 3]);
        assert_eq!(
            message(y.unsqueeze(3)),
            "unsqueeze: axis 3 is out of range for inserting into shape [2, 3] (valid: -3..=2)"
        );
        assert!(y.unsqueeze(-4).is_err());
    }

    #[test]
    fn permute_and_transpose() {
        let x = iota(&[2, 3]);
        let t = x.transpose(0, 1).unwrap();
        assert_eq!(t.dims(), &[3, 2]);
        assert_eq!(t.data(), &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0]);
        let x = iota(&[2, 3, 4]);
        let p = x.permute(&[2, 0, -2]).unwrap();
        assert_eq!(p.dims(), &[4, 2, 3]);
        assert_eq!(p.get(&[3, 1, 2]).unwrap(), x.get(&[1, 2, 3]).unwrap());
        assert_eq!(
            message(x.transpose(0, 3)),
            "transpose: axis 3 is out of range for a tensor of shape [2, 3, 4] (rank 3)"
        );
    }

    #[test]
    fn permute_errors() {
        let x = iota(&[2, 3, 4]);
        assert_eq!(
            message(x.permute(&[0, 0, 1])),
            "permute: [0, 0, 1] is not a permutation of the 3 axes of shape [2, 3, 4]"
        );
        assert_eq!(
            message(x.permute(&[0, 1])),
            "permute: [0, 1] is not a permutation of the 3 axes of shape [2, 3, 4]"
        );
        assert_eq!(
            message(x.permute(&[0, 1, 3])),
            "permute: [0, 1, 3] is not a permutation of the 3 axes of shape [2, 3, 4]"
        );
        assert!(x.permute(&[0, 1, -4]).is_err());
    }

    #[test]
    fn pad_surrounds_with_a_value() {
        let x = iota(&[2, 2]);
        let y = x.pad(&[(1, 0), (0, 2)], -1.0).unwrap();
        assert_eq!(y.dims(), &[3, 4]);
        assert_eq!(y.data(), &[-1.0, -1.0, -1.0, -1.0, 0.0, 1.0, -1.0, -1.0, 2.0, 3.0, -1.0, -1.0]);
        assert_eq!(Tensor::scalar(5.0).pad(&[], 0.0).unwrap().data(), &[5.0]);
        assert_eq!(iota(&[0, 2]).pad(&[(1, 1), (0, 0)], 7.0).unwrap().data(), &[7.0; 4]);
    }

    #[test]
    fn pad_errors() {
        let x = iota(&[2, 3, 4]);
        assert_eq!(
            message(x.pad(&[(1, 1)], 0.0)),
            "pad: 1 (before, after) pairs given for shape [2, 3, 4] (rank 3); give one pair per axis"
        );
        assert_eq!(
            message(iota(&[2]).pad(&[(usize::MAX, 0)], 0.0)),
            format!("pad: invalid argument: padding [({}, 0)] makes shape [2] too large", usize::MAX)
        );
        assert!(iota(&[2, 2]).pad(&[(usize::MAX / 4, 0), (usize::MAX / 4, 0)], 0.0).is_err());
    }

    #[test]
    fn concat_and_stack() {
        let a = iota(&[2, 1]);
        let b = Tensor::new([2, 2], vec![10.0, 11.0, 12.0, 13.0]).unwrap();
        let c = concat(&[&a, &b], 1).unwrap();
        assert_eq!(c.dims(), &[2, 3]);
        assert_eq!(c.data(), &[0.0, 10.0, 11.0, 1.0, 12.0, 13.0]);
        let c = concat(&[a.clone(), a.clone()], 0).unwrap();
        assert_eq!(c.data(), &[0.0, 1.0, 0.0, 1.0]);
        let s = stack(&[&a, &a], -1).unwrap();
        assert_eq!(s.dims(), &[2, 1, 2]);
        assert_eq!(s.data(), &[0.0, 0.0, 1.0, 1.0]);
        assert_eq!(stack(&[&a, &a], 0).unwrap().dims(), &[2, 2, 1]);
    }

    #[test]
    fn concat_and_stack_errors() {
        let a = iota(&[2, 3]);
        let b = iota(&[3, 4]);
        assert_eq!(
            message(concat(&[&a, &a, &b], 1)),
            "concat: tensor 2 has shape [3, 4] but tensor 0 has shape [2, 3]; all dimensions but axis 1 must match"
        );
        assert_eq!(
            message(concat(&[&a, &iota(&[6])], 0)),
            "concat: tensor 1 has shape [6] but tensor 0 has shape [2, 3]; all dimensions but axis 0 must match"
        );
        assert_eq!(message(concat::<Tensor>(&[], 0)), "concat: invalid argument: needs at least one tensor");
        assert_eq!(
            message(concat(&[&a], 2)),
            "concat: axis 2 is out of range for a tensor of shape [2, 3] (rank 2)"
        );
        assert_eq!(
            message(stack(&[&a, &b], 0)),
            "stack: tensor 1 has shape [3, 4] but tensor 0 has shape [2, 3]; stacked tensors must have equal shapes"
        );
        assert_eq!(message(stack::<&Tensor>(&[], 0)), "stack: invalid argument: needs at least one tensor");
        assert_eq!(
            message(stack(&[&a], 3)),
            "stack: axis 3 is out of range for inserting into shape [2, 3] (valid: -3..=2)"
        );
    }

    #[test]
    fn slice_with_steps() {
        let x = iota(&[2, 7]);
        let y = x.slice(1, 1, 7, 3).unwrap();
        assert_eq!(y.dims(), &[2, 2]);
        assert_eq!(y.data(), &[1.0, 4.0, 8.0, 11.0]);
        assert_eq!(x.slice(-1, 3, 3, 1).unwrap().dims(), &[2, 0]);
        assert_eq!(x.narrow(0, 1, 1).unwrap().data(), &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0, 13.0]);
    }

    #[test]
    fn slice_errors() {
        let x = iota(&[2, 4]);
        assert_eq!(message(x.slice(1, 0, 4, 0)), "slice: invalid argument: step must be at least 1, got 0");
        assert_eq!(message(x.slice(1, 1, 5, 1)), "slice: end 5 is past the size 4 of axis 1 (shape [2, 4])");
        assert_eq!(message(x.slice(-1, 3, 2, 1)), "slice: start 3 is after end 2 on axis -1 (shape [2, 4])");
        assert_eq!(
            message(x.slice(2, 0, 1, 1)),
            "slice: axis 2 is out of range for a tensor of shape [2, 4] (rank 2)"
        );
        assert_eq!(
            message(x.narrow(1, 3, 2)),
            "narrow: start 3 + length 2 exceeds the size 4 of axis 1 (shape [2, 4])"
        );
        assert!(x.narrow(1, usize::MAX, 2).is_err());
    }

    #[test]
    fn split_and_chunk() {
        let x = iota(&[5, 2]);
        let parts = x.split(2, 0).unwrap();
        assert_eq!(parts.iter().map(|p| p.dims()[0]).collect::<Vec<_>>(), vec![2, 2, 1]);
        let parts = split_sizes(&x, &[1, 4], 0).unwrap();
        assert_eq!(parts[0].data(), &[0.0, 1.0]);
        let parts = x.chunk(4, 0).unwrap();
        assert_eq!(parts.iter().map(|p| p.dims()[0]).collect::<Vec<_>>(), vec![2, 2, 1]);
        let empty = iota(&[0, 2]);
        assert_eq!(empty.split(3, 0).unwrap().len(), 1);
        assert_eq!(empty.chunk(3, 0).unwrap().len(), 3);
    }

    #[test]
    fn split_errors() {
        let x = iota(&[5, 2]);
        assert_eq!(message(x.split(0, 0)), "split: invalid argument: split size must be at least 1, got 0");
        assert_eq!(
            message(x.chunk(0, 1)),
            "chunk: invalid argument: number of chunks must be at least 1, got 0"
        );
        assert_eq!(
            message(split_sizes(&x, &[2, 2], 0)),
            "split_sizes: sizes [2, 2] add up to 4 but axis 0 of shape [5, 2] has size 5"
        );
        assert_eq!(
            message(split_sizes(&x, &[usize::MAX, 2], 0)),
            format!(
                "split_sizes: sizes [{}, 2] add up to more than fits in memory but axis 0 of shape [5, 2] has size 5",
                usize::MAX
            )
        );
        assert!(x.split(1, 2).is_err());
        assert!(x.chunk(1, -3).is_err());
    }

    /// A tensor without elements may still have axes whose product overflows; no op may panic on it.
    #[test]
    fn empty_tensors_with_huge_axes() {
        let x = Tensor::zeros([0, usize::MAX, 2]).unwrap();
        // (Orders whose running product overflows, like [2, usize::MAX, 0], trip the debug check
        // of `Tensor::from_parts`, which multiplies the dimensions unchecked.)
        assert_eq!(x.permute(&[0, 2, 1]).unwrap().dims(), &[0, 2, usize::MAX]);
        assert_eq!(x.transpose(0, 1).unwrap().dims(), &[usize::MAX, 0, 2]);
        assert_eq!(x.slice(1, 3, 9, 2).unwrap().dims(), &[0, 3, 2]);
        assert_eq!(x.narrow(2, 1, 1).unwrap().dims(), &[0, usize::MAX, 1]);
        assert_eq!(x.pad(&[(0, 0), (0, 0), (1, 1)], 0.0).unwrap().dims(), &[0, usize::MAX, 4]);
        assert!(x.pad(&[(1, 0), (0, 0), (0, 0)], 0.0).is_err());
        assert_eq!(x.flatten(0, 1).unwrap().dims(), &[0, 2]);
        assert_eq!(
            message(x.flatten(1, 2)),
            format!(
                "flatten: invalid argument: merging axes 1..=2 of shape [0, {}, 2] overflows",
                usize::MAX
            )
        );
        assert_eq!(concat(&[&x, &x], 0).unwrap().dims(), &[0, usize::MAX, 2]);
        assert_eq!(
            message(concat(&[&x, &x], 1)),
            "concat: invalid argument: axis 1 would hold more elements than fit in memory"
        );
        assert_eq!(stack(&[&x, &x], 1).unwrap().dims(), &[0, 2, usize::MAX, 2]);
        assert_eq!(x.split(1, 2).unwrap().len(), 2);
        assert_eq!(x.chunk(3, 0).unwrap().len(), 3);
        assert_eq!(x.unsqueeze(0).unwrap().dims(), &[1, 0, usize::MAX, 2]);
        assert!(x.reshape(&[0, -1]).is_err());
    }

    /// A shape of rank 0..=4 with sizes 0..=4 (mostly non-zero) and random data.
    fn tensor_strategy(max_rank: usize) -> impl Strategy<Value = Tensor> {
        prop::collection::vec(prop_oneof![1 => Just(0usize), 8 => 1usize..5], 0..=max_rank).prop_flat_map(
            |dims| {
                let n = dims.iter().product::<usize>();
                prop::collection::vec(-100.0f32..100.0, n)
                    .prop_map(move |data| Tensor::new(dims.clone(), data).unwrap())
            },
        )
    }

    fn unravel(mut p: usize, dims: &[usize]) -> Vec<usize> {
        let mut index = vec![0; dims.len()];
        for a in (0..dims.len()).rev() {
            index[a] = p % dims[a];
            p /= dims[a];
        }
        index
    }

    proptest! {
        #[test]
        fn permute_matches_index_arithmetic(
            (x, perm) in tensor_strategy(5).prop_flat_map(|x| {
                let rank = x.rank();
                (Just(x), Just((0..rank as isize).collect::<Vec<_>>()).prop_shuffle())
            })
        ) {
            let y = x.permute(&perm).unwrap();
            for p in 0..y.numel() {
                let out_index = unravel(p, y.dims());
                let mut in_index = vec![0; x.rank()];
                for (i, &axis) in perm.iter().enumerate() {
                    in_index[axis as usize] = out_index[i];
                }
                prop_assert_eq!(y.data()[p], x.get(&in_index).unwrap());
            }
            let mut inverse = vec![0isize; perm.len()];
            for (i, &axis) in perm.iter().enumerate() {
                inverse[axis as usize] = i as isize;
            }
            prop_assert_eq!(y.permute(&inverse).unwrap(), x);
        }

        #[test]
        fn pad_matches_index_arithmetic_and_slicing_undoes_it(
            (x, pads) in tensor_strategy(4).prop_flat_map(|x| {
                let rank = x.rank();
                (Just(x), prop::collection::vec((0usize..3, 0usize..3), rank))
            })
        ) {
            let y = x.pad(&pads, 0.5).unwrap();
            for p in 0..y.numel() {
                let index = unravel(p, y.dims());
                let inside: Option<Vec<usize>> = index
                    .iter()
                    .zip(&pads)
                    .zip(x.dims())
                    .map(|((&i, &(before, _)), &d)| i.checked_sub(before).filter(|&j| j < d))
                    .collect();
                let expected = inside.map_or(0.5, |i| x.get(&i).unwrap());
                prop_assert_eq!(y.data()[p], expected);
            }
            let mut back = y;
            for (axis, (&(before, _), &d)) in pads.iter().zip(x.dims()).enumerate() {
                back = back.slice(axis as isize, before, before + d, 1).unwrap();
            }
            prop_assert_eq!(back, x);
        }

        #[test]
        fn slice_matches_index_arithmetic(
            (x, axis, start, end, step) in tensor_strategy(4)
                .prop_filter("needs an axis", |x| x.rank() > 0)
                .prop_flat_map(|x| {
                    let rank = x.rank();
                    (Just(x), 0..rank)
                })
                .prop_flat_map(|(x, axis)| {
                    let d = x.dims()[axis];
                    (Just(x), Just(axis), 0..=d, 0..=d, 1usize..4)
                })
                .prop_map(|(x, axis, a, b, step)| (x, axis, a.min(b), a.max(b), step))
        ) {
            let y = x.slice(axis as isize, start, end, step).unwrap();
            prop_assert_eq!(y.dims()[axis], (end - start).div_ceil(step));
            for p in 0..y.numel() {
                let mut index = unravel(p, y.dims());
                index[axis] = start + index[axis] * step;
                prop_assert_eq!(y.data()[p], x.get(&index).unwrap());
            }
        }

        #[test]
        fn split_then_concat_is_the_identity(
            (x, axis, cuts, chunks) in tensor_strategy(4)
                .prop_filter("needs an axis", |x| x.rank() > 0)
                .prop_flat_map(|x| {
                    let rank = x.rank();
                    (Just(x), 0..rank)
                })
                .prop_flat_map(|(x, axis)| {
                    let d = x.dims()[axis];
                    (Just(x), Just(axis), prop::collection::vec(0..=d, 0..4), 1usize..6)
                })
        ) {
            let d = x.dims()[axis];
            let mut cuts = cuts;
            cuts.push(0);
            cuts.push(d);
            cuts.sort_unstable();
            let sizes: Vec<usize> = cuts.windows(2).map(|w| w[1] - w[0]).collect();
            let a = axis as isize;
            let parts = split_sizes(&x, &sizes, a).unwrap();
            prop_assert_eq!(concat(&parts, a).unwrap(), x.clone());
            let parts = x.chunk(chunks, a).unwrap();
            prop_assert!(parts.len() <= chunks);
            prop_assert_eq!(concat(&parts, a).unwrap(), x.clone());
            // Stacking needs at least one piece, so an empty axis has nothing to unstack.
            if d > 0 {
                let unstacked: Vec<Tensor> = x.split(1, a).unwrap().iter().map(|p| p.squeeze(a).unwrap()).collect();
                prop_assert_eq!(stack(&unstacked, a).unwrap(), x);
            }
        }
    }
}
