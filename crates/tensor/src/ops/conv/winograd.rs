//! Winograd's minimal filtering F(2×2, 3×3) for 3×3, stride-1 2D convolutions (Lavin and Gray,
//! "Fast Algorithms for Convolutional Neural Networks", 2016).
//!
//! The output is cut into 2×2 tiles. The tile at `(2ty, 2tx)` of filter `k` is
//! `Aᵀ [Σ_c U_kc ⊙ V_c] A`, with `U_kc = G w_kc Gᵀ` (the 3×3 filter taken to 4×4) and
//! `V_c = Bᵀ d_c B` (the 4×4 input patch under the tile, transformed): 16 multiplications per
//! tile and channel pair where the direct form needs 36, 2.25× fewer. For each of the 16 points
//! `ξ` of the 4×4 transform, the sum over channels is a matrix product
//! `M_ξ [K × T] = U_ξ [K × C] · V_ξ [C × T]` over a block of `T` tiles, done by the packed GEMM
//! of the direct path with `U_ξ` packed once.
//!
//! Layout: the padded input is stored with each row's even columns first, then its odd ones,
//! so that column `j` of eight neighbouring tiles' patches is one contiguous run of eight floats
//! (tiles start two columns apart). The transforms work on eight tiles at a time in `[f32; 8]`
//! lanes, which the compiler turns into vector instructions.
//!
//! Accuracy: the transforms only add, subtract and halve, and the largest transformed filter
//! value is at most 2.25× the largest tap, so the error stays within a small factor of the direct
//! sum's (the tests bound it against the reference loops, and the PyTorch fixtures hold).
//!
//! Results do not depend on the number of threads: the tile blocks are a function of the
//! geometry, and each output is computed from the same operands in the same order.

use std::cell::Cell;

use rayon::prelude::*;

use super::ConvGeometry;
use super::fast::{Epilogue, OutPtr, filter_blocks_per_task};
use crate::gemm::packed::{self, MR, NR, PackedA, RowsB};
#[cfg(target_arch = "x86_64")]
use crate::simd::lane_mask;

/// Points of the 4×4 transform (one GEMM each).
const POINTS: usize = 16;

/// Lanes the transforms work on at once (one AVX register of tiles).
const LANES: usize = 8;

/// Channels (in and out) below which the transforms cost more than the multiplications they
/// save: 16 → 16 channels on 32×32 (ResNet-20's first stage) ran at 0.8× the direct path, 32 → 32
/// on 16×16 at 1.07× (0.82× at batch 128 once the direct path padded each image in cache and
/// wrote whole rows straight out), 64 → 64 on 56×56 at 1.3× (1.3× again then, as 128 → 128 on
/// 28×28, at batch 16).
const MIN_CHANNELS: usize = 64;

/// Tile columns per row below which the transforms' eight-tile vectors run half empty (a 7×7 or
/// 8×8 map has four): 512 channels on 7×7 at batch 16 ran at 0.85×, 64 on 8×8 at 0.8–1.0×.
const MIN_TILE_COLUMNS: usize = 7;

/// Blocks of tiles (tasks) below which streaming the transformed filters (16/9 of the weights)
/// once per block costs more than it saves: 256 channels on 14×14 at batch 1 (two blocks) ran at
/// 0.5×, at batch 16 (25 blocks) at 1.5×.
const MIN_BLOCKS: usize = 4;

/// Floats of transformed inputs and products one task aims to keep in L2.
const BLOCK_FLOATS: usize = 96 * 1024;

