//! The production convolution: the filters times the input taps, with a packed GEMM.
//!
//! Shapes as in the module docs, lifted to `[D, H, W]`. For image `n` and group `g` the output
//! block `y[n, g] [C_out/G, P]` (P = output positions) is `W_g [C_out/G, C_in/G·|F|] · taps`,
//! where column `p` of `taps` holds the inputs output position `p` reads. The filters are packed
//! once per call (`crate::gemm::packed`); the taps are never materialised as a full im2col
//! matrix:
//! - most layers, strided ones included: the taps are the zero-padded image (split into the
//!   stride's phases, [`Padded`]) read at one offset per tap ([`shifted`]). When the batch keeps
//!   every thread busy, each task pads its own image into a buffer that stays in cache, and where
//!   output rows are whole strips the GEMM writes them straight into the output
//!   ([`shifted_by_image`]);
//! - 1×1 layers, and strided ones whose taps skip phases: an im2col tile per task, written with
//!   contiguous copies, or the input planes themselves ([`strided`]).
//!
//! Tasks (image, group, tile of positions, and for few large images a range of filters) run in
//! parallel and each writes its own block of the output.
//!
//! Results do not depend on the number of threads: the tiling is a function of the geometry
//! only, and each output element is produced by one GEMM call over the same operands.
//!
//! The backward ([`backward`]) takes the same routes: the weight gradient reads the taps from the
//! padded image's phases ([`backward_weight_shifted`]), the input gradient of a stride-1 layer is
//! a forward convolution ([`backward_input_as_forward`]) and of a strided one a GEMM added back
//! through the phases ([`backward_input_phases`]); what suits none of these goes through im2col
//! tiles (`dY_g · colsᵀ` summed over the images, `W_gᵀ · dY_g` scattered back by col2im). Each
//! is thread-count independent.

use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;

use super::{ConvGeometry, ConvGradsWanted, dot, winograd};

use crate::buffer::{BlockWriter, fill_blocks};
use crate::gemm::packed::{self, MR, NR, PackedA, RowsA, RowsB};
use crate::gemm::{MatRef, Threads, gemm};
use crate::simd::{Isa, isa};
use crate::transpose;

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
pub(super) struct OutPtr(pub(super) *mut f32);
// SAFETY: tasks write disjoint (rows, column-tile) blocks of the output, see `forward`.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// Through a method, so closures capture the `Send` wrapper and not the raw field.
    pub(super) fn at(self, offset: usize) -> *mut f32 {
        self.0.wrapping_add(offset)
    }
}

pub(crate) fn forward(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    forward_any(g, x, w, bias, Epilogue::Bias)
}

/// Through Winograd's F(2×2, 3×3) where it is [`winograd::chosen`], else the direct GEMM.
fn forward_any(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>, epilogue: Epilogue) -> Vec<f32> {
    if winograd::chosen(g) {
        let filters = winograd::Filters::new(w, g.out_channels, g.in_channels);
        winograd::forward(g, x, &filters, bias, epilogue, false)
    } else {
        forward_with(g, x, &pack_filters(g, w), bias, epilogue, false)
    }
}

/// The forward with ReLU applied as each output is written (inference: no separate pass over the
/// output, no second buffer).
pub(crate) fn forward_relu(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    forward_any(g, x, w, bias, Epilogue::BiasRelu)
}

/// A layer's filters, packed beforehand for one of the two algorithms.
pub(crate) enum Packed {
    /// Each group's `W_g`, for the direct GEMM ([`pack_filters`]).
    Direct(Vec<PackedA>),
    /// Transformed for Winograd's F(2×2, 3×3).
    Winograd(winograd::Filters),
}

impl Packed {
    /// Packed for the algorithm the fast path picks for `g`.
    pub(crate) fn for_geometry(g: &ConvGeometry, w: &[f32]) -> Self {
        if winograd::chosen(g) {
            Packed::Winograd(winograd::Filters::new(w, g.out_channels, g.in_channels))
        } else {
            Packed::Direct(pack_filters(g, w))
        }
    }

    /// Whether these filters are what [`Packed::for_geometry`] would build for `g`.
    pub(crate) fn suits(&self, g: &ConvGeometry) -> bool {
        matches!(self, Packed::Winograd(_)) == winograd::chosen(g)
    }

    /// Whether these filters can compute `g` at all (Winograd's only a 3×3 stride-1 one).
    pub(crate) fn can_compute(&self, g: &ConvGeometry) -> bool {
        match self {
            Packed::Direct(_) => true,
            Packed::Winograd(_) => winograd::computes(g),
        }
    }
}

/// The forward over filters packed beforehand, with or without the ReLU; `g` must be one the
/// filters [`Packed::can_compute`].
pub(crate) fn forward_prepacked(
    g: &ConvGeometry,
    x: &[f32],
    filters: &Packed,
    bias: Option<&[f32]>,
    relu: bool,
) -> Vec<f32> {
    let epilogue = if relu { Epilogue::BiasRelu } else { Epilogue::Bias };
    match filters {
        Packed::Direct(groups) => forward_with(g, x, groups, bias, epilogue, false),
        Packed::Winograd(transformed) if winograd::supports(g) => {
            winograd::forward(g, x, transformed, bias, epilogue, false)
        }
        // An empty batch or map: nothing to compute (the filters fix both channel counts > 0).
        Packed::Winograd(_) => Vec::new(),
    }
}

/// Each group's filters `W_g [C_out/G, C_in/G·|F|]`, packed for the micro-kernel.
pub(crate) fn pack_filters(g: &ConvGeometry, w: &[f32]) -> Vec<PackedA> {
    let k_dim = g.in_per_group() * g.kernel_volume();
    (0..g.groups)
        .map(|group| PackedA::new(&w[group * g.out_per_group() * k_dim..], g.out_per_group(), k_dim))
        .collect()
}

/// What happens to a sum as it is written out.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Epilogue {
    /// `y = s + b`.
    Bias,
    /// `y = max(s + b, 0)`.
    BiasRelu,
}

impl Epilogue {
    #[inline(always)]
    pub(super) fn apply(self, v: f32) -> f32 {
        match self {
            Epilogue::Bias => v,
            // Not `f32::max`, which would turn a NaN into 0: PyTorch's relu keeps it.
            Epilogue::BiasRelu => {
                if v < 0.0 {
                    0.0
                } else {
                    v
                }
            }
        }
    }
}

/// The same computation through the portable micro-kernel (for the tests that compare them).
#[cfg(test)]
pub(crate) fn forward_portable(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    forward_with(g, x, &pack_filters(g, w), bias, Epilogue::Bias, true)
}

/// Filter blocks (of `MR` rows) per task when `tasks` tasks share `row_blocks` blocks: all of them
/// when there are enough tasks for the threads; otherwise the filters are split too, as for one
/// large image, so that every thread has work. Each output element is still computed by the same
/// sequence of FMAs, so the split does not change the results.
pub(super) fn filter_blocks_per_task(tasks: usize, row_blocks: usize) -> usize {
    let wanted = 2 * rayon::current_num_threads();
    let chunks = if tasks >= wanted { 1 } else { wanted.div_ceil(tasks).min(row_blocks) };
    row_blocks.div_ceil(chunks)
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
        let blocks_per_chunk = filter_blocks_per_task(g.batch * g.groups * tiles, row_blocks);
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

fn forward_with(
    g: &ConvGeometry,
    x: &[f32],
    filters: &[PackedA],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    portable: bool,
) -> Vec<f32> {
    let len = g.batch * g.out_channels * g.output_volume();
    // Not zeroed first: both kernels write every element of `y[..len]` (see theirs).
    let mut y: Vec<f32> = Vec::with_capacity(len);
    if len == 0 {
        return y;
    }
    if g.in_per_group() * g.kernel_volume() == 0 {
        // No taps (no input channels): every output is the bias alone. (The GEMM of a zero-length
        // reduction writes nothing.)
        let per_image = g.out_channels * g.output_volume();
        y.extend(
            (0..len)
                .map(|i| epilogue.apply(0.0 + bias.map_or(0.0, |b| b[i % per_image / g.output_volume()]))),
        );
        return y;
    }
    let out = OutPtr(y.as_mut_ptr());
    // A 1×1 convolution's taps are the input rows themselves: copying a tile of them keeps the
    // GEMM's rows 1 KiB apart instead of a whole channel plane apart (fewer TLB misses).
    if Padded::suits(g) {
        shifted(g, x, filters, bias, epilogue, out, portable);
    } else {
        strided(g, x, filters, bias, epilogue, out, portable);
    }
    // SAFETY: the kernel wrote all `len` elements (its tasks cover every image, filter and
    // output position).
    unsafe { y.set_len(len) };
    y
}

/// The zero-padded volume of a convolution, split into its stride's phases, and the numbering
/// of its output positions in it (see [`shifted`]).
///
/// Along an axis with stride `S` and dilation `D`, output `o` reads padded coordinate
/// `o·S + f·D` for tap `f`: element `o + ⌊f·D / S⌋` of phase `f·D mod S`, the sub-grid of the
/// padded axis at that offset modulo `S`. Each channel is stored as its `S_d·S_h·S_w` phases,
/// each `[Dq, Hq, Wq] = [⌈Dp / S_d⌉, ⌈Hp / S_h⌉, ⌈Wp / S_w⌉]`, so that every tap reads every
/// output position at one offset, as in a stride-1 layer (whose one phase is the padded volume).
struct Padded<'g> {
    g: &'g ConvGeometry,
    /// `[Dq, Hq, Wq]`: one phase.
    dims: [usize; 3],
    /// Floats per phase.
    phase_volume: usize,
    /// Floats per channel: all its phases.
    volume: usize,
    /// Output positions numbered in a phase, up to the last real one.
    positions: usize,
}

