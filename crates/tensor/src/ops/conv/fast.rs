//! The production convolution: the filters times the input taps, with a packed GEMM.
//!
//! Shapes as in the module docs, lifted to `[D, H, W]`. For image `n` and group `g` the output
//! block `y[n, g] [C_out/G, P]` (P = output positions) is `W_g [C_out/G, C_in/G·|F|] · taps`,
//! where column `p` of `taps` holds the inputs output position `p` reads. The filters are packed
//! once per call (`crate::gemm::packed`); the taps are never materialised as a full im2col
//! matrix:
//! - stride 1 (most layers): the taps are the zero-padded image read at one offset per tap
//!   ([`shifted`]);
//! - larger strides, and 1×1: an im2col tile per task, written with contiguous copies
//!   ([`strided`]).
//!
//! Tasks (image, group, tile of positions, and for few large images a range of filters) run in
//! parallel and each writes its own block of the output.
//!
//! Results do not depend on the number of threads: the tiling is a function of the geometry
//! only, and each output element is produced by one GEMM call over the same operands.

use std::cell::Cell;
use std::ops::Range;

use rayon::prelude::*;

use super::ConvGeometry;

use crate::gemm::packed::{self, MR, NR, PackedA, RowsB};

/// Most output positions per task: a tile of packed taps for the 3×3×64 layers (576 rows) is
/// then at most 576 KiB, and its 16-column strips, one at a time, stay in L1.
const MAX_TILE: usize = 256;