thread_local! {
    /// Each worker keeps its transform buffers between tasks and calls.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Whether F(2×2, 3×3) computes convolutions of this shape: 2D, 3×3, stride 1, no dilation, no
/// groups (whatever the batch and map sizes).
pub(crate) fn computes(g: &ConvGeometry) -> bool {
    g.kernel == [1, 3, 3]
        && g.input[0] == 1
        && g.pad_begin[0] == 0
        && g.pad_end[0] == 0
        && g.stride == [1; 3]
        && g.dilation == [1; 3]
        && g.groups == 1
}

/// Whether [`forward`] can run this one: [`computes`], with no empty operand.
pub(crate) fn supports(g: &ConvGeometry) -> bool {
    computes(g) && g.batch > 0 && g.in_channels > 0 && g.out_channels > 0 && g.output_volume() > 0
}

/// Whether the fast path uses it: supported, and large enough to gain. A function of the
/// geometry only, never of the thread count, so results do not depend on it; they can differ in
/// the last bits between batch sizes, as the batch enters the choice.
pub(crate) fn chosen(g: &ConvGeometry) -> bool {
    let tiles = Tiles::new(g);
    supports(g)
        && g.in_channels >= MIN_CHANNELS
        && g.out_channels >= MIN_CHANNELS
        && tiles.cols >= MIN_TILE_COLUMNS
        && g.batch * tiles.per_image() >= MIN_BLOCKS * Tiles::per_task(g)
}

/// The filters transformed to `U_ξ [K × C]` and packed for the GEMM, one per point.
pub(crate) struct Filters {
    points: Vec<PackedA>,
    out_channels: usize,
    in_channels: usize,
}

impl Filters {
    /// Transforms `w [K, C, 3, 3]` (as the kernels correlate with it).
    pub fn new(w: &[f32], out_channels: usize, in_channels: usize) -> Self {
        let pairs = out_channels * in_channels;
        assert!(w.len() >= pairs * 9, "Winograd filters: {} values for {pairs} 3×3 filters", w.len());
        // [K·C][ξ] first (each filter's 16 values together), then one [K × C] matrix per point.
        let mut by_pair = vec![0.0f32; pairs * POINTS];
        by_pair.par_chunks_mut(POINTS).zip(w.par_chunks(9)).for_each(|(u, taps)| {
            u.copy_from_slice(&transform_filter(taps.try_into().expect("nine taps")));
        });
        let points = (0..POINTS)
            .into_par_iter()
            .map(|xi| {
                let u: Vec<f32> = (0..pairs).map(|pair| by_pair[pair * POINTS + xi]).collect();
                PackedA::new(&u, out_channels, in_channels)
            })
            .collect();
        Filters { points, out_channels, in_channels }
    }
}

/// `G g Gᵀ` with `G = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]`, row-major 4×4.
fn transform_filter(g: &[f32; 9]) -> [f32; POINTS] {
    let apply_g = |a: f32, b: f32, c: f32| [a, 0.5 * (a + b + c), 0.5 * (a - b + c), c];
    // Column `col` of G·g is G applied to column `col` of g.
    let columns: [[f32; 4]; 3] = std::array::from_fn(|col| apply_g(g[col], g[3 + col], g[6 + col]));
    // Row `i` of (G·g)·Gᵀ is G applied to row `i` of G·g.
    let mut u = [0.0f32; POINTS];
    for i in 0..4 {
        u[i * 4..i * 4 + 4].copy_from_slice(&apply_g(columns[0][i], columns[1][i], columns[2][i]));
    }
    u
}

/// How the output is cut into 2×2 tiles, and the padded, column-split input they read.
#[derive(Clone, Copy)]
struct Tiles {
    /// Tile rows and columns per image.
    rows: usize,
    cols: usize,
    /// The padded input plane: `2·rows + 2` rows of `cols + 1` even then `cols + 1` odd columns.
    plane_rows: usize,
    row_len: usize,
}

impl Tiles {
    fn new(g: &ConvGeometry) -> Self {
        let (rows, cols) = (g.output[1].div_ceil(2), g.output[2].div_ceil(2));
        Tiles { rows, cols, plane_rows: 2 * rows + 2, row_len: 2 * (cols + 1) }
    }

    fn per_image(&self) -> usize {
        self.rows * self.cols
    }

    fn plane(&self) -> usize {
        self.plane_rows * self.row_len
    }

    /// Tiles per task: enough for a long GEMM, few enough that a block's transformed inputs and
    /// products (16 × (C + K) floats per tile) stay near L2.
    fn per_task(g: &ConvGeometry) -> usize {
        let fit = BLOCK_FLOATS / (POINTS * (g.in_channels + g.out_channels));
        (fit / NR * NR).clamp(2 * NR, 8 * NR)
    }

    /// Calls `visit(image, run)` for the runs of tiles `first..first + count` of the batch that
    /// lie in one tile row, numbered in the block from `first`.
    fn runs(&self, first: usize, count: usize, mut visit: impl FnMut(usize, Run)) {
        let mut t = first;
        while t < first + count {
            let (image, rest) = (t / self.per_image(), t % self.per_image());
            let (ty, tx) = (rest / self.cols, rest % self.cols);
            let len = (self.cols - tx).min(first + count - t);
            visit(image, Run { ty, tx, len, at: t - first });
            t += len;
        }
    }
}

/// Tiles `tx..tx + len` of tile row `ty` of one image, which are columns `at..at + len` of the
/// task's block.
#[derive(Clone, Copy)]
struct Run {
    ty: usize,
    tx: usize,
    len: usize,
    at: usize,
}

/// A block's products `M_ξ`: `rows` (filters) of `stride` floats per point, the points
/// [`point_stride`] apart.
#[derive(Clone, Copy)]
struct Products<'a> {
    data: &'a [f32],
    rows: usize,
    stride: usize,
}