impl<'g> Padded<'g> {
    fn new(g: &'g ConvGeometry) -> Self {
        let dims: [usize; 3] =
            std::array::from_fn(|i| (g.input[i] + g.pad_begin[i] + g.pad_end[i]).div_ceil(g.stride[i]));
        let [_, hq, wq] = dims;
        let [od, oh, ow] = g.output;
        let positions = (od - 1) * hq * wq + (oh - 1) * wq + ow;
        let phase_volume = dims.iter().product::<usize>();
        let volume = phase_volume * g.stride.iter().product::<usize>();
        Padded { g, dims, phase_volume, volume, positions }
    }

    /// Whether the phases suit `g`: every phase is read by some tap (a 1×1 stride-2 layer would
    /// copy four phases to read one; a dilated strided one may skip phases too).
    fn suits(g: &ConvGeometry) -> bool {
        !g.is_pointwise()
            && (0..3).all(|i| g.stride[i] == 1 || (g.dilation[i] == 1 && g.kernel[i] >= g.stride[i]))
    }

    /// The offset of tap `(c, fz, fr, fc)` from an output position, for `channels` channels in
    /// a row, in the order of the filters' `[C, Kd, Kh, Kw]` layout.
    fn tap_offsets(&self, channels: usize) -> Vec<usize> {
        let [kd, kh, kw] = self.g.kernel;
        let [dd, dh, dw] = self.g.dilation;
        let [sd, sh, sw] = self.g.stride;
        let [_, hq, wq] = self.dims;
        let mut offsets = Vec::with_capacity(channels * self.g.kernel_volume());
        for c in 0..channels {
            for fz in 0..kd {
                for fr in 0..kh {
                    for fc in 0..kw {
                        let (z, r, w) = (fz * dd, fr * dh, fc * dw);
                        let phase = ((z % sd) * sh + r % sh) * sw + w % sw;
                        let shift = ((z / sd) * hq + r / sh) * wq + w / sw;
                        offsets.push(c * self.volume + phase * self.phase_volume + shift);
                    }
                }
            }
        }
        offsets
    }

    /// Writes the whole phase-split padded channel of `src [D, H, W]`, zeros included.
    fn write_channel(&self, src: &[f32], writer: &mut BlockWriter) {
        let [id, ih, iw] = self.g.input;
        let [pd, ph, pw] = self.g.pad_begin;
        let [dq, hq, wq] = self.dims;
        if self.g.stride == [1; 3] {
            // One phase, the padded volume itself: whole rows copied.
            writer.zeros(pd * hq * wq);
            for z in 0..id {
                writer.zeros(ph * wq);
                for r in 0..ih {
                    writer.zeros(pw);
                    writer.copy(&src[(z * ih + r) * iw..][..iw]);
                    writer.zeros(wq - pw - iw);
                }
                writer.zeros((hq - ph - ih) * wq);
            }
            writer.zeros((dq - pd - id) * hq * wq);
            return;
        }
        let [sd, sh, sw] = self.g.stride;
        for a in 0..sd {
            for b in 0..sh {
                for c in 0..sw {
                    // Phase (a, b, c): row (zq, rq) is input row (zq·S_d + a − P_d, rq·S_h + b − P_h),
                    // and column cq input column cq·S_w + c − P_w, where inside the input.
                    let lo = pw.saturating_sub(c).div_ceil(sw).min(wq);
                    let hi = (iw + pw).saturating_sub(c).div_ceil(sw).clamp(lo, wq);
                    for zq in 0..dq {
                        let z = (zq * sd + a).checked_sub(pd).filter(|&z| z < id);
                        for rq in 0..hq {
                            let r = (rq * sh + b).checked_sub(ph).filter(|&r| r < ih);
                            let (Some(z), Some(r)) = (z, r) else {
                                writer.zeros(wq);
                                continue;
                            };
                            writer.zeros(lo);
                            let row = &src[(z * ih + r) * iw..][..iw];
                            writer.gather(row, (lo * sw + c).saturating_sub(pw), sw, hi - lo);
                            writer.zeros(wq - hi);
                        }
                    }
                }
            }
        }
    }

    /// The adjoint of [`Self::write_channel`] without its zeros: channel `dst [D, H, W]` read
    /// back out of the phase-split padded `src [volume]` (the padding is dropped).
    fn read_channel(&self, src: &[f32], dst: &mut [f32]) {
        let [id, ih, iw] = self.g.input;
        let [pd, ph, pw] = self.g.pad_begin;
        let [sd, sh, sw] = self.g.stride;
        let [_, hq, wq] = self.dims;
        for z in 0..id {
            let (zp, a) = ((z + pd) / sd, (z + pd) % sd);
            for r in 0..ih {
                let (rp, b) = ((r + ph) / sh, (r + ph) % sh);
                let dst_row = &mut dst[(z * ih + r) * iw..][..iw];
                for c in 0..sw {
                    // Input columns j with (j + P_w) mod S_w = c, from the first on.
                    let first = (c + sw - pw % sw) % sw;
                    if first >= iw {
                        continue;
                    }
                    let phase = (a * sh + b) * sw + c;
                    let src_row = &src[phase * self.phase_volume + (zp * hq + rp) * wq..][..wq];
                    let q0 = (first + pw) / sw;
                    for (i, d) in dst_row[first..].iter_mut().step_by(sw).enumerate() {
                        *d = src_row[q0 + i];
                    }
                }
            }
        }
    }

    /// [`Self::write_channel`] into `dst [volume]`, whatever it held.
    fn pad_channel(&self, src: &[f32], dst: &mut [f32]) {
        let mut writer = BlockWriter::over(dst);
        self.write_channel(src, &mut writer);
        debug_assert_eq!(writer.written(), self.volume);
    }

    /// Whether [`shifted`] pads each image inside its task: the batch alone gives every thread
    /// several tasks, and an image's padded channels fit in L2. Either way every output is the
    /// same sum, so the choice (which depends on the thread count) does not change the results.
    fn by_image(&self) -> bool {
        self.g.batch * self.g.groups >= 4 * rayon::current_num_threads()
            && self.g.in_per_group() * self.volume <= LOCAL_PADDED_FLOATS
    }

    /// Whether position `p` (numbered in a phase) is a real output position (and not one past a
    /// row's end).
    fn is_output(&self, p: usize) -> bool {
        let [_, hq, wq] = self.dims;
        p / wq % hq < self.g.output[1] && p % wq < self.g.output[2]
    }
}

