//! Fresh buffers that a kernel writes in full, without zeroing them first.
//!
//! `vec![0.0; n]` writes every element once before the kernel writes it again: for the
//! activations of a training step (megabytes each, a few hundred per step) that wasted pass was a
//! tenth of a ResNet-20 step. The builders here hand the kernel the uninitialised memory as
//! `MaybeUninit` and take the values from an iterator, so every element is written exactly once
//! and no uninitialised value can be read.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Writes one block of a fresh buffer front to back: everything before the cursor has been
/// written, and [`fill_blocks`] zeroes whatever a block leaves after it.
pub(crate) struct BlockWriter<'a> {
    dst: &'a mut [MaybeUninit<f32>],
    at: usize,
}

impl<'a> BlockWriter<'a> {
    /// A writer over memory that already holds values (a buffer kept between calls), from its
    /// start.
    pub fn over(dst: &'a mut [f32]) -> Self {
        // SAFETY: same layout; the writer only ever stores initialised values (zeros, copies,
        // gathered or given values), so `dst` stays initialised.
        let dst = unsafe { &mut *(dst as *mut [f32] as *mut [MaybeUninit<f32>]) };
        BlockWriter { dst, at: 0 }
    }

    /// Values written so far.
    pub fn written(&self) -> usize {
        self.at
    }

    /// `n` values of `src`, `step` apart from `start` on.
    pub fn gather(&mut self, src: &[f32], start: usize, step: usize, n: usize) {
        for (i, d) in self.dst[self.at..self.at + n].iter_mut().enumerate() {
            d.write(src[start + i * step]);
        }
        self.at += n;
    }

    /// `n` zeros.
    pub fn zeros(&mut self, n: usize) {
        for d in &mut self.dst[self.at..self.at + n] {
            d.write(0.0);
        }
        self.at += n;
    }

    /// A copy of `src`.
    pub fn copy(&mut self, src: &[f32]) {
        for (d, &v) in self.dst[self.at..self.at + src.len()].iter_mut().zip(src) {
            d.write(v);
        }
        self.at += src.len();
    }

    /// The values of `values`, up to the end of the block.
    pub fn extend(&mut self, values: impl IntoIterator<Item = f32>) {
        for (d, v) in self.dst[self.at..].iter_mut().zip(values) {
            d.write(v);
            self.at += 1;
        }
    }
}

/// A vector of `len` values in blocks of `block` elements (the last may be shorter), each
/// written by `fill(i, range, writer)` for block `i` and its element range, in parallel with at
/// least `min_blocks` blocks per task. The blocks depend on `block` only, never on the thread
/// count. What a block leaves unwritten is zero.
pub(crate) fn fill_blocks(
    len: usize,
    block: usize,
    min_blocks: usize,
    fill: impl Fn(usize, std::ops::Range<usize>, &mut BlockWriter) + Sync,
) -> Vec<f32> {
    let mut out = Vec::with_capacity(len);
    if len == 0 {
        return out;
    }
    let block = block.max(1);
    let run = |(i, dst): (usize, &mut [MaybeUninit<f32>])| {
        let range = i * block..i * block + dst.len();
        let mut writer = BlockWriter { dst, at: 0 };
        fill(i, range, &mut writer);
        let rest = writer.dst.len() - writer.at;
        writer.zeros(rest);
    };
    let spare = &mut out.spare_capacity_mut()[..len];
    if len <= block {
        run((0, spare));
    } else {
        spare.par_chunks_mut(block).with_min_len(min_blocks.max(1)).enumerate().for_each(run);
    }
    // SAFETY: `run` wrote every element of every block of `spare[..len]`: the writer's cursor
    // only moves past written elements, and the rest of each block is zeroed.
    unsafe { out.set_len(len) };
    out
}

/// [`fill_blocks`] with each block's values from an iterator.
pub(crate) fn collect_blocks<I>(
    len: usize,
    block: usize,
    min_blocks: usize,
    values: impl Fn(usize, std::ops::Range<usize>) -> I + Sync,
) -> Vec<f32>
where
    I: IntoIterator<Item = f32>,
{
    fill_blocks(len, block, min_blocks, |i, range, writer| writer.extend(values(i, range)))
}