/// Writes each plane of `x [N·C, H, W]` padded to the tiles' reach and split into even and odd
/// columns.
fn split_input(g: &ConvGeometry, tiles: &Tiles, x: &[f32]) -> Vec<f32> {
    let [_, h, w] = g.input;
    let (top, left) = (g.pad_begin[1], g.pad_begin[2]);
    let half = tiles.cols + 1;
    let mut out = vec![0.0f32; g.batch * g.in_channels * tiles.plane()];
    out.par_chunks_mut(tiles.plane()).enumerate().for_each(|(plane, dst)| {
        let src = &x[plane * h * w..][..h * w];
        for (r, row) in dst.chunks_exact_mut(tiles.row_len).enumerate() {
            let Some(y) = r.checked_sub(top).filter(|&y| y < h) else { continue };
            let src_row = &src[y * w..][..w];
            let (evens, odds) = row.split_at_mut(half);
            for (parity, dst_half) in [(0, evens), (1, odds)] {
                // Padded column 2e + parity is input column 2e + parity − left, when in 0..w.
                let lo = (left.saturating_sub(parity)).div_ceil(2);
                let hi = (w + left).saturating_sub(parity).div_ceil(2).min(half);
                for e in lo..hi {
                    dst_half[e] = src_row[2 * e + parity - left];
                }
            }
        }
    });
    out
}

/// How many channels ahead the input transform prefetches.
const PREFETCH_CHANNELS: usize = 8;

/// Floats from one point's block of transformed inputs (or products) to the next: `rows` rows
/// of `stride`, and one cache line more, so that the 16 blocks a transform reads or writes side
/// by side do not sit a multiple of 4 KiB apart (with 64 channels × 48 tiles they did: all 16
/// streams fell into the same L1 sets, and the transforms took as long as the GEMMs).
#[inline(always)]
fn point_stride(rows: usize, stride: usize) -> usize {
    rows * stride + NR
}

/// How the tasks split the work: blocks of tiles, and for few blocks ranges of filter blocks
/// (as the direct path's plan does).
struct Plan {
    tiles: usize,
    per_task: usize,
    blocks: usize,
    row_blocks: usize,
    blocks_per_chunk: usize,
    row_chunks: usize,
}

impl Plan {
    fn new(g: &ConvGeometry, tiles: &Tiles) -> Self {
        let total = g.batch * tiles.per_image();
        let per_task = Tiles::per_task(g);
        let blocks = total.div_ceil(per_task);
        let row_blocks = g.out_channels.div_ceil(MR);
        let blocks_per_chunk = filter_blocks_per_task(blocks, row_blocks);
        Plan {
            tiles: total,
            per_task,
            blocks,
            row_blocks,
            blocks_per_chunk,
            row_chunks: row_blocks.div_ceil(blocks_per_chunk),
        }
    }

    /// (first tile, tiles, filter blocks) of task `t`.
    fn task(&self, t: usize) -> (usize, usize, std::ops::Range<usize>) {
        let (block, chunk) = (t / self.row_chunks, t % self.row_chunks);
        let first = block * self.per_task;
        let rows = chunk * self.blocks_per_chunk..((chunk + 1) * self.blocks_per_chunk).min(self.row_blocks);
        (first, self.per_task.min(self.tiles - first), rows)
    }
}