/// The rows of `B` are the zero-padded image itself (split into the stride's phases, see
/// [`Padded`]), shifted by each tap's offset.
///
/// Output positions are numbered in a phase, `p = z·Hq·Wq + h·Wq + w`, so that tap
/// `(c, fz, fr, fc)` of every position reads `padded[offset(c, fz, fr, fc) + p]`: one offset per
/// tap, no im2col (for stride 1, `c·vol + fz·D·Hp·Wp + fr·D·Wp + fc·D`). Positions with
/// `h ≥ H_out` or `w ≥ W_out` are computed and dropped when the tile is copied out (for a 3×3
/// layer on 56×56, 3.5% extra work).
fn shifted(
    g: &ConvGeometry,
    x: &[f32],
    filters: &[PackedA],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: OutPtr,
    portable: bool,
) {
    let padding = Padded::new(g);
    let offsets = padding.tap_offsets(g.in_per_group());
    let product =
        TileProduct { g, padding: &padding, filters, offsets: &offsets, bias, epilogue, out, portable };
    if padding.by_image() {
        shifted_by_image(&product, x);
        return;
    }
    let volume = padding.volume;
    let cin_g = g.in_per_group();

    // The last strip of the last channel may read up to NR floats past the volume (zeros: the
    // block past the last plane is left unwritten).
    let planes = g.batch * g.in_channels;
    let padded = fill_blocks(planes * volume + NR, volume, 1, |plane, _, writer| {
        if plane < planes {
            padding.write_channel(&x[plane * g.input_volume()..][..g.input_volume()], writer);
        }
    });

    let plan = Plan::new(g, padding.positions);
    (0..plan.tasks(g)).into_par_iter().for_each(|t| {
        let (n, group, p0, len, blocks) = plan.task(g, t);
        let image = &padded[(n * g.in_channels + group * cin_g) * volume..];
        product.tile(image, n, group, p0, len, blocks);
    });
}

/// Padded floats per image and group up to which [`shifted`] pads each image inside its own task
/// (when the batch alone keeps the threads busy): the padded image then stays in L2 for the
/// GEMMs that read it, where the whole batch padded up front (ResNet-20's first stage at batch
/// 128: 9.5 MB) went out to memory and came back.
const LOCAL_PADDED_FLOATS: usize = 512 * 1024;

thread_local! {
    /// Each worker's padded image for [`shifted_by_image`], kept between tasks and calls.
    static PADDED: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// One product over a padded image (its phases): the operands [`shifted`]'s tasks share.
struct TileProduct<'a> {
    g: &'a ConvGeometry,
    padding: &'a Padded<'a>,
    filters: &'a [PackedA],
    offsets: &'a [usize],
    bias: Option<&'a [f32]>,
    epilogue: Epilogue,
    out: OutPtr,
    portable: bool,
}

impl TileProduct<'_> {
    /// Output positions `p0..p0 + len` (padded numbering) of image `n`, group `group`, filter
    /// blocks `blocks`, from `image` (the group's padded channels, at least `NR` floats past the
    /// last position any tap reads): the GEMM into a scratch tile, then the real positions copied
    /// out with the bias and epilogue.
    fn tile(&self, image: &[f32], n: usize, group: usize, p0: usize, len: usize, blocks: Range<usize>) {
        let g = self.g;
        let [_, hp, wp] = self.padding.dims;
        let [_, oh, ow] = g.output;
        let cout_g = g.out_per_group();
        let output_volume = g.output_volume();
        let rows = blocks.start * MR..(blocks.end * MR).min(cout_g);
        let taps = RowsB { data: &image[p0..], offsets: self.offsets };
        let stride = packed::b_row_stride(len);
        // Overwritten by the GEMM, so only grown, never cleared: whatever an earlier task left
        // in it is replaced before it is read.
        let mut tile = SCRATCH.take();
        if tile.len() < cout_g * stride {
            tile.resize(cout_g * stride, 0.0);
        }
        let filters = &self.filters[group];
        // SAFETY: `tile` is this task's own buffer of (at least) cout_g rows of `stride` floats.
        unsafe {
            packed::gemm_packed(filters, taps, len, blocks, tile.as_mut_ptr(), stride, true, self.portable)
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
                    let b = self.bias.map_or(0.0, |b| b[channel]);
                    let dst = self.out.at((n * g.out_channels + channel) * output_volume + first);
                    let src = &tile[k * stride + (p - p0)..][..count];
                    for (i, s) in src.iter().enumerate() {
                        // SAFETY: output (n, channel, z, h, w..w+count) lies inside `y` and
                        // belongs to this task alone: its positions come from this task's tile,
                        // its channel from its rows. Written, never read: it may be uninitialised.
                        unsafe { dst.add(i).write(self.epilogue.apply(s + b)) };
                    }
                }
            }
            p += run;
        }
        SCRATCH.set(tile);
    }

    /// Every output row of image `n`, group `group`, each as one GEMM written straight into the
    /// output (rows of whole strips only: no scratch tile, no copy), then the bias and epilogue
    /// over the row while it is in L1. The same sums as [`Self::tile`], so the same bits.
    fn rows(&self, image: &[f32], n: usize, group: usize) {
        let g = self.g;
        let [_, hp, wp] = self.padding.dims;
        let [od, oh, ow] = g.output;
        let cout_g = g.out_per_group();
        let output_volume = g.output_volume();
        let filters = &self.filters[group];
        let first_channel = n * g.out_channels + group * cout_g;
        for z in 0..od {
            for h in 0..oh {
                let taps = RowsB { data: &image[(z * hp + h) * wp..], offsets: self.offsets };
                let first = first_channel * output_volume + (z * oh + h) * ow;
                // SAFETY: row (z, h) of this image's and group's output channels lies inside `y`
                // and belongs to this task alone; the GEMM writes `ow` elements of each.
                unsafe {
                    packed::gemm_packed(
                        filters,
                        taps,
                        ow,
                        0..filters.row_blocks(),
                        self.out.at(first),
                        output_volume,
                        true,
                        self.portable,
                    )
                };
                // Applied without a bias too: adding +0 turns a −0 sum into +0, as the tile path's
                // copy-out does, so both paths give the same bits.
                for k in 0..cout_g {
                    let b = self.bias.map_or(0.0, |b| b[group * cout_g + k]);
                    let row = self.out.at(first + k * output_volume);
                    for i in 0..ow {
                        // SAFETY: the elements the GEMM just wrote, this task's alone.
                        unsafe { row.add(i).write(self.epilogue.apply(row.add(i).read() + b)) };
                    }
                }
            }
        }
    }
}

/// [`shifted`] with one task per image and group, which pads its own image into a buffer that
/// stays in cache and computes every output of it: row by row straight into the output where
/// rows are whole strips, else tile by tile.
fn shifted_by_image(product: &TileProduct<'_>, x: &[f32]) {
    let (g, padding) = (product.g, product.padding);
    let (volume, cin_g) = (padding.volume, g.in_per_group());
    let direct = g.output[2] % NR == 0;
    let plan = Plan::new(g, padding.positions);
    (0..g.batch * g.groups).into_par_iter().for_each(|task| {
        let (n, group) = (task / g.groups, task % g.groups);
        let mut padded = PADDED.take();
        padded.resize(cin_g * volume + NR, 0.0);
        let (channels, tail) = padded.split_at_mut(cin_g * volume);
        // Strips may read up to NR floats past the last channel: zeros, not stale values.
        tail.fill(0.0);
        let first = (n * g.in_channels + group * cin_g) * g.input_volume();
        for (c, dst) in channels.chunks_exact_mut(volume).enumerate() {
            padding.pad_channel(&x[first + c * g.input_volume()..][..g.input_volume()], dst);
        }
        if direct {
            product.rows(&padded, n, group);
        } else {
            for tile in 0..plan.tiles {
                let p0 = tile * plan.tile;
                let len = plan.tile.min(plan.positions - p0);
                product.tile(&padded, n, group, p0, len, 0..plan.row_blocks);
            }
        }
        PADDED.set(padded);
    });
}

/// Output positions (= input positions) up to which a 1×1 convolution reads its input in place
/// (32×32 maps): ResNet-50's 28², 14² and 7² stages, GoogLeNet's 1×1 layers after its stem.
const IN_PLACE_PLANE: usize = 1024;

