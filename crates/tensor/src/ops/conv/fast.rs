//! The production convolution: im2col tiles multiplied by the filters with a packed GEMM.
//!
//! Shapes as in the module docs, lifted to `[D, H, W]`. For image `n` and group `g` the output
//! block `y[n, g] [C_out/G, P]` (P = output positions) is `W_g [C_out/G, C_in/G·|F|] · cols`, where
//! column `p` of `cols` holds the input taps output position `p` reads. The positions are split
//! into tiles so that a tile of `cols` stays in L2 cache; the tasks (image, group, tile) run in
//! parallel and each writes its own columns of the output. A 1×1 convolution without stride or
//! padding needs no `cols`: the input already is the matrix.
//!
//! Results do not depend on the number of threads: the tiling is a function of the geometry
//! only, and each output element is produced by one GEMM call over the same operands.

use std::cell::Cell;

use rayon::prelude::*;

use super::ConvGeometry;
use crate::gemm::{MatRef, Threads, gemm_into_ptr};

/// Floats of one `cols` tile: 256 KiB, a quarter of a Zen 4/5 core's L2.
const COLS_TILE_FLOATS: usize = 64 * 1024;
/// Narrower tiles starve the GEMM micro-kernel of columns.
const MIN_TILE: usize = 64;

thread_local! {
    /// Each worker keeps its `cols` buffer between tasks and calls instead of reallocating.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Output positions per task for rows of `k_dim` taps.
fn tile_width(k_dim: usize, positions: usize) -> usize {
    let fit = (COLS_TILE_FLOATS / k_dim.max(1)) / 16 * 16;
    fit.max(MIN_TILE).min(positions.max(1))
}

/// A raw output pointer shared by tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: tasks write disjoint (row, column-tile) blocks of the output, see `forward`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so closures capture the `Send` wrapper and not the raw field.
    fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

pub(crate) fn forward(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let positions = g.output_volume();
    let (cin_g, cout_g) = (g.in_per_group(), g.out_per_group());
    let k_dim = cin_g * g.kernel_volume();
    let mut y = vec![0.0f32; g.batch * g.out_channels * positions];
    if y.is_empty() {
        return y;
    }
    let tile = tile_width(k_dim, positions);
    let tiles = positions.div_ceil(tile);
    let tasks = g.batch * g.groups * tiles;
    // Few tasks (a single large image): let the GEMM itself spread over the threads.
    let gemm_threads = if tasks >= rayon::current_num_threads() { Threads::One } else { Threads::Pool };
    let out = OutPtr(y.as_mut_ptr());
    let pointwise = g.is_pointwise();

    (0..tasks).into_par_iter().for_each(|task| {
        let n = task / (g.groups * tiles);
        let group = task / tiles % g.groups;
        let p0 = task % tiles * tile;
        let len = tile.min(positions - p0);
        let first_out = (n * g.out_channels + group * cout_g) * positions + p0;
        // SAFETY: this task alone owns columns p0..p0+len of rows first_out/positions.. of y;
        // each row segment below is in bounds and disjoint from every other task's.
        for k in 0..cout_g {
            let row = unsafe { std::slice::from_raw_parts_mut(out.at(first_out + k * positions), len) };
            row.fill(bias.map_or(0.0, |b| b[group * cout_g + k]));
        }
        let filters = MatRef::row_major(&w[group * cout_g * k_dim..(group + 1) * cout_g * k_dim], k_dim);
        let image = &x[(n * g.in_channels + group * cin_g) * g.input_volume()..][..cin_g * g.input_volume()];
        if pointwise {
            let taps = MatRef { data: &image[p0..], row_stride: positions, col_stride: 1 };
            // SAFETY: as above, the block [cout_g × len] at first_out belongs to this task.
            unsafe {
                gemm_into_ptr(
                    cout_g,
                    len,
                    k_dim,
                    out.at(first_out),
                    positions,
                    filters,
                    taps,
                    true,
                    gemm_threads,
                )
            };
            return;
        }
        let mut cols = SCRATCH.take();
        cols.resize(k_dim * len, 0.0);
        im2col_tile(g, image, p0, len, &mut cols);
        let taps = MatRef::row_major(&cols, len);
        // SAFETY: as above.
        unsafe {
            gemm_into_ptr(cout_g, len, k_dim, out.at(first_out), positions, filters, taps, true, gemm_threads)
        };
        SCRATCH.set(cols);
    });
    y
}

/// A run of output positions along the width axis with fixed depth and height indices.
struct Segment {
    z: usize,
    r: usize,
    c_begin: usize,
    c_end: usize,
    column: usize,
}

/// Fills `cols [C_in/G·|F|, len]` with the taps of output positions `p0..p0+len` of one image and
/// group (`image` holds its `C_in/G` channels).
fn im2col_tile(g: &ConvGeometry, image: &[f32], p0: usize, len: usize, cols: &mut [f32]) {
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
                    let row = &mut cols[row_index * len..(row_index + 1) * len];
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