/// `y = epilogue(conv(x, w) + b)` through the transforms (see the module docs); `g` must be
/// [`supports`]ed and `filters` built from `g`'s weights. `portable` forces the portable
/// micro-kernel and transforms (for the tests that compare them with the AVX2 ones).
pub(crate) fn forward(
    g: &ConvGeometry,
    x: &[f32],
    filters: &Filters,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    portable: bool,
) -> Vec<f32> {
    assert!(supports(g), "Winograd F(2×2, 3×3) does not apply to {g:?}");
    assert_eq!((filters.out_channels, filters.in_channels), (g.out_channels, g.in_channels));
    let (c_in, c_out) = (g.in_channels, g.out_channels);
    let tiles = Tiles::new(g);
    let padded = split_input(g, &tiles, x);
    let plan = Plan::new(g, &tiles);
    let stride = packed::b_row_stride(plan.per_task);
    let offsets: Vec<usize> = (0..c_in).map(|c| c * stride).collect();
    let (v_len, m_len) = (POINTS * point_stride(c_in, stride), POINTS * point_stride(c_out, stride));

    let len = g.batch * c_out * g.output_volume();
    let mut y: Vec<f32> = Vec::with_capacity(len);
    let out = OutPtr(y.as_mut_ptr());
    let transforms = Transforms::detect(portable, epilogue);
    (0..plan.blocks * plan.row_chunks).into_par_iter().for_each(|t| {
        let (first, count, blocks) = plan.task(t);
        let mut scratch = SCRATCH.take();
        if scratch.len() < v_len + m_len {
            scratch.resize(v_len + m_len, 0.0);
        }
        let (v, m) = scratch.split_at_mut(v_len);
        tiles.runs(first, count, |image, run| {
            let planes = &padded[image * c_in * tiles.plane()..][..c_in * tiles.plane()];
            transforms.input(&tiles, planes, run, v, c_in, stride);
        });
        for (xi, u) in filters.points.iter().enumerate() {
            let v_xi = RowsB { data: &v[xi * point_stride(c_in, stride)..], offsets: &offsets };
            // SAFETY: `m` holds POINTS blocks of c_out rows × `stride` floats, this task's own.
            unsafe {
                packed::gemm_packed(
                    u,
                    v_xi,
                    count,
                    blocks.clone(),
                    m[xi * point_stride(c_out, stride)..].as_mut_ptr(),
                    stride,
                    true,
                    portable,
                )
            };
        }
        let filters_of_task = blocks.start * MR..(blocks.end * MR).min(c_out);
        let products = Products { data: m, rows: c_out, stride };
        tiles.runs(first, count, |image, run| {
            for k in filters_of_task.clone() {
                let b = bias.map_or(0.0, |b| b[k]);
                let plane = out.at((image * c_out + k) * g.output_volume());
                // SAFETY: the tiles of this run and the filters of this task are this task's
                // alone; `output` checks every write against the output map.
                unsafe { transforms.output(g, products, k, run, b, plane) };
            }
        });
        SCRATCH.set(scratch);
    });
    // SAFETY: the tasks cover every tile of every image for every filter, and each tile writes
    // all the outputs it covers.
    unsafe { y.set_len(len) };
    y
}

/// The input and output transforms, with AVX2 code generation where the CPU has it (the same
/// additions in the same order either way, so the results are identical).
#[derive(Clone, Copy)]
struct Transforms {
    avx2: bool,
    epilogue: Epilogue,
}