/// 1×1 convolutions, and strided ones whose taps skip some of the stride's phases (see
/// [`Padded::suits`]): the rows of `B` are an im2col tile, written with long contiguous copies,
/// or the input planes themselves.
fn strided(
    g: &ConvGeometry,
    x: &[f32],
    filters: &[PackedA],
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    out: OutPtr,
    portable: bool,
) {
    let positions = g.output_volume();
    let (cin_g, cout_g) = (g.in_per_group(), g.out_per_group());
    let k_dim = cin_g * g.kernel_volume();
    let plan = Plan::new(g, positions);
    // A 1×1 convolution on small planes reads its input in place: the planes are at most
    // IN_PLACE_PLANE floats apart, so the rows of B stay within a few hundred pages (the copy
    // below exists for large planes, whose rows would be a TLB miss each).
    let in_place = (g.is_pointwise() && cin_g > 0 && positions <= IN_PLACE_PLANE)
        .then(|| (0..cin_g).map(|r| r * g.input_volume()).collect::<Vec<usize>>());
    // The tap rows of the copied tile (or, in place, of the last partial strip: `NR` apart).
    let stride = if in_place.is_some() { NR } else { packed::b_row_stride(plan.tile) };
    let offsets: Vec<usize> = (0..k_dim).map(|r| r * stride).collect();
    // When the filters are split across tasks (a batch too small to give every thread an image
    // or tile of its own), each task of a tile would build the same im2col tile: ResNet-50's
    // stride-2 3×3 layers at batch 1 copied theirs four times. Each is built once instead, in
    // parallel over its channels, and shared. There are fewer such tiles than twice the
    // threads, so together they hold at most that many images' im2col matrices.
    let shared_tiles: Vec<Vec<f32>> = if in_place.is_none() && plan.row_chunks > 1 {
        (0..g.batch * g.groups * plan.tiles)
            .map(|i| {
                let (image, tile) = (i / plan.tiles, i % plan.tiles);
                let (p0, len) = (tile * plan.tile, plan.tile.min(positions - tile * plan.tile));
                // `image` counts (image, group) pairs: their channels are consecutive in `x`.
                let channels = &x[image * cin_g * g.input_volume()..][..cin_g * g.input_volume()];
                // Zero-filled: the columns past `len` in the last strip are read too.
                let mut taps = vec![0.0f32; k_dim * stride];
                let per_chunk = cin_g.div_ceil(4 * rayon::current_num_threads()).max(1);
                taps.par_chunks_mut(per_chunk * g.kernel_volume() * stride)
                    // An empty plane (a zero-size axis padded to an output) gives no chunks: the
                    // tile stays zero, as every tap reads padding.
                    .zip(channels.par_chunks((per_chunk * g.input_volume()).max(1)))
                    .for_each(|(rows, chunk)| im2col_tile(g, chunk, p0, len, rows, stride));
                taps
            })
            .collect()
    } else {
        Vec::new()
    };
    (0..plan.tasks(g)).into_par_iter().for_each(|t| {
        let (n, group, p0, len, blocks) = plan.task(g, t);
        let rows = blocks.start * MR..(blocks.end * MR).min(cout_g);
        let first_out = (n * g.out_channels + group * cout_g) * positions + p0;
        let rows_again = rows.clone();
        for k in rows {
            let (row, b) = (out.at(first_out + k * positions), bias.map_or(0.0, |b| b[group * cout_g + k]));
            for i in 0..len {
                // SAFETY: this task alone owns columns p0..p0+len of output rows `rows` of image
                // n, group `group`; each row segment is in bounds and disjoint from other
                // tasks'. Written before the GEMM adds to it (it may be uninitialised before).
                unsafe { row.add(i).write(b) };
            }
        }
        let image_start = (n * g.in_channels + group * cin_g) * g.input_volume();
        let mut taps = SCRATCH.take();
        // SAFETY (both calls): rows `rows` × columns p0..p0+len at first_out belong to this task.
        let gemm = |rows_b: RowsB<'_>, columns: Range<usize>| unsafe {
            packed::gemm_packed(
                &filters[group],
                rows_b,
                columns.len(),
                blocks.clone(),
                out.at(first_out + columns.start),
                positions,
                false,
                portable,
            )
        };
        if let Some(plane_offsets) = &in_place {
            // The input planes are the rows of B. A strip reads NR columns whatever `len` is:
            // at the very end of `x` the last partial strip would read past it, so its columns
            // are copied into a strip of their own.
            let data = &x[image_start + p0..];
            let reach = (cin_g - 1) * g.input_volume() + packed::b_row_stride(len);
            let whole = if reach <= data.len() { len } else { len / NR * NR };
            if whole > 0 {
                gemm(RowsB { data, offsets: plane_offsets }, 0..whole);
            }
            if whole < len {
                taps.clear();
                taps.resize(cin_g * NR, 0.0);
                for (r, strip) in taps.chunks_exact_mut(NR).enumerate() {
                    strip[..len - whole]
                        .copy_from_slice(&data[r * g.input_volume() + whole..][..len - whole]);
                }
                gemm(RowsB { data: &taps, offsets: &offsets }, whole..len);
            }
        } else if !shared_tiles.is_empty() {
            let tile = &shared_tiles[(n * g.groups + group) * plan.tiles + p0 / plan.tile];
            gemm(RowsB { data: tile, offsets: &offsets }, 0..len);
        } else {
            let image = &x[image_start..][..cin_g * g.input_volume()];
            taps.clear();
            // Zero-filled: the columns past `len` in the last strip are read (and their results
            // dropped), so they must hold numbers, not stale values.
            taps.resize(k_dim * stride, 0.0);
            im2col_tile(g, image, p0, len, &mut taps, stride);
            gemm(RowsB { data: &taps, offsets: &offsets }, 0..len);
        }
        if epilogue != Epilogue::Bias {
            for k in rows_again.clone() {
                let row = out.at(first_out + k * positions);
                for i in 0..len {
                    // SAFETY: the same elements as the bias loop above, now written by the GEMM.
                    unsafe { row.add(i).write(epilogue.apply(row.add(i).read())) };
                }
            }
        }
        SCRATCH.set(taps);
    });
}

/// Output positions per im2col tile in the backward: bounds the scratch of a task to
/// `rows × GRAD_TILE` floats. A constant, so the blocking of every sum is fixed by the geometry.
const GRAD_TILE: usize = 1024;

/// Tap rows (input channels × |F|) per weight-gradient task: enough columns for an efficient
/// GEMM, few enough that a group's channels split into several tasks.
const GRAD_ROWS: usize = 64;

/// Images per weight-gradient task (rounded up to whole GEMM batches): small layers such as
/// LeNet's have one group and one channel chunk, and without splitting the batch their weight
/// gradient would run on one thread. Partial sums are added in image order, so the result does
/// not depend on the number of threads.
const GRAD_IMAGES: usize = 8;

/// How many images share one backward GEMM: for small feature maps (LeNet's 10×10), the
/// positions of several images side by side make a GEMM long enough to run at speed instead of
/// many tiny ones. 1 when one image fills a tile.
fn images_per_gemm(positions: usize) -> usize {
    if positions == 0 || 2 * positions > GRAD_TILE { 1 } else { GRAD_TILE / positions }
}

/// The gradients of `y = conv(x, w) + b` for an upstream `dy`: `(dx, dw, db)`.
///
/// - `db[k] = Σ_n Σ_p dy[n, k, p]`;
/// - `dw_g += dY_g [C_out/G, P] · cols_gᵀ [P, C_in/G·|F|]` over the images, where `cols_g` is
///   the forward's im2col of an image and group. Small maps put several images' positions side
///   by side in one GEMM ([`images_per_gemm`]); large ones go tile by tile. Tasks own a group, a
///   range of input channels (columns of `dw_g`) and a fixed range of images; their partial sums
///   are added in image order, so every sum has the same blocking whatever the number of threads;
/// - `dx`: `dcols = W_gᵀ [C_in/G·|F|, C_out/G] · dY_g [C_out/G, P]`, scattered back onto the
///   input by col2im, again several small images per GEMM. Each task owns its slice of `dx`.
pub(crate) fn backward(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    wanted: ConvGradsWanted,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dx = if wanted.input { backward_input_only(g, w, dy) } else { Vec::new() };
    let dw = backward_weight_as_forward(g, x, dy)
        .or_else(|| backward_weight_shifted(g, x, dy))
        .unwrap_or_else(|| backward_weight(g, x, dy));
    let db = if wanted.bias { backward_bias(g, dy) } else { Vec::new() };
    (dx, dw, db)
}