thread_local! {
    /// Each worker keeps its packed-taps buffer between tasks and calls instead of reallocating.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Output positions per task: tiles of at most `MAX_TILE`, balanced, in whole strips of `NR`.
fn tile_width(positions: usize) -> usize {
    let tiles = positions.div_ceil(MAX_TILE).max(1);
    positions.div_ceil(tiles).div_ceil(NR) * NR
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint (rows, column-tile) blocks of the output, see `forward`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so closures capture the `Send` wrapper and not the raw field.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

pub(crate) fn forward(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    forward_with(g, x, w, bias, false)
}

/// The same computation through the portable micro-kernel (for the tests that compare them).
#[cfg(test)]
pub(crate) fn forward_portable(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    forward_with(g, x, w, bias, true)
}

/// How the tasks split the work: (image, group, tile of positions, range of filter blocks).
struct Plan {
    positions: usize,
    tile: usize,
    tiles: usize,
    row_blocks: usize,
    blocks_per_chunk: usize,
    row_chunks: usize,
}

impl Plan {
    fn new(g: &ConvGeometry, positions: usize) -> Self {
        let tile = tile_width(positions);
        let tiles = positions.div_ceil(tile);
        let row_blocks = g.out_per_group().div_ceil(MR);
        // Few (image, group, tile) tasks, as for one large image: split the filters too, so every
        // thread has work. Each output element is still computed by the same sequence of FMAs.
        let base = g.batch * g.groups * tiles;
        let wanted = 2 * rayon::current_num_threads();
        let chunks = if base >= wanted { 1 } else { wanted.div_ceil(base).min(row_blocks) };
        let blocks_per_chunk = row_blocks.div_ceil(chunks);
        Plan {
            positions,
            tile,
            tiles,
            row_blocks,
            blocks_per_chunk,
            row_chunks: row_blocks.div_ceil(blocks_per_chunk),
        }
    }

    fn tasks(&self, g: &ConvGeometry) -> usize {
        g.batch * g.groups * self.tiles * self.row_chunks
    }

    /// (image, group, first position, positions, filter blocks) of task `t`.
    fn task(&self, g: &ConvGeometry, t: usize) -> (usize, usize, usize, usize, Range<usize>) {
        let (t, chunk) = (t / self.row_chunks, t % self.row_chunks);
        let n = t / (g.groups * self.tiles);
        let group = t / self.tiles % g.groups;
        let p0 = t % self.tiles * self.tile;
        let blocks =
            chunk * self.blocks_per_chunk..((chunk + 1) * self.blocks_per_chunk).min(self.row_blocks);
        (n, group, p0, self.tile.min(self.positions - p0), blocks)
    }
}

fn forward_with(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, portable: bool) -> Vec<f32> {
    let mut y = vec![0.0f32; g.batch * g.out_channels * g.output_volume()];
    if y.is_empty() {
        return y;
    }
    let k_dim = g.in_per_group() * g.kernel_volume();
    let filters: Vec<PackedA> = (0..g.groups)
        .map(|group| PackedA::new(&w[group * g.out_per_group() * k_dim..], g.out_per_group(), k_dim))
        .collect();
    // A 1×1 convolution's taps are the input rows themselves: copying a tile of them keeps the
    // GEMM's rows 1 KiB apart instead of a whole channel plane apart (fewer TLB misses).
    if g.stride == [1; 3] && !g.is_pointwise() {
        shifted(g, x, &filters, bias, &mut y, portable);
    } else {
        strided(g, x, &filters, bias, &mut y, portable);
    }
    y
}

/// Stride 1: the rows of `B` are the zero-padded image itself, shifted by each tap's offset.
///
/// Output positions are numbered in the padded volume, `p = z·Hp·Wp + h·Wp + w`, so that tap
/// `(c, fz, fr, fc)` of every position reads `padded[c·vol + fz·D·Hp·Wp + fr·D·Wp + fc·D + p]`:
/// one offset per tap, no im2col. Positions with `h ≥ H_out` or `w ≥ W_out` are computed and
/// dropped when the tile is copied out (for a 3×3 layer on 56×56, 3.5% extra work).
fn shifted(
    g: &ConvGeometry,
    x: &[f32],
    filters: &[PackedA],
    bias: Option<&[f32]>,
    y: &mut [f32],
    portable: bool,
) {
    let padded_dims: [usize; 3] = std::array::from_fn(|i| g.input[i] + g.pad_begin[i] + g.pad_end[i]);
    let [_, hp, wp] = padded_dims;
    let volume = padded_dims.iter().product::<usize>();
    let [od, oh, ow] = g.output;
    let positions = (od - 1) * hp * wp + (oh - 1) * wp + ow;
    let (cin_g, cout_g) = (g.in_per_group(), g.out_per_group());

    // The last strip of the last channel may read up to NR floats past the volume.
    let mut padded = vec![0.0f32; g.batch * g.in_channels * volume + NR];
    let [id, ih, iw] = g.input;
    let [pd, ph, pw] = g.pad_begin;
    padded[..g.batch * g.in_channels * volume]
        .par_chunks_mut(volume)
        .zip(x.par_chunks(g.input_volume()))
        .for_each(|(dst, src)| {
            for z in 0..id {
                for r in 0..ih {
                    let at = ((z + pd) * hp + r + ph) * wp + pw;
                    dst[at..at + iw].copy_from_slice(&src[(z * ih + r) * iw..][..iw]);
                }
            }
        });

    let [kd, kh, kw] = g.kernel;
    let [dd, dh, dw] = g.dilation;
    let mut offsets = Vec::with_capacity(cin_g * g.kernel_volume());
    for c in 0..cin_g {
        for fz in 0..kd {
            for fr in 0..kh {
                for fc in 0..kw {
                    offsets.push(c * volume + (fz * dd * hp + fr * dh) * wp + fc * dw);
                }
            }
        }
    }

    let plan = Plan::new(g, positions);
    let out = OutPtr(y.as_mut_ptr());
    let output_volume = g.output_volume();
    (0..plan.tasks(g)).into_par_iter().for_each(|t| {
        let (n, group, p0, len, blocks) = plan.task(g, t);
        let rows = blocks.start * MR..(blocks.end * MR).min(cout_g);
        let base = (n * g.in_channels + group * cin_g) * volume + p0;
        let taps = RowsB { data: &padded[base..], offsets: &offsets };
        let stride = packed::b_row_stride(len);
        let mut tile = SCRATCH.take();
        tile.clear();
        tile.resize(cout_g * stride, 0.0);
        // SAFETY: `tile` is this task's own buffer of cout_g rows of `stride` floats.
        unsafe {
            packed::gemm_packed(&filters[group], taps, len, blocks, tile.as_mut_ptr(), stride, portable)
        };

        // Copy the real output positions out, adding the bias.
        let mut p = p0;
        while p < p0 + len {
            let (z, h, w) = (p / (hp * wp), p / wp % hp, p % wp);
            let run = (wp - w).min(p0 + len - p);
            if h < oh && w < ow {
                let count = run.min(ow - w);
                let first = (z * oh + h) * ow + w;
                for k in rows.clone() {
                    let channel = group * cout_g + k;
                    let b = bias.map_or(0.0, |b| b[channel]);
                    // SAFETY: output (n, channel, z, h, w..w+count) belongs to this task alone:
                    // its positions come from this task's tile, its channel from its rows.
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            out.at((n * g.out_channels + channel) * output_volume + first),
                            count,
                        )
                    };
                    let src = &tile[k * stride + (p - p0)..][..count];
                    for (d, s) in dst.iter_mut().zip(src) {
                        *d = s + b;
                    }
                }
            }
            p += run;
        }
        SCRATCH.set(tile);
    });
}