impl Transforms {
    /// The AVX2 ones where the CPU has them, unless `portable` (for the tests that compare).
    fn detect(portable: bool, epilogue: Epilogue) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            Transforms { avx2: !portable && crate::simd::isa() >= crate::simd::Isa::Avx2, epilogue }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = portable;
            Transforms { avx2: false, epilogue }
        }
    }

    fn input(self, tiles: &Tiles, planes: &[f32], run: Run, v: &mut [f32], channels: usize, stride: usize) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: the CPU has AVX2 (detected).
            return unsafe { input_avx2(tiles, planes, run, v, channels, stride) };
        }
        input_transform(tiles, planes, run, v, channels, stride)
    }

    /// # Safety
    /// `plane` must point at filter `k`'s output map of one image, writable for the tiles of
    /// `run` and written by no one else meanwhile.
    unsafe fn output(
        self,
        g: &ConvGeometry,
        products: Products<'_>,
        k: usize,
        run: Run,
        bias: f32,
        plane: *mut f32,
    ) {
        #[cfg(target_arch = "x86_64")]
        if self.avx2 {
            // SAFETY: the CPU has AVX2; the caller's guarantees pass on.
            return unsafe { output_avx2(g, products, k, run, bias, self.epilogue, plane) };
        }
        // SAFETY: the caller's guarantees pass on.
        unsafe { output_transform(g, products, k, run, bias, self.epilogue, plane) }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn input_avx2(tiles: &Tiles, planes: &[f32], run: Run, v: &mut [f32], channels: usize, stride: usize) {
    use std::arch::x86_64::*;
    let Run { ty, tx, len: run, at } = run;
    let half = tiles.cols + 1;
    let point = point_stride(channels, stride);
    // Bounds once for the whole run: the last load of a patch row ends at
    // half + tx + run + 1 ≤ row_len (tx + run ≤ cols), the last store at `last_store`.
    assert!(channels * tiles.plane() <= planes.len());
    assert!((2 * ty + 4) * tiles.row_len <= tiles.plane() && half + tx + run < tiles.row_len);
    assert!(15 * point + (channels - 1) * stride + at + run <= v.len());
    for c in 0..channels {
        // SAFETY: inside the planes (asserted above).
        let plane = unsafe { planes.as_ptr().add(c * tiles.plane()) };
        // The patches of the next channels are in another plane, too far ahead for the hardware
        // prefetchers: ask for their rows now (each run of tiles spans a few lines).
        if c + PREFETCH_CHANNELS < channels {
            // SAFETY: inside the planes; a prefetch never faults anyway.
            let next = unsafe { plane.add(PREFETCH_CHANNELS * tiles.plane()) };
            for i in 0..4 {
                for from in [tx, half + tx] {
                    let first = (2 * ty + i) * tiles.row_len + from;
                    for offset in (first..=first + run + 1).step_by(NR) {
                        // SAFETY: as above.
                        unsafe { _mm_prefetch(next.add(offset).cast::<i8>(), _MM_HINT_T0) };
                    }
                }
            }
        }
        for start in (0..run).step_by(LANES) {
            let lanes = LANES.min(run - start);
            let mask = lane_mask(lanes);
            let e = tx + start;
            // SAFETY: the lanes read and written are inside the bounds asserted above; the
            // masked-off lanes of a partial group touch no memory.
            unsafe {
                let load = |ptr: *const f32| {
                    if lanes == LANES { _mm256_loadu_ps(ptr) } else { _mm256_maskload_ps(ptr, mask) }
                };
                let mut d = [[_mm256_setzero_ps(); 4]; 4];
                for (i, d_row) in d.iter_mut().enumerate() {
                    let row = plane.add((2 * ty + i) * tiles.row_len);
                    let c0 = load(row.add(e));
                    let c1 = load(row.add(half + e));
                    let c2 = load(row.add(e + 1));
                    let c3 = load(row.add(half + e + 1));
                    *d_row = [
                        _mm256_sub_ps(c0, c2),
                        _mm256_add_ps(c1, c2),
                        _mm256_sub_ps(c2, c1),
                        _mm256_sub_ps(c1, c3),
                    ];
                }
                let out = v.as_mut_ptr().add(c * stride + at + start);
                // Column j of every row of `d`: a transposition, clearer with the index.
                #[allow(clippy::needless_range_loop)]
                for j in 0..4 {
                    let column = [
                        _mm256_sub_ps(d[0][j], d[2][j]),
                        _mm256_add_ps(d[1][j], d[2][j]),
                        _mm256_sub_ps(d[2][j], d[1][j]),
                        _mm256_sub_ps(d[1][j], d[3][j]),
                    ];
                    for (i, values) in column.into_iter().enumerate() {
                        let dst = out.add((i * 4 + j) * point);
                        if lanes == LANES {
                            _mm256_storeu_ps(dst, values);
                        } else {
                            _mm256_maskstore_ps(dst, mask, values);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn output_avx2(
    g: &ConvGeometry,
    products: Products<'_>,
    k: usize,
    run: Run,
    bias: f32,
    epilogue: Epilogue,
    plane: *mut f32,
) {
    use std::arch::x86_64::*;
    let (Products { data: m, rows: c_out, stride }, Run { ty, tx, len: run, at: at_col }) = (products, run);
    let [_, oh, ow] = g.output;
    let point = point_stride(c_out, stride);
    // Whole registers are read even for a partial group: past the run's last column lies the
    // rest of the row, or for the last row the block's spare cache line (`point_stride`).
    assert!(15 * point + k * stride + at_col + run.div_ceil(LANES) * LANES <= m.len());
    let zero = _mm256_setzero_ps();
    let bias_v = _mm256_set1_ps(bias);
    for start in (0..run).step_by(LANES) {
        let lanes = LANES.min(run - start);
        let first = at_col + start;
        // SAFETY: loads inside the bound asserted above; the stores inside the map and this
        // caller's tiles (see `output_transform`), masked to the outputs that exist.
        unsafe {
            let point_at = |xi: usize| _mm256_loadu_ps(m.as_ptr().add(xi * point + k * stride + first));
            let mut cols = [[zero; 2]; 4];
            for (j, col) in cols.iter_mut().enumerate() {
                let (m0, m1, m2, m3) = (point_at(j), point_at(4 + j), point_at(8 + j), point_at(12 + j));
                *col = [_mm256_add_ps(_mm256_add_ps(m0, m1), m2), _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3)];
            }
            let first_col = 2 * (tx + start);
            let width = (2 * lanes).min(ow - first_col);
            let (left_mask, right_mask) = (lane_mask(width), lane_mask(width.saturating_sub(LANES)));
            for (a, out_row) in (2 * ty..(2 * ty + 2).min(oh)).enumerate() {
                let [m0, m1, m2, m3] = [cols[0][a], cols[1][a], cols[2][a], cols[3][a]];
                let mut y0 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(m0, m1), m2), bias_v);
                let mut y1 = _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(m1, m2), m3), bias_v);
                if epilogue == Epilogue::BiasRelu {
                    // max(0, v) returns v when v is NaN (the second operand), as the scalar
                    // epilogue does, and keeps −0.
                    y0 = _mm256_max_ps(zero, y0);
                    y1 = _mm256_max_ps(zero, y1);
                }
                // Interleave the tiles' two columns: y0[0] y1[0] y0[1] y1[1] …
                let (lo, hi) = (_mm256_unpacklo_ps(y0, y1), _mm256_unpackhi_ps(y0, y1));
                let (left, right) =
                    (_mm256_permute2f128_ps(lo, hi, 0x20), _mm256_permute2f128_ps(lo, hi, 0x31));
                let dst = plane.add(out_row * ow + first_col);
                if width == 2 * LANES {
                    _mm256_storeu_ps(dst, left);
                    _mm256_storeu_ps(dst.add(LANES), right);
                } else {
                    _mm256_maskstore_ps(dst, left_mask, left);
                    _mm256_maskstore_ps(dst.wrapping_add(LANES), right_mask, right);
                }
            }
        }
    }
}

type Lanes = [f32; LANES];

// The helpers below are plain loops over fixed-size arrays, always inlined, so that inside the
// `target_feature` functions they become vector instructions (closures through
// `std::array::from_fn` and copies of a variable length stayed calls, a third of the time).

#[inline(always)]
fn add(a: Lanes, b: Lanes) -> Lanes {
    let mut r = [0.0f32; LANES];
    for l in 0..LANES {
        r[l] = a[l] + b[l];
    }
    r
}

#[inline(always)]
fn sub(a: Lanes, b: Lanes) -> Lanes {
    let mut r = [0.0f32; LANES];
    for l in 0..LANES {
        r[l] = a[l] - b[l];
    }
    r
}

/// `src[from..from + lanes]`, zeros after.
#[inline(always)]
fn load(src: &[f32], from: usize, lanes: usize) -> Lanes {
    let mut out = [0.0f32; LANES];
    if lanes == LANES {
        out.copy_from_slice(&src[from..from + LANES]);
    } else {
        out[..lanes].iter_mut().zip(&src[from..from + lanes]).for_each(|(o, s)| *o = *s);
    }
    out
}

/// `dst[at..at + lanes] = values[..lanes]`.
#[inline(always)]
fn store(dst: &mut [f32], at: usize, values: &Lanes, lanes: usize) {
    if lanes == LANES {
        dst[at..at + LANES].copy_from_slice(values);
    } else {
        dst[at..at + lanes].iter_mut().zip(values).for_each(|(d, v)| *d = *v);
    }
}

/// `Bᵀ d B` on four values: `[d0 − d2, d1 + d2, d2 − d1, d1 − d3]`.
#[inline(always)]
fn bt(d: [Lanes; 4]) -> [Lanes; 4] {
    [sub(d[0], d[2]), add(d[1], d[2]), sub(d[2], d[1]), sub(d[1], d[3])]
}

/// `Aᵀ m A` on four values: `[m0 + m1 + m2, m1 − m2 − m3]`.
#[inline(always)]
fn at(m: [Lanes; 4]) -> [Lanes; 2] {
    [add(add(m[0], m[1]), m[2]), sub(sub(m[1], m[2]), m[3])]
}

/// `V_ξ[c, at..at + len]` for every channel `c` of one image and the tiles of `run`: row
/// `ξ·C + c` of `v`, `stride` floats per row.
#[inline(always)]
fn input_transform(tiles: &Tiles, planes: &[f32], run: Run, v: &mut [f32], channels: usize, stride: usize) {
    let Run { ty, tx, len: run, at } = run;
    let half = tiles.cols + 1;
    for c in 0..channels {
        let plane = &planes[c * tiles.plane()..][..tiles.plane()];
        for start in (0..run).step_by(LANES) {
            let lanes = LANES.min(run - start);
            let e = tx + start;
            // Row i of the patches of tiles e..e + lanes, transformed along it: its columns are
            // evens[e..], odds[e..], evens[e + 1..], odds[e + 1..].
            let mut d = [[[0.0f32; LANES]; 4]; 4];
            for (i, d_row) in d.iter_mut().enumerate() {
                let row = &plane[(2 * ty + i) * tiles.row_len..][..tiles.row_len];
                *d_row = bt([
                    load(row, e, lanes),
                    load(row, half + e, lanes),
                    load(row, e + 1, lanes),
                    load(row, half + e + 1, lanes),
                ]);
            }
            // Then along the columns of the row-transformed patch.
            // Column j of every row of `d`: a transposition, clearer with the index.
            #[allow(clippy::needless_range_loop)]
            for j in 0..4 {
                let column = bt([d[0][j], d[1][j], d[2][j], d[3][j]]);
                for (i, values) in column.iter().enumerate() {
                    store(
                        v,
                        (i * 4 + j) * point_stride(channels, stride) + c * stride + at + start,
                        values,
                        lanes,
                    );
                }
            }
        }
    }
}

/// Filter `k`'s outputs for the tiles of `run` (block columns `at..at + len` of the products),
/// bias and epilogue applied, written into its output map.
///
/// # Safety
/// As [`Transforms::output`].
#[inline(always)]
unsafe fn output_transform(
    g: &ConvGeometry,
    products: Products<'_>,
    k: usize,
    run: Run,
    bias: f32,
    epilogue: Epilogue,
    plane: *mut f32,
) {
    let (Products { data: m, rows: c_out, stride }, Run { ty, tx, len: run, at: at_col }) = (products, run);
    let [_, oh, ow] = g.output;
    for start in (0..run).step_by(LANES) {
        let lanes = LANES.min(run - start);
        let first = at_col + start;
        let point = |xi: usize| load(m, xi * point_stride(c_out, stride) + k * stride + first, lanes);
        // Along the rows of the 4×4 products (ξ = 4i + j), then along the columns.
        let mut cols = [[[0.0f32; LANES]; 2]; 4];
        for (j, col) in cols.iter_mut().enumerate() {
            *col = at([point(j), point(4 + j), point(8 + j), point(12 + j)]);
        }
        let first_col = 2 * (tx + start);
        let width = (2 * lanes).min(ow - first_col);
        for (a, out_row) in (2 * ty..(2 * ty + 2).min(oh)).enumerate() {
            let [y0, y1] = at([cols[0][a], cols[1][a], cols[2][a], cols[3][a]]);
            let mut pairs = [0.0f32; 2 * LANES];
            for l in 0..LANES {
                pairs[2 * l] = epilogue.apply(y0[l] + bias);
                pairs[2 * l + 1] = epilogue.apply(y1[l] + bias);
            }
            // SAFETY: (out_row, first_col..first_col + width) lies inside the map (out_row < oh,
            // first_col + width ≤ ow), in this caller's tiles.
            unsafe {
                let dst = plane.add(out_row * ow + first_col);
                if width == 2 * LANES {
                    dst.cast::<[f32; 2 * LANES]>().write_unaligned(pairs);
                } else {
                    std::ptr::copy_nonoverlapping(pairs.as_ptr(), dst, width);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_transform_matches_the_matrices() {
        let g: [f32; 9] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let gm = [[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]];
        let u = transform_filter(&g);
        for i in 0..4 {
            for j in 0..4 {
                let mut want = 0.0f32;
                for a in 0..3 {
                    for b in 0..3 {
                        want += gm[i][a] * g[a * 3 + b] * gm[j][b];
                    }
                }
                assert!((u[i * 4 + j] - want).abs() < 1e-6, "U[{i}][{j}] = {} vs {want}", u[i * 4 + j]);
            }
        }
    }
}