/// `dx` alone: a stride-1 layer's as a forward convolution, a strided one's through the
/// stride's phases, others by col2im.
pub(crate) fn backward_input_only(g: &ConvGeometry, w: &[f32], dy: &[f32]) -> Vec<f32> {
    backward_input_as_forward(g, w, dy)
        .or_else(|| backward_input_phases(g, w, dy))
        .unwrap_or_else(|| backward_input(g, w, dy))
}

/// `dx` of a strided layer through the stride's phases ([`Padded`]), the adjoint of its
/// forward: per image and group, `dcols = W_gᵀ [C_in/G·|F|, C_out/G] · dY_g [C_out/G, P']`
/// (one packed GEMM, `dY_g` laid out in the phases' numbering, `P'`), each tap's row added back
/// at the tap's offset into the phase-split padded gradient, output row by output row (long
/// contiguous runs where col2im made one strided run per tap and output row), and the phases
/// read back into `dx`. Each task owns an image and group of `dx`, and every element's sum runs
/// over the taps in the same order, so the result does not depend on the number of threads.
/// `None` for stride-1 layers and where the phases do not suit ([`Padded::suits`]).
fn backward_input_phases(g: &ConvGeometry, w: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    let empty =
        [g.batch, g.in_channels, g.out_channels, g.kernel_volume(), g.input_volume(), g.output_volume()]
            .contains(&0);
    if g.stride == [1; 3] || !Padded::suits(g) || empty {
        return None;
    }
    let padding = Padded::new(g);
    let (cin_g, cout_g, taps) = (g.in_per_group(), g.out_per_group(), g.kernel_volume());
    let k_dim = cin_g * taps;
    let (span, input_volume, output_volume) = (padding.positions, g.input_volume(), g.output_volume());
    let [od, oh, ow] = g.output;
    let [_, hq, wq] = padding.dims;
    let offsets = padding.tap_offsets(cin_g);
    let row = packed::b_row_stride(span);
    let dy_offsets: Vec<usize> = (0..cout_g).map(|k| k * row).collect();
    // W_gᵀ [C_in/G·|F|, C_out/G], packed once per group.
    let filters: Vec<PackedA> = (0..g.groups)
        .map(|group| {
            let w_g = &w[group * cout_g * k_dim..][..cout_g * k_dim];
            let w_t: Vec<f32> = (0..k_dim * cout_g).map(|i| w_g[i % cout_g * k_dim + i / cout_g]).collect();
            PackedA::new(&w_t, k_dim, cout_g)
        })
        .collect();
    // The first position (in the phases' numbering) of each output row.
    let row_starts: Vec<(usize, usize)> =
        (0..od * oh).map(|zh| ((zh / oh * hq + zh % oh) * wq, zh * ow)).collect();
    let mut dx = vec![0.0f32; g.batch * g.in_channels * input_volume];
    dx.par_chunks_mut(cin_g * input_volume).enumerate().for_each(|(task, dx_g)| {
        let (n, group) = (task / g.groups, task % g.groups);
        // dY_g in the phases' numbering: zero past each row's end and past the last position.
        let mut dy_p = vec![0.0f32; cout_g * row];
        let planes = &dy[(n * g.out_channels + group * cout_g) * output_volume..][..cout_g * output_volume];
        for (plane, dst) in planes.chunks_exact(output_volume).zip(dy_p.chunks_exact_mut(row)) {
            for &(p, q) in &row_starts {
                dst[p..p + ow].copy_from_slice(&plane[q..q + ow]);
            }
        }
        let mut dcols = vec![0.0f32; k_dim * row];
        let b = RowsB { data: &dy_p, offsets: &dy_offsets };
        let a = &filters[group];
        // SAFETY: `dcols` is this task's own [k_dim × row] buffer.
        unsafe { packed::gemm_packed(a, b, span, 0..a.row_blocks(), dcols.as_mut_ptr(), row, true, false) };
        // Only the real output positions flow back: the others' columns are zero times the
        // filters, which a non-finite filter value would turn into a NaN.
        let mut dx_p = vec![0.0f32; cin_g * padding.volume];
        for (t, &offset) in offsets.iter().enumerate() {
            let tap = &dcols[t * row..][..span];
            for &(p, _) in &row_starts {
                for (d, v) in dx_p[offset + p..][..ow].iter_mut().zip(&tap[p..p + ow]) {
                    *d += v;
                }
            }
        }
        for (c, dst) in dx_g.chunks_exact_mut(input_volume).enumerate() {
            padding.read_channel(&dx_p[c * padding.volume..][..padding.volume], dst);
        }
    });
    Some(dx)
}

/// Images per partial weight gradient in [`backward_weight_as_forward`]: the tasks that run in
/// parallel (their partial sums are added in image order, so the result does not depend on the
/// number of threads), each long enough (images × positions) to keep the GEMM efficient.
const WEIGHT_GRAD_IMAGES: usize = 32;

/// Input channels below which [`backward_weight_as_forward`] loses to the im2col path.
const WEIGHT_GRAD_MIN_CHANNELS: usize = 4;

/// Kernel taps below which it loses too: its output positions are the taps, and 3×3's nine fill
/// a 16-wide micro-kernel tile barely half (ResNet-20's backward: 200–260 ms against 310–350 ms
/// per batch of 32 on one thread with it; LeNet's 5×5 conv2 gains from it).
const WEIGHT_GRAD_MIN_TAPS: usize = 16;

/// Positions computed per real tap above which [`backward_weight_as_forward`] is not used
/// (LeNet-5's 5×5 conv2 on 14×14: 61 for 25, which still gains).
const WEIGHT_GRAD_MAX_WASTE: usize = 4;

/// `dw` of an ungrouped stride-1 convolution as a forward convolution, on the forward's fast
/// path: `dw[k, c, f] = Σ_n Σ_p dy[n, k, p] · x_pad[n, c, p + D·f]` is a convolution whose
/// "images" are the input channels `c`, whose channels are the batch `n`, and whose filters are
/// `dy` (one per output channel, as large as the output map), with the dilation as its stride;
/// its output is the kernel, `[C_in, C_out, F]`, transposed here into `[C_out, C_in, F]`. The
/// batch is cut into fixed chunks that run in parallel. `None` for grouped or strided layers.
fn backward_weight_as_forward(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    let empty =
        [g.batch, g.in_channels, g.out_channels, g.kernel_volume(), g.input_volume(), g.output_volume()]
            .contains(&0);
    // With few input channels the forward has few "images" to spread and a short filter block;
    // the im2col path is faster there (LeNet's first layer: 2.9 against 4.4 ms on one thread).
    let small_kernel = g.kernel_volume() < WEIGHT_GRAD_MIN_TAPS;
    // Its forward computes the taps in the padded numbering of the input (see [`shifted`]):
    // from tap (0, 0, 0) to the last, whole input rows and planes apart. A 3×3×3 kernel on a
    // 32³ volume computes 2,383 positions for its 27 taps; keep to kernels that waste little.
    // (A dilated layer's runs with the dilation as its stride, on exact im2col tiles instead.)
    let [_, hp, wp]: [usize; 3] = std::array::from_fn(|i| g.input[i] + g.pad_begin[i] + g.pad_end[i]);
    let [kd, kh, kw] = g.kernel.map(|k| k.max(1));
    let computed = if g.dilation == [1; 3] { ((kd - 1) * hp + kh - 1) * wp + kw } else { g.kernel_volume() };
    let wasteful = computed > WEIGHT_GRAD_MAX_WASTE * g.kernel_volume();
    if g.groups != 1
        || wasteful
        || g.stride != [1, 1, 1]
        || g.in_channels < WEIGHT_GRAD_MIN_CHANNELS
        || small_kernel
        || empty
    {
        return None;
    }
    let (input_volume, positions, taps) = (g.input_volume(), g.output_volume(), g.kernel_volume());
    let (cin, cout) = (g.in_channels, g.out_channels);
    let starts: Vec<usize> = (0..g.batch).step_by(WEIGHT_GRAD_IMAGES).collect();
    let partials: Vec<Vec<f32>> = starts
        .into_par_iter()
        .map(|n0| {
            let images = WEIGHT_GRAD_IMAGES.min(g.batch - n0);
            // x[n0.., c] → x_t[c, n]; dy[n0.., k] → dy_t[k, n]: whole planes, moved as blocks.
            let swap = |src: &[f32], channels: usize, plane: usize| {
                let mut out = vec![0.0f32; channels * images * plane];
                for n in 0..images {
                    for c in 0..channels {
                        out[(c * images + n) * plane..][..plane]
                            .copy_from_slice(&src[((n0 + n) * channels + c) * plane..][..plane]);
                    }
                }
                out
            };
            let x_t = swap(x, cin, input_volume);
            let dy_t = swap(dy, cout, positions);
            let as_forward = ConvGeometry {
                batch: cin,
                in_channels: images,
                out_channels: cout,
                groups: 1,
                input: g.input,
                kernel: g.output,
                output: g.kernel,
                stride: g.dilation,
                dilation: [1, 1, 1],
                ..*g
            };
            forward(&as_forward, &x_t, &dy_t, None)
        })
        .collect();
    let mut dw = vec![0.0f32; cout * cin * taps];
    for partial in &partials {
        for c in 0..cin {
            for k in 0..cout {
                let src = &partial[(c * cout + k) * taps..][..taps];
                for (d, s) in dw[(k * cin + c) * taps..][..taps].iter_mut().zip(src) {
                    *d += s;
                }
            }
        }
    }
    Some(dw)
}