/// `value` in every element of a fresh block, which is then the caller's to write.
fn filled<T: Copy>(block: &mut [MaybeUninit<T>], value: T) -> &mut [T] {
    for slot in block.iter_mut() {
        slot.write(value);
    }
    // SAFETY: every element was just written, and `MaybeUninit<T>` has `T`'s layout.
    unsafe { &mut *(block as *mut [MaybeUninit<T>] as *mut [T]) }
}

/// A vector of `len` values in blocks of `block` (the last may be shorter), each set to
/// `value` by its own task and then handed to `fill(i, block)`. `vec![value; len]` writes the
/// whole buffer on the calling thread first: a serial pass over megabytes, after which each
/// task finds its block cold again (LeNet's pooling spent 4% of a training step in it).
pub(crate) fn fresh_blocks<T: Copy + Send + Sync>(
    len: usize,
    block: usize,
    value: T,
    fill: impl Fn(usize, &mut [T]) + Sync,
) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(block.max(1))
        .enumerate()
        .for_each(|(i, dst)| fill(i, filled(dst, value)));
    // SAFETY: every block of `spare[..len]` was filled with `value` before `fill` saw it.
    unsafe { out.set_len(len) };
    out
}

/// [`fresh_blocks`] for two vectors of the same length and blocks, filled together.
pub(crate) fn fresh_block_pairs<A: Copy + Send + Sync, B: Copy + Send + Sync>(
    len: usize,
    block: usize,
    (a_value, b_value): (A, B),
    fill: impl Fn(usize, &mut [A], &mut [B]) + Sync,
) -> (Vec<A>, Vec<B>) {
    let (mut a, mut b) = (Vec::with_capacity(len), Vec::with_capacity(len));
    a.spare_capacity_mut()[..len]
        .par_chunks_mut(block.max(1))
        .zip(b.spare_capacity_mut()[..len].par_chunks_mut(block.max(1)))
        .enumerate()
        .for_each(|(i, (a, b))| fill(i, filled(a, a_value), filled(b, b_value)));
    // SAFETY: every block of both spares was filled before `fill` saw it.
    unsafe {
        a.set_len(len);
        b.set_len(len);
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_cover_every_element_in_order() {
        let v = collect_blocks(10, 3, 1, |_, range| range.map(|i| i as f32));
        assert_eq!(v, (0..10).map(|i| i as f32).collect::<Vec<_>>());
        let by_block = collect_blocks(7, 2, 2, |i, range| range.map(move |_| i as f32));
        assert_eq!(by_block, [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0]);
        assert!(collect_blocks(0, 4, 1, |_, r| r.map(|i| i as f32)).is_empty());
    }

    #[test]
    fn writers_copy_and_zero_front_to_back() {
        let v = fill_blocks(10, 4, 1, |i, range, w| {
            w.zeros(1);
            w.copy(&vec![i as f32 + 1.0; range.len().min(3) - 1]);
        });
        assert_eq!(v, [0.0, 1.0, 1.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0, 3.0]);
    }

    #[test]
    fn fresh_blocks_start_from_the_value() {
        let v = fresh_blocks(7, 3, 2.0f32, |i, block| block[0] += i as f32);
        assert_eq!(v, [2.0, 2.0, 2.0, 3.0, 2.0, 2.0, 4.0]);
        let (a, b) = fresh_block_pairs(5, 2, (1.0f32, 7usize), |i, a, b| {
            a[a.len() - 1] = -(i as f32);
            b[0] = i;
        });
        assert_eq!(a, [1.0, 0.0, 1.0, -1.0, -2.0]);
        assert_eq!(b, [0, 7, 1, 7, 2]);
        assert!(fresh_blocks(0, 4, 0usize, |_, _| unreachable!()).is_empty());
    }

    #[test]
    fn short_iterators_leave_zeros() {
        let v = collect_blocks(6, 3, 1, |_, range| range.take(1).map(|_| 5.0));
        assert_eq!(v, [5.0, 0.0, 0.0, 5.0, 0.0, 0.0]);
    }
}