/// Stride > 1: the rows of `B` are an im2col tile, written with long contiguous copies.
fn strided(
    g: &ConvGeometry,
    x: &[f32],
    filters: &[PackedA],
    bias: Option<&[f32]>,
    y: &mut [f32],
    portable: bool,
) {
    let positions = g.output_volume();
    let (cin_g, cout_g) = (g.in_per_group(), g.out_per_group());
    let k_dim = cin_g * g.kernel_volume();
    let plan = Plan::new(g, positions);
    let stride = packed::b_row_stride(plan.tile);
    let offsets: Vec<usize> = (0..k_dim).map(|r| r * stride).collect();
    let out = OutPtr(y.as_mut_ptr());
    (0..plan.tasks(g)).into_par_iter().for_each(|t| {
        let (n, group, p0, len, blocks) = plan.task(g, t);
        let rows = blocks.start * MR..(blocks.end * MR).min(cout_g);
        let first_out = (n * g.out_channels + group * cout_g) * positions + p0;
        for k in rows {
            // SAFETY: this task alone owns columns p0..p0+len of output rows `rows` of image n,
            // group `group`; each row segment is in bounds and disjoint from other tasks'.
            let row = unsafe { std::slice::from_raw_parts_mut(out.at(first_out + k * positions), len) };
            row.fill(bias.map_or(0.0, |b| b[group * cout_g + k]));
        }
        let image = &x[(n * g.in_channels + group * cin_g) * g.input_volume()..][..cin_g * g.input_volume()];
        let mut taps = SCRATCH.take();
        taps.clear();
        // Zero-filled: the columns past `len` in the last strip are read (and their results
        // dropped), so they must hold numbers, not stale values.
        taps.resize(k_dim * stride, 0.0);
        im2col_tile(g, image, p0, len, &mut taps, stride);
        let rows_b = RowsB { data: &taps, offsets: &offsets };
        // SAFETY: rows `rows` × columns p0..p0+len at first_out belong to this task.
        unsafe {
            packed::gemm_packed(&filters[group], rows_b, len, blocks, out.at(first_out), positions, portable)
        };
        SCRATCH.set(taps);
    });
}

/// A run of output positions along the width axis with fixed depth and height indices.
struct Segment {
    z: usize,
    r: usize,
    c_begin: usize,
    c_end: usize,
    column: usize,
}

/// Writes the taps `[C_in/G·|F|, len]` of output positions `p0..p0+len` of one image and group
/// (`image` holds its `C_in/G` channels) into `taps`, row-major with row stride `stride`.
fn im2col_tile(g: &ConvGeometry, image: &[f32], p0: usize, len: usize, taps: &mut [f32], stride: usize) {
    let [id, ih, iw] = g.input;
    let [kd, kh, kw] = g.kernel;
    let [_, oh, ow] = g.output;
    let [sd, sh, sw] = g.stride;
    let [dd, dh, dw] = g.dilation;
    let [pd, ph, pw] = g.pad_begin;

    let mut segments = Vec::new();
    let mut p = p0;
    while p < p0 + len {
        let (z, r, c) = (p / (oh * ow), p / ow % oh, p % ow);
        let c_end = ow.min(c + (p0 + len - p));
        segments.push(Segment { z, r, c_begin: c, c_end, column: p - p0 });
        p += c_end - c;
    }

    let channel_volume = id * ih * iw;
    let mut row_index = 0;
    for channel in image.chunks_exact(channel_volume) {
        for fz in 0..kd {
            for fr in 0..kh {
                for fc in 0..kw {
                    let row = &mut taps[row_index * stride..row_index * stride + len];
                    row_index += 1;
                    // Output columns whose input column c·S + fc·D − P lies inside [0, W).
                    let offset = fc * dw;
                    let c_lo = pw.saturating_sub(offset).div_ceil(sw);
                    let c_hi = (iw + pw).saturating_sub(offset).div_ceil(sw);
                    for s in &segments {
                        let dst = &mut row[s.column..s.column + (s.c_end - s.c_begin)];
                        let sz = (s.z * sd + fz * dd).checked_sub(pd).filter(|&v| v < id);
                        let sr = (s.r * sh + fr * dh).checked_sub(ph).filter(|&v| v < ih);
                        let (Some(sz), Some(sr)) = (sz, sr) else {
                            dst.fill(0.0);
                            continue;
                        };
                        let src = &channel[(sz * ih + sr) * iw..][..iw];
                        let lo = c_lo.clamp(s.c_begin, s.c_end);
                        let hi = c_hi.clamp(lo, s.c_end);
                        dst[..lo - s.c_begin].fill(0.0);
                        dst[hi - s.c_begin..].fill(0.0);
                        let inside = &mut dst[lo - s.c_begin..hi - s.c_begin];
                        if inside.is_empty() {
                            continue;
                        }
                        let start = lo * sw + offset - pw;
                        if sw == 1 {
                            inside.copy_from_slice(&src[start..start + inside.len()]);
                        } else {
                            for (i, v) in inside.iter_mut().enumerate() {
                                *v = src[start + i * sw];
                            }
                        }
                    }
                }
            }
        }
    }
}