/// Tap rows per task of [`backward_weight_shifted`] when a layer has too few images to spread
/// over the threads (a batch of one): a multiple of the micro-kernel's rows.
const SHIFTED_GRAD_ROWS: usize = 16 * MR;

/// `dw` as one GEMM per image, group and block of taps, with the taps read straight from the
/// zero-padded image's phases as in the forward ([`shifted`]):
/// `dw_gᵀ [C_in/G·|F|, C_out/G] += taps [C_in/G·|F|, P'] · dy_gᵀ [P', C_out/G]`, where row `t`
/// of `taps` is the padded image from tap `t`'s offset on, and `P'` numbers the output positions
/// in the padded volume (`dy_gᵀ` is zero at the positions past a row's end). No im2col buffer
/// and no packing: the micro-kernel reads the taps where they lie ([`RowsA`]). Tasks own a fixed chunk of
/// [`GRAD_IMAGES`] images and, when there are too few chunks to keep the threads busy, a block
/// of [`SHIFTED_GRAD_ROWS`] taps; the chunks' partial sums are added in image order
/// (thread-count independent).
///
/// The reduction runs over the positions past each row's end too, where `dy_gᵀ` is zero; they
/// read input values the real positions may never read, and an infinite one there would add
/// `∞ · 0 = NaN`. So every padded image is checked, and an input with a non-finite value goes
/// to the exact im2col path instead. `None` then, and where the phases do not suit the layer.
fn backward_weight_shifted(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    let empty =
        [g.batch, g.in_channels, g.out_channels, g.kernel_volume(), g.input_volume(), g.output_volume()]
            .contains(&0);
    if !Padded::suits(g) || empty {
        return None;
    }
    let padding = Padded::new(g);
    let (cin_g, cout_g, taps) = (g.in_per_group(), g.out_per_group(), g.kernel_volume());
    let k_dim = cin_g * taps;
    let (span, output_volume) = (padding.positions, g.output_volume());
    let tap_offsets = padding.tap_offsets(cin_g);
    // dy_gᵀ rows: C_out/G values, padded to whole micro-kernel strips (the kernel reads them).
    let row = packed::b_row_stride(cout_g);
    let dy_offsets: Vec<usize> = (0..span).map(|p| p * row).collect();
    // The real output positions: (first padded position, first output position, count) per row.
    let runs: Vec<(usize, usize, usize)> = (0..span)
        .step_by(padding.dims[2])
        .filter(|&p| padding.is_output(p))
        .enumerate()
        .map(|(i, p)| (p, i * g.output[2], g.output[2]))
        .collect();

    // dy_gᵀ [P', C_out/G] of image n and group `group`, zero past each row's end.
    let transpose = |n: usize, group: usize, dy_t: &mut [f32]| {
        let planes = &dy[(n * g.out_channels + group * cout_g) * output_volume..][..cout_g * output_volume];
        for &(p, q, count) in &runs {
            transpose::transpose(&planes[q..], output_volume, &mut dy_t[p * row..], row, cout_g, count);
        }
    };

    let image_chunks = g.batch.div_ceil(GRAD_IMAGES);
    // Blocks of taps only when the images alone leave threads idle (a batch of one). Each
    // element's sum runs over the same taps and images in the same order either way, so the
    // result does not depend on this choice, nor on the number of threads.
    let enough_images = image_chunks * g.groups >= 2 * rayon::current_num_threads();
    let rows_per_chunk = if enough_images { k_dim } else { SHIFTED_GRAD_ROWS };
    let row_chunks = k_dim.div_ceil(rows_per_chunk);
    // Few filters fill few of the GEMM's columns: dot products over the positions instead, with
    // dy_g read as rows in the same numbering (no transposition).
    let by_dot = cout_g <= dot::MAX_FILTERS && isa() >= Isa::Avx2;
    // With several blocks of taps per image, each image's dy_gᵀ is transposed once for all of
    // them; with one, each task transposes its own images into a buffer that stays in cache.
    let shared_dy_t: Vec<f32> = if row_chunks > 1 && !by_dot {
        let mut all = vec![0.0f32; g.batch * g.groups * span * row];
        all.par_chunks_mut(span * row)
            .enumerate()
            .for_each(|(i, dy_t)| transpose(i / g.groups, i % g.groups, dy_t));
        all
    } else {
        Vec::new()
    };
    let non_finite = AtomicBool::new(false);
    // Task (chunk of images, group, block of taps) → its partial [rows × C_out/G].
    let partials: Vec<Vec<f32>> = (0..image_chunks * g.groups * row_chunks)
        .into_par_iter()
        .map(|task| {
            let (n0, rest) = (task / (g.groups * row_chunks) * GRAD_IMAGES, task % (g.groups * row_chunks));
            let (group, block) = (rest / row_chunks, rest % row_chunks);
            let rows = block * rows_per_chunk..((block + 1) * rows_per_chunk).min(k_dim);
            // Only the channels these taps read are padded, and the offsets shifted to them.
            let channels = rows.start / taps..(rows.end - 1) / taps + 1;
            let base = channels.start * padding.volume;
            let offsets: Vec<usize> = tap_offsets[rows.clone()].iter().map(|o| o - base).collect();
            let mut partial = vec![0.0f32; rows.len() * cout_g];
            // Rewritten in full (borders included) for every image.
            let mut padded = vec![0.0f32; channels.len() * padding.volume];
            let mut own_dy_t = match (by_dot, row_chunks > 1) {
                (true, _) => vec![0.0f32; cout_g * span],
                (false, true) => Vec::new(),
                (false, false) => vec![0.0f32; span * row],
            };
            for n in n0..g.batch.min(n0 + GRAD_IMAGES) {
                let first = n * g.in_channels + group * cin_g + channels.start;
                for (c, dst) in padded.chunks_exact_mut(padding.volume).enumerate() {
                    padding.pad_channel(&x[(first + c) * g.input_volume()..][..g.input_volume()], dst);
                }
                if !all_finite(&padded) {
                    non_finite.store(true, Ordering::Relaxed);
                    return partial;
                }
                if by_dot {
                    // dy_g [C_out/G, P'] in the padded numbering, zero past each row's end.
                    let planes = &dy[(n * g.out_channels + group * cout_g) * output_volume..]
                        [..cout_g * output_volume];
                    for (plane, dst) in
                        planes.chunks_exact(output_volume).zip(own_dy_t.chunks_exact_mut(span))
                    {
                        for &(p, q, count) in &runs {
                            dst[p..p + count].copy_from_slice(&plane[q..q + count]);
                        }
                    }
                    dot::accumulate(&padded, &offsets, &own_dy_t, span, cout_g, &mut partial);
                    continue;
                }
                let dy_t = if row_chunks > 1 {
                    &shared_dy_t[(n * g.groups + group) * span * row..][..span * row]
                } else {
                    transpose(n, group, &mut own_dy_t);
                    &own_dy_t
                };
                let a = RowsA::new(&padded, &offsets, span);
                let b = RowsB { data: dy_t, offsets: &dy_offsets };
                // SAFETY: `c` points at this task's own [rows × cout_g] partial.
                unsafe {
                    packed::gemm_packed(
                        &a,
                        b,
                        cout_g,
                        0..a.row_blocks(),
                        partial.as_mut_ptr(),
                        cout_g,
                        false,
                        false,
                    )
                };
            }
            partial
        })
        .collect();
    if non_finite.into_inner() {
        return None;
    }
    let mut dw = vec![0.0f32; g.out_channels * k_dim];
    for (task, partial) in partials.iter().enumerate() {
        let rest = task % (g.groups * row_chunks);
        let (group, block) = (rest / row_chunks, rest % row_chunks);
        let r0 = block * rows_per_chunk;
        for k in 0..cout_g {
            let dst = &mut dw[(group * cout_g + k) * k_dim..][..k_dim];
            for (t, value) in partial.chunks_exact(cout_g).map(|r| r[k]).enumerate() {
                dst[r0 + t] += value;
            }
        }
    }
    Some(dw)
}

/// `dx` of a stride-1 convolution as a forward convolution, on the forward's fast path:
/// `dx[n, c, i] = Σ_k Σ_f dy[n, k, i + P_b − D·f] · w[k, c, f]` is a correlation of `dy`, padded
/// by `D·(F − 1) − P` on each side, with the filters flipped and their channel axes swapped
/// (`w_t [C_in, C_out/G, F]`). The output size works out to the input's exactly. `None` for
/// strided layers, and for paddings wider than the kernel's reach, which this form cannot express.
fn backward_input_as_forward(g: &ConvGeometry, w: &[f32], dy: &[f32]) -> Option<Vec<f32>> {
    let reach: [usize; 3] = std::array::from_fn(|a| g.dilation[a] * g.kernel[a].saturating_sub(1));
    let fits = (0..3).all(|a| g.stride[a] == 1 && g.pad_begin[a] <= reach[a] && g.pad_end[a] <= reach[a]);
    // Empty operands stay on the general path, which handles every empty case.
    let empty =
        [g.batch, g.in_channels, g.out_channels, g.kernel_volume(), g.input_volume(), g.output_volume()]
            .contains(&0);
    if !fits || empty {
        return None;
    }
    let transposed = ConvGeometry {
        in_channels: g.out_channels,
        out_channels: g.in_channels,
        input: g.output,
        output: g.input,
        pad_begin: std::array::from_fn(|a| reach[a] - g.pad_begin[a]),
        pad_end: std::array::from_fn(|a| reach[a] - g.pad_end[a]),
        ..*g
    };
    let (cin_g, cout_g, taps) = (g.in_per_group(), g.out_per_group(), g.kernel_volume());
    let mut w_t = vec![0.0f32; w.len()];
    for group in 0..g.groups {
        for k in 0..cout_g {
            for c in 0..cin_g {
                let src = &w[((group * cout_g + k) * cin_g + c) * taps..][..taps];
                let dst = &mut w_t[((group * cin_g + c) * cout_g + k) * taps..][..taps];
                // Reversing the flat tap index flips every spatial axis at once.
                for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        }
    }
    Some(forward(&transposed, dy, &w_t, None))
}

/// Images per task of [`backward_bias`]: a fixed chunk, so the sums' grouping does not depend
/// on the thread count.
const BIAS_IMAGES: usize = 8;

/// `db[k] = Σ_n Σ_p dy[n, k, p]`. Each task reads a chunk of whole images front to back, and
/// the chunks' per-channel sums are then added in image order. (A task per channel instead
/// strode through every image one plane at a time, waiting on the loads.)
fn backward_bias(g: &ConvGeometry, dy: &[f32]) -> Vec<f32> {
    let (channels, positions) = (g.out_channels, g.output_volume());
    if dy.is_empty() {
        return vec![0.0; channels];
    }
    let chunk_sums: Vec<Vec<f64>> = dy
        .par_chunks(BIAS_IMAGES * channels * positions)
        .map(|images| {
            let mut sums = vec![0.0f64; channels];
            for (k, plane) in images.chunks_exact(positions).enumerate() {
                sums[k % channels] += plane_sum(plane);
            }
            sums
        })
        .collect();
    (0..channels).map(|k| chunk_sums.iter().map(|sums| sums[k]).sum::<f64>() as f32).collect()
}

/// A plane's sum in f64 (the longest of a convolution's sums, batch × positions terms, is made
/// of these), in 16 interleaved partial sums: four registers of four, enough to hide the
/// additions' latency (one running sum waited on each addition). A value's lane is fixed by
/// its position.
fn plane_sum(plane: &[f32]) -> f64 {
    let mut lanes = [0.0f64; 16];
    let chunks = plane.chunks_exact(lanes.len());
    let rest = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += v as f64;
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(rest) {
        *lane += v as f64;
    }
    lanes.iter().sum()
}

/// Whether every value is finite: one integer maximum over the magnitudes' bits, which the
/// compiler vectorizes (`all(is_finite)` stops at the first failure, so it runs value by value).
fn all_finite(values: &[f32]) -> bool {
    values.iter().map(|v| v.to_bits() & 0x7fff_ffff).max().is_none_or(|m| m < f32::INFINITY.to_bits())
}

/// Copies rows `c0..c0 + rows` of `images` consecutive `[channels, positions]` planes (one per
/// image, `image_stride` apart) side by side into `out [rows, images · positions]`.
fn gather_rows(
    src: &[f32],
    image_stride: usize,
    images: usize,
    rows: usize,
    positions: usize,
    out: &mut [f32],
) {
    let width = images * positions;
    for k in 0..images {
        for r in 0..rows {
            let from = &src[k * image_stride + r * positions..][..positions];
            out[r * width + k * positions..][..positions].copy_from_slice(from);
        }
    }
}

fn backward_weight(g: &ConvGeometry, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let (cin_g, cout_g) = (g.in_per_group(), g.out_per_group());
    let (kernel_volume, input_volume, positions) = (g.kernel_volume(), g.input_volume(), g.output_volume());
    let k_dim = cin_g * kernel_volume;
    let mut dw = vec![0.0f32; g.out_channels * k_dim];
    // An empty input (zero width padded out to a valid size) reads only padding: dw stays zero.
    if dw.is_empty() || g.batch == 0 || input_volume == 0 || positions == 0 {
        return dw;
    }
    let channels_per_task = GRAD_ROWS.div_ceil(kernel_volume).min(cin_g);
    let chunks = cin_g.div_ceil(channels_per_task);
    let batched = images_per_gemm(positions);
    let images_per_task = GRAD_IMAGES.div_ceil(batched) * batched;
    let image_chunks = g.batch.div_ceil(images_per_task);
    let tile = GRAD_TILE.min(positions);
    let blocks: Vec<Vec<f32>> = (0..g.groups * chunks * image_chunks)
        .into_par_iter()
        .map(|t| {
            let (group, chunk, image_chunk) =
                (t / (chunks * image_chunks), (t / image_chunks) % chunks, t % image_chunks);
            let c0 = chunk * channels_per_task;
            let channels = channels_per_task.min(cin_g - c0);
            let rows = channels * kernel_volume;
            let mut block = vec![0.0f32; cout_g * rows];
            let n_begin = image_chunk * images_per_task;
            let n_end = g.batch.min(n_begin + images_per_task);
            let width = if batched > 1 { batched * positions } else { tile };
            let mut cols = vec![0.0f32; rows * width];
            let mut dy_rows = if batched > 1 { vec![0.0f32; cout_g * width] } else { Vec::new() };
            let image_at = |n: usize| {
                &x[(n * g.in_channels + group * cin_g + c0) * input_volume..][..channels * input_volume]
            };
            let dy_at = |n: usize| (n * g.out_channels + group * cout_g) * positions;
            let mut n = n_begin;
            while n < n_end {
                if batched > 1 {
                    let images = batched.min(n_end - n);
                    let span = images * positions;
                    for k in 0..images {
                        im2col_tile(g, image_at(n + k), 0, positions, &mut cols[k * positions..], span);
                    }
                    gather_rows(
                        &dy[dy_at(n)..],
                        g.out_channels * positions,
                        images,
                        cout_g,
                        positions,
                        &mut dy_rows,
                    );
                    let lhs = MatRef { data: &dy_rows, row_stride: span, col_stride: 1 };
                    let rhs = MatRef::transposed(&cols[..rows * span], span);
                    gemm(cout_g, rows, span, &mut block, rows, lhs, rhs, true, Threads::One);
                    n += images;
                } else {
                    let dy_g = &dy[dy_at(n)..][..cout_g * positions];
                    for p0 in (0..positions).step_by(tile) {
                        let len = tile.min(positions - p0);
                        im2col_tile(g, image_at(n), p0, len, &mut cols, len);
                        let lhs = MatRef { data: &dy_g[p0..], row_stride: positions, col_stride: 1 };
                        let rhs = MatRef::transposed(&cols[..rows * len], len);
                        gemm(cout_g, rows, len, &mut block, rows, lhs, rhs, true, Threads::One);
                    }
                    n += 1;
                }
            }
            block
        })
        .collect();
    // Each task's block adds to columns c0·|F|.. of dw_g, image chunks in order.
    for (t, block) in blocks.iter().enumerate() {
        let (group, chunk) = (t / (chunks * image_chunks), (t / image_chunks) % chunks);
        let column = chunk * channels_per_task * kernel_volume;
        let rows = block.len().checked_div(cout_g).unwrap_or(0);
        for k in 0..cout_g {
            let dst = (group * cout_g + k) * k_dim + column;
            for (d, s) in dw[dst..dst + rows].iter_mut().zip(&block[k * rows..(k + 1) * rows]) {
                *d += s;
            }
        }
    }
    dw
}

fn backward_input(g: &ConvGeometry, w: &[f32], dy: &[f32]) -> Vec<f32> {
    let (cin_g, cout_g) = (g.in_per_group(), g.out_per_group());
    let (input_volume, positions) = (g.input_volume(), g.output_volume());
    let k_dim = cin_g * g.kernel_volume();
    let mut dx = vec![0.0f32; g.batch * g.in_channels * input_volume];
    // No filters: nothing flows back. (Also keeps the position tiles inside an empty `dy`.)
    if dx.is_empty() || cout_g == 0 || positions == 0 {
        return dx;
    }
    let batched = images_per_gemm(positions);
    if g.groups == 1 && batched > 1 {
        // Several images per GEMM; a task owns `batched` whole images of dx.
        dx.par_chunks_mut(batched * g.in_channels * input_volume).enumerate().for_each(|(t, images_dx)| {
            let n0 = t * batched;
            let images = images_dx.len() / (g.in_channels * input_volume);
            let span = images * positions;
            let mut dy_rows = vec![0.0f32; cout_g * span];
            gather_rows(
                &dy[n0 * g.out_channels * positions..],
                g.out_channels * positions,
                images,
                cout_g,
                positions,
                &mut dy_rows,
            );
            let mut cols = vec![0.0f32; k_dim * span];
            let lhs = MatRef::transposed(w, k_dim);
            let rhs = MatRef { data: &dy_rows, row_stride: span, col_stride: 1 };
            gemm(k_dim, span, cout_g, &mut cols, span, lhs, rhs, false, Threads::One);
            for (k, image) in images_dx.chunks_exact_mut(g.in_channels * input_volume).enumerate() {
                col2im_tile(g, image, 0, positions, &cols[k * positions..], span);
            }
        });
        return dx;
    }
    let tile = GRAD_TILE.min(positions);
    dx.par_chunks_mut(cin_g * input_volume).enumerate().for_each(|(t, image)| {
        let (n, group) = (t / g.groups, t % g.groups);
        let w_g = &w[group * cout_g * k_dim..][..cout_g * k_dim];
        let dy_g = &dy[(n * g.out_channels + group * cout_g) * positions..][..cout_g * positions];
        let mut cols = vec![0.0f32; k_dim * tile];
        for p0 in (0..positions).step_by(tile) {
            let len = tile.min(positions - p0);
            let lhs = MatRef::transposed(w_g, k_dim);
            let rhs = MatRef { data: &dy_g[p0..], row_stride: positions, col_stride: 1 };
            gemm(k_dim, len, cout_g, &mut cols, len, lhs, rhs, false, Threads::One);
            col2im_tile(g, image, p0, len, &cols, len);
        }
    });
    dx
}

/// A run of output positions along the width axis with fixed depth and height indices.
struct Segment {
    z: usize,
    r: usize,
    c_begin: usize,
    c_end: usize,
    column: usize,
}

/// What one tap row of an im2col tile holds over one [`Segment`]: tile columns `columns` read
/// channel `channel`; of these, `inside` read the input at channel offsets `start`,
/// `start + S_w`, … and the rest read zero padding (`start` is meaningful only when `inside` is
/// not empty).
struct TapRun {
    row: usize,
    channel: usize,
    columns: Range<usize>,
    inside: Range<usize>,
    start: usize,
}

/// Walks the taps `[channels·|F|, len]` of output positions `p0..p0+len` run by run, in row
/// order. im2col (the forward's gather) and col2im (the backward's scatter) both follow it, so
/// the scatter is by construction the exact adjoint of the gather.
fn tap_runs(g: &ConvGeometry, channels: usize, p0: usize, len: usize, mut visit: impl FnMut(TapRun)) {
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

    let mut row = 0;
    for channel in 0..channels {
        for fz in 0..kd {
            for fr in 0..kh {
                for fc in 0..kw {
                    // Output columns whose input column c·S + fc·D − P lies inside [0, W).
                    let offset = fc * dw;
                    let c_lo = pw.saturating_sub(offset).div_ceil(sw);
                    let c_hi = (iw + pw).saturating_sub(offset).div_ceil(sw);
                    for s in &segments {
                        let columns = s.column..s.column + (s.c_end - s.c_begin);
                        let sz = (s.z * sd + fz * dd).checked_sub(pd).filter(|&v| v < id);
                        let sr = (s.r * sh + fr * dh).checked_sub(ph).filter(|&v| v < ih);
                        let (Some(sz), Some(sr)) = (sz, sr) else {
                            let inside = columns.start..columns.start;
                            visit(TapRun { row, channel, columns, inside, start: 0 });
                            continue;
                        };
                        let lo = c_lo.clamp(s.c_begin, s.c_end);
                        let hi = c_hi.clamp(lo, s.c_end);
                        let inside = s.column + lo - s.c_begin..s.column + hi - s.c_begin;
                        // Only used for a non-empty `inside`, where lo·S + offset ≥ P holds.
                        let start = (sz * ih + sr) * iw + (lo * sw + offset).saturating_sub(pw);
                        visit(TapRun { row, channel, columns, inside, start });
                    }
                    row += 1;
                }
            }
        }
    }
}

/// Writes the taps `[C/G·|F|, len]` of output positions `p0..p0+len` of one image and group
/// (`image` holds its channels, all of them or a contiguous subset) into `taps`, row-major with
/// row stride `stride`.
fn im2col_tile(g: &ConvGeometry, image: &[f32], p0: usize, len: usize, taps: &mut [f32], stride: usize) {
    let channel_volume = g.input_volume();
    let sw = g.stride[2];
    tap_runs(g, image.len().checked_div(channel_volume).unwrap_or(0), p0, len, |run| {
        let row = &mut taps[run.row * stride..run.row * stride + len];
        row[run.columns.start..run.inside.start].fill(0.0);
        row[run.inside.end..run.columns.end].fill(0.0);
        let inside = &mut row[run.inside];
        if inside.is_empty() {
            return;
        }
        let src = &image[run.channel * channel_volume..][..channel_volume];
        if sw == 1 {
            inside.copy_from_slice(&src[run.start..run.start + inside.len()]);
        } else {
            for (i, v) in inside.iter_mut().enumerate() {
                *v = src[run.start + i * sw];
            }
        }
    });
}

/// The adjoint of [`im2col_tile`]: adds each tap of `cols [C/G·|F|, len]` (row stride `stride`)
/// to the input element it was read from; taps that read padding are dropped.
fn col2im_tile(g: &ConvGeometry, image: &mut [f32], p0: usize, len: usize, cols: &[f32], stride: usize) {
    let channel_volume = g.input_volume();
    let sw = g.stride[2];
    tap_runs(g, image.len().checked_div(channel_volume).unwrap_or(0), p0, len, |run| {
        let taps = &cols[run.row * stride + run.inside.start..run.row * stride + run.inside.end];
        let dst = &mut image[run.channel * channel_volume..][..channel_volume];
        for (i, v) in taps.iter().enumerate() {
            dst[run.start + i * sw] += v;
        }
    });
}
