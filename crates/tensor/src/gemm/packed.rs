//! A GEMM for convolution: `C[m × n] += A[m × k] · B[k × n]`, with `A` (the filters) packed
//! once per call and `B` read in place through a table of row offsets: row `r` of `B` is
//! `data[offsets[r]..][..n]`. For a stride-1 convolution the rows are the zero-padded image
//! itself, shifted by each tap's offset (no im2col at all); for a strided one they are the rows
//! of an im2col tile.
//!
//! Why not the `gemm` crate here: on this project's machines it reaches about 55% of the FMA
//! peak on convolution-shaped products (few output channels, a few hundred positions), and
//! an im2col buffer would be packed twice; this 6×16 register-blocked kernel with the taps
//! packed once reaches more (BENCHMARKS.md has the side-by-side figures).
//!
//! Layouts (all k-major inside a block, so the micro-kernel streams both operands):
//! - `A`: for each block of `KC` taps, for each block of `MR` rows: `[kc × MR]`, rows past `m`
//!   repeating row `m − 1` (their results are computed and never stored);
//! - `B`: any rows of at least `n` rounded up to `NR` readable floats (the extra columns' results
//!   are computed and never stored).
//!
//! Blocking: a `KC × NR` strip of `B` (16 KiB, at a constant stride the prefetchers follow) stays
//! in L1 while `MC / MR` row blocks of `A` (`MC × KC`, 96 KiB) stream from L2 against it. The sum over `k` runs in the same order
//! whatever the threading, so results do not depend on how the caller splits the work.

use std::ops::Range;

use rayon::prelude::*;

/// Rows of `C` per micro-kernel call.
pub(crate) const MR: usize = 6;
/// Columns of `C` per micro-kernel call: two 8-float AVX registers.
pub(crate) const NR: usize = 16;
/// Taps per block of the reduction.
const KC: usize = 256;
/// Rows of `A` kept in L2 while a strip of `B` sits in L1.
const MC: usize = 96;

/// `A[m × k]`, packed for the micro-kernel.
pub(crate) struct PackedA {
    data: Vec<f32>,
    m: usize,
    k: usize,
}

impl PackedA {
    /// Packs the row-major `a[m × k]`, in parallel: for the large layers (512 filters of
    /// 512×3×3 taps) packing is a sizeable share of a batch-1 call.
    pub fn new(a: &[f32], m: usize, k: usize) -> Self {
        assert!(a.len() >= m * k, "PackedA: {} values for a {m} × {k} matrix", a.len());
        let starts: Vec<usize> = (0..m).map(|r| r * k).collect();
        let mut data = vec![0.0f32; m.div_ceil(MR) * MR * k];
        pack(a, &starts, k, &mut data, true);
        PackedA { data, m, k }
    }

    /// Number of `MR`-row blocks.
    pub fn row_blocks(&self) -> usize {
        self.m.div_ceil(MR)
    }
}

/// The `A` operand of [`gemm_packed`]: its shape, and for each block of the reduction and of
/// `MR` rows, where the micro-kernel reads it.
///
/// # Safety
/// [`LeftOperand::block`] must return a block whose `at(p, r)` is readable for every `p < kc`
/// and `r < MR`: the micro-kernels read it unchecked.
pub(crate) unsafe trait LeftOperand {
    type Block: BlockTaps;
    /// Rows (`m`).
    fn rows(&self) -> usize;
    /// Length of the reduction (`k`).
    fn depth(&self) -> usize;
    /// Taps `k0..k0 + kc` of rows `block·MR..`; rows past `m` repeat row `m − 1`.
    fn block(&self, k0: usize, kc: usize, block: usize) -> Self::Block;
}

/// Where a micro-kernel finds tap `p` of row `r` of its block of `A`.
pub(crate) trait BlockTaps: Copy {
    /// # Safety
    /// `p` below the block's `kc`, `r < MR`.
    unsafe fn at(self, p: usize, r: usize) -> *const f32;
}

/// A block packed as `[kc × MR]`: one sequential stream.
#[derive(Clone, Copy)]
pub(crate) struct PackedBlock(*const f32);

impl BlockTaps for PackedBlock {
    #[inline(always)]
    unsafe fn at(self, p: usize, r: usize) -> *const f32 {
        // SAFETY: the block holds kc·MR values and p < kc, r < MR (the caller's guarantee).
        unsafe { self.0.add(p * MR + r) }
    }
}

// SAFETY: the block is a checked slice of kc·MR packed values.
unsafe impl LeftOperand for PackedA {
    type Block = PackedBlock;

    fn rows(&self) -> usize {
        self.m
    }

    fn depth(&self) -> usize {
        self.k
    }

    fn block(&self, k0: usize, kc: usize, block: usize) -> PackedBlock {
        let start = k0 * self.row_blocks() * MR + block * MR * kc;
        PackedBlock(self.data[start..start + kc * MR].as_ptr())
    }
}

/// `A[m × k]` read where it lies, unpacked: row `r` is `data[starts[r]..][..k]`. For an operand
/// used once, such as the taps of a stride-1 weight gradient (the zero-padded image, shifted by
/// each tap's offset), packing it first cost as much as the product itself: a block's six rows
/// are six nearby streams of the same image, which the caches serve as well as one.
#[derive(Clone, Copy)]
pub(crate) struct RowsA<'a> {
    data: &'a [f32],
    starts: &'a [usize],
    k: usize,
}

impl<'a> RowsA<'a> {
    pub fn new(data: &'a [f32], starts: &'a [usize], k: usize) -> Self {
        let reach = starts.iter().max().map_or(0, |&s| s + k);
        assert!(reach <= data.len(), "rows of A reach {reach} but the buffer holds {}", data.len());
        RowsA { data, starts, k }
    }

    /// Number of `MR`-row blocks.
    pub fn row_blocks(&self) -> usize {
        self.starts.len().div_ceil(MR)
    }
}

/// A block of [`RowsA`]: one pointer per row, at the block's first tap.
#[derive(Clone, Copy)]
pub(crate) struct RowBlock([*const f32; MR]);

impl BlockTaps for RowBlock {
    #[inline(always)]
    unsafe fn at(self, p: usize, r: usize) -> *const f32 {
        // SAFETY: each row holds the block's kc taps from its pointer on, p < kc, r < MR.
        unsafe { self.0.get_unchecked(r).add(p) }
    }
}

// SAFETY: each row pointer is a checked slice start with at least `k − k0 ≥ kc` values after
// it (`new` checks every row's reach, `block` that k0 + kc ≤ k).
unsafe impl LeftOperand for RowsA<'_> {
    type Block = RowBlock;

    fn rows(&self) -> usize {
        self.starts.len()
    }

    fn depth(&self) -> usize {
        self.k
    }

    fn block(&self, k0: usize, kc: usize, block: usize) -> RowBlock {
        let rows = MR.min(self.starts.len() - block * MR);
        assert!(k0 + kc <= self.k);
        RowBlock(std::array::from_fn(|r| {
            self.data[self.starts[block * MR + r.min(rows - 1)] + k0..].as_ptr()
        }))
    }
}

/// Writes `A` (row `r` = `a[starts[r]..][..k]`) into `data` in the packed layout. Rows past
/// `m` in the last block repeat row `m − 1`: their results are computed and never stored.
fn pack(a: &[f32], starts: &[usize], k: usize, data: &mut [f32], parallel: bool) {
    let m = starts.len();
    let blocks = m.div_ceil(MR);
    let mut rest = data;
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let (panel, tail) = rest.split_at_mut(blocks * MR * kc);
        rest = tail;
        let pack_block = |(block, chunk): (usize, &mut [f32])| {
            let rows = MR.min(m - block * MR);
            // Read the block's rows side by side and write the panel in order: one
            // sequential write stream instead of six strided ones.
            let row_starts: [usize; MR] = std::array::from_fn(|r| starts[block * MR + r.min(rows - 1)] + k0);
            for (p, column) in chunk.chunks_exact_mut(MR).enumerate() {
                for (v, &start) in column.iter_mut().zip(&row_starts) {
                    *v = a[start + p];
                }
            }
        };
        if parallel {
            panel.par_chunks_mut(MR * kc).enumerate().for_each(pack_block);
        } else {
            panel.chunks_mut(MR * kc).enumerate().for_each(pack_block);
        }
    }
}

/// The row stride of an im2col tile with `n` columns: `n` rounded up to whole strips of `NR`.
pub(crate) fn b_row_stride(n: usize) -> usize {
    n.div_ceil(NR) * NR
}

/// `B[k × n]` as rows inside one buffer: element `(r, c)` is `data[offsets[r] + c]`.
#[derive(Clone, Copy)]
pub(crate) struct RowsB<'a> {
    pub data: &'a [f32],
    pub offsets: &'a [usize],
}

type MicroKernel<A> = unsafe fn(usize, A, *const f32, &[usize], *mut f32, usize, usize, usize, bool);

/// The micro-kernels one product uses: `narrow` for `MR × NR` blocks, and where the CPU has
/// registers twice as wide, `wide` for `MR × 2·NR` blocks over two neighbouring strips. Every
/// kernel sums the taps of each element in the same order with fused multiply-adds, so all of
/// them give the same bits.
#[derive(Clone, Copy)]
pub(crate) struct Kernels<A> {
    narrow: MicroKernel<A>,
    wide: Option<MicroKernel<A>>,
}

impl<A: BlockTaps> Kernels<A> {
    /// The widest kernels [`crate::simd::isa`] allows.
    pub fn detect() -> Self {
        Self::for_isa(crate::simd::isa())
    }

    pub fn portable() -> Self {
        Kernels { narrow: kernel_portable::<A>, wide: None }
    }

    /// The kernels of `isa`, or of the widest set below it that this build has kernels for.
    /// The caller must have checked that the CPU runs `isa`.
    fn for_isa(isa: crate::simd::Isa) -> Self {
        use crate::simd::Isa;
        #[cfg(target_arch = "x86_64")]
        match isa {
            Isa::Avx512 => {
                return Kernels { narrow: x86::kernel_avx2::<A>, wide: Some(x86::kernel_avx512::<A>) };
            }
            Isa::Avx2 => return Kernels { narrow: x86::kernel_avx2::<A>, wide: None },
            Isa::Portable => {}
        }
        let _ = isa;
        Self::portable()
    }
}

/// `C[rows of blocks × n] += A · B` (`C = A · B` with `overwrite`: what `C` held before is
/// neither read nor kept, so it need not be zeroed), `C` row-major with row stride
/// `c_row_stride`, pointing at element (0, 0) of the whole `C` (row `block · MR` is written for
/// each block in `blocks`). `portable` forces the portable micro-kernel (for tests).
///
/// # Safety
/// `c` must be valid for reads and writes of rows `blocks.start·MR .. min(blocks.end·MR, m)`,
/// columns `0..n`, and no one else may touch those elements during the call.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_packed<L: LeftOperand>(
    a: &L,
    b: RowsB<'_>,
    n: usize,
    blocks: Range<usize>,
    c: *mut f32,
    c_row_stride: usize,
    overwrite: bool,
    portable: bool,
) {
    let kernels = if portable { Kernels::portable() } else { Kernels::detect() };
    // SAFETY: the caller's guarantees, passed on.
    unsafe { gemm_packed_with(kernels, a, b, n, blocks, c, c_row_stride, overwrite) }
}

/// [`gemm_packed`] through the given kernels.
///
/// # Safety
/// As [`gemm_packed`].
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_packed_with<L: LeftOperand>(
    kernels: Kernels<L::Block>,
    a: &L,
    b: RowsB<'_>,
    n: usize,
    blocks: Range<usize>,
    c: *mut f32,
    c_row_stride: usize,
    overwrite: bool,
) {
    let (m, k) = (a.rows(), a.depth());
    assert_eq!(b.offsets.len(), k, "one offset per row of B");
    let reach = b.offsets.iter().max().map_or(0, |&o| o + b_row_stride(n));
    assert!(reach <= b.data.len(), "rows of B reach {reach} but the buffer holds {}", b.data.len());
    assert!(blocks.end <= m.div_ceil(MR), "row blocks out of range");
    let strips = n.div_ceil(NR);
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        let offsets = &b.offsets[k0..k0 + kc];
        // The first block of the reduction overwrites, the later ones add to it.
        let add = !(overwrite && k0 == 0);
        for first in blocks.clone().step_by(MC / MR) {
            let last = (first + MC / MR).min(blocks.end);
            let mut strip = 0;
            while strip < strips {
                // A wide kernel takes two strips when both exist: it then reads no further
                // than the narrow one would (every row holds whole strips, see `b_row_stride`).
                let (kernel, width) = match kernels.wide {
                    Some(wide) if strip + 1 < strips => (wide, 2 * NR),
                    _ => (kernels.narrow, NR),
                };
                let cols = width.min(n - strip * NR);
                // SAFETY: every row read, offset + strip·NR + width ≤ reach ≤ data.len()
                // (asserted).
                let b_strip = unsafe { b.data.as_ptr().add(strip * NR) };
                for block in first..last {
                    let rows = MR.min(m - block * MR);
                    // SAFETY: the block's rows and the strip's columns lie inside the region
                    // the caller guarantees; the kernel touches only `rows × cols` of it.
                    unsafe {
                        kernel(
                            kc,
                            a.block(k0, kc, block),
                            b_strip,
                            offsets,
                            c.add(block * MR * c_row_stride + strip * NR),
                            c_row_stride,
                            rows,
                            cols,
                            add,
                        )
                    };
                }
                strip += width / NR;
            }
        }
    }
}

/// The portable micro-kernel: `C[rows × cols] += A[kc × MR]ᵀ · B[kc × NR]` (`=` unless `add`)
/// with the same accumulation order as the SIMD one.
///
/// # Safety
/// `a.at(p, r)` readable for `p < kc`, `r < MR`; `b + offsets[p]` valid for `NR` reads for
/// every `p < kc`; `c` valid for `rows` rows (stride `c_row_stride`) of `cols` elements.
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_portable<A: BlockTaps>(
    kc: usize,
    a: A,
    b: *const f32,
    offsets: &[usize],
    c: *mut f32,
    c_row_stride: usize,
    rows: usize,
    cols: usize,
    add: bool,
) {
    let mut acc = [[0.0f32; NR]; MR];
    for (p, &offset) in offsets[..kc].iter().enumerate() {
        // SAFETY: the caller guarantees NR readable floats at every row offset.
        let b_row = unsafe { std::slice::from_raw_parts(b.add(offset), NR) };
        for (r, acc_row) in acc.iter_mut().enumerate() {
            // SAFETY: p < kc, r < MR.
            let a_value = unsafe { *a.at(p, r) };
            for (v, &bv) in acc_row.iter_mut().zip(b_row) {
                *v = a_value.mul_add(bv, *v);
            }
        }
    }
    for (r, acc_row) in acc.iter().enumerate().take(rows) {
        for (j, v) in acc_row.iter().enumerate().take(cols) {
            // SAFETY: r < rows and j < cols, inside the caller's region.
            unsafe {
                let at = c.add(r * c_row_stride + j);
                *at = if add { *at + v } else { *v };
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{BlockTaps, MR, NR};

    /// AVX2 + FMA: 6 rows × 16 columns in twelve ymm accumulators; per tap two loads of `B`,
    /// six broadcasts of `A`, twelve FMAs.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `a.at(p, r)` readable for `p < kc`, `r < MR`;
    /// `b + offsets[p]` valid for `NR` reads for every `p < kc`; `c` valid for `rows` rows of `cols` elements.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel_avx2<A: BlockTaps>(
        kc: usize,
        a: A,
        b: *const f32,
        offsets: &[usize],
        c: *mut f32,
        c_row_stride: usize,
        rows: usize,
        cols: usize,
        add: bool,
    ) {
        assert!(offsets.len() >= kc);
        let zero = _mm256_setzero_ps();
        let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (zero, zero, zero, zero, zero, zero);
        let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (zero, zero, zero, zero, zero, zero);
        // One step of the reduction: tap `p` into the twelve accumulators.
        macro_rules! step {
            ($p:expr) => {{
                let p = $p;
                // SAFETY: p < kc; the caller guarantees `a`'s kc taps of MR rows and NR floats at
                // every row offset.
                unsafe {
                    let row = b.add(*offsets.get_unchecked(p));
                    let b0 = _mm256_loadu_ps(row);
                    let b1 = _mm256_loadu_ps(row.add(8));
                    let a0 = _mm256_broadcast_ss(&*a.at(p, 0));
                    c00 = _mm256_fmadd_ps(a0, b0, c00);
                    c01 = _mm256_fmadd_ps(a0, b1, c01);
                    let a1 = _mm256_broadcast_ss(&*a.at(p, 1));
                    c10 = _mm256_fmadd_ps(a1, b0, c10);
                    c11 = _mm256_fmadd_ps(a1, b1, c11);
                    let a2 = _mm256_broadcast_ss(&*a.at(p, 2));
                    c20 = _mm256_fmadd_ps(a2, b0, c20);
                    c21 = _mm256_fmadd_ps(a2, b1, c21);
                    let a3 = _mm256_broadcast_ss(&*a.at(p, 3));
                    c30 = _mm256_fmadd_ps(a3, b0, c30);
                    c31 = _mm256_fmadd_ps(a3, b1, c31);
                    let a4 = _mm256_broadcast_ss(&*a.at(p, 4));
                    c40 = _mm256_fmadd_ps(a4, b0, c40);
                    c41 = _mm256_fmadd_ps(a4, b1, c41);
                    let a5 = _mm256_broadcast_ss(&*a.at(p, 5));
                    c50 = _mm256_fmadd_ps(a5, b0, c50);
                    c51 = _mm256_fmadd_ps(a5, b1, c51);
                }
            }};
        }
        // Four taps per iteration: the loop's own instructions (offset, counter, branch) were a
        // sixth of the instructions the front end had to issue per twelve FMAs. The taps still
        // go in order, so the sums are the same, bit for bit.
        let mut p = 0;
        while p + 4 <= kc {
            step!(p);
            step!(p + 1);
            step!(p + 2);
            step!(p + 3);
            p += 4;
        }
        while p < kc {
            step!(p);
            p += 1;
        }
        let acc = [[c00, c01], [c10, c11], [c20, c21], [c30, c31], [c40, c41], [c50, c51]];
        if rows == MR && cols == NR {
            for (r, [lo, hi]) in acc.iter().enumerate() {
                // SAFETY: a full 6 × 16 block lies inside the caller's region.
                unsafe {
                    let row = c.add(r * c_row_stride);
                    if add {
                        _mm256_storeu_ps(row, _mm256_add_ps(_mm256_loadu_ps(row), *lo));
                        _mm256_storeu_ps(row.add(8), _mm256_add_ps(_mm256_loadu_ps(row.add(8)), *hi));
                    } else {
                        _mm256_storeu_ps(row, *lo);
                        _mm256_storeu_ps(row.add(8), *hi);
                    }
                }
            }
        } else {
            let mut tile = [[0.0f32; NR]; MR];
            for (r, [lo, hi]) in acc.iter().enumerate() {
                // SAFETY: each row of `tile` holds 16 floats.
                unsafe {
                    _mm256_storeu_ps(tile[r].as_mut_ptr(), *lo);
                    _mm256_storeu_ps(tile[r].as_mut_ptr().add(8), *hi);
                }
            }
            for (r, tile_row) in tile.iter().enumerate().take(rows) {
                for (j, v) in tile_row.iter().enumerate().take(cols) {
                    // SAFETY: r < rows and j < cols, inside the caller's region.
                    unsafe {
                        let at = c.add(r * c_row_stride + j);
                        *at = if add { *at + v } else { *v };
                    }
                }
            }
        }
    }

    /// AVX-512: 6 rows × 32 columns (two strips) in twelve zmm accumulators; per tap two loads
    /// of `B`, six broadcasts of `A`, twelve FMAs, as the AVX2 kernel with registers twice as
    /// wide. Each element's taps go in the same order, so the two give the same bits.
    ///
    /// # Safety
    /// The CPU must support AVX-512F; `a.at(p, r)` readable for `p < kc`, `r < MR`;
    /// `b + offsets[p]` valid for `2·NR` reads for every `p < kc`; `c` valid for `rows` rows of `cols ≤ 2·NR` elements.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn kernel_avx512<A: BlockTaps>(
        kc: usize,
        a: A,
        b: *const f32,
        offsets: &[usize],
        c: *mut f32,
        c_row_stride: usize,
        rows: usize,
        cols: usize,
        add: bool,
    ) {
        assert!(offsets.len() >= kc && rows <= MR && cols <= 2 * NR);
        let zero = _mm512_setzero_ps();
        let (mut c00, mut c01, mut c10, mut c11, mut c20, mut c21) = (zero, zero, zero, zero, zero, zero);
        let (mut c30, mut c31, mut c40, mut c41, mut c50, mut c51) = (zero, zero, zero, zero, zero, zero);
        macro_rules! step {
            ($p:expr) => {{
                let p = $p;
                // SAFETY: p < kc; the caller guarantees `a`'s kc taps of MR rows and 2·NR floats
                // at every row offset.
                unsafe {
                    let row = b.add(*offsets.get_unchecked(p));
                    let b0 = _mm512_loadu_ps(row);
                    let b1 = _mm512_loadu_ps(row.add(NR));
                    let a0 = _mm512_set1_ps(*a.at(p, 0));
                    c00 = _mm512_fmadd_ps(a0, b0, c00);
                    c01 = _mm512_fmadd_ps(a0, b1, c01);
                    let a1 = _mm512_set1_ps(*a.at(p, 1));
                    c10 = _mm512_fmadd_ps(a1, b0, c10);
                    c11 = _mm512_fmadd_ps(a1, b1, c11);
                    let a2 = _mm512_set1_ps(*a.at(p, 2));
                    c20 = _mm512_fmadd_ps(a2, b0, c20);
                    c21 = _mm512_fmadd_ps(a2, b1, c21);
                    let a3 = _mm512_set1_ps(*a.at(p, 3));
                    c30 = _mm512_fmadd_ps(a3, b0, c30);
                    c31 = _mm512_fmadd_ps(a3, b1, c31);
                    let a4 = _mm512_set1_ps(*a.at(p, 4));
                    c40 = _mm512_fmadd_ps(a4, b0, c40);
                    c41 = _mm512_fmadd_ps(a4, b1, c41);
                    let a5 = _mm512_set1_ps(*a.at(p, 5));
                    c50 = _mm512_fmadd_ps(a5, b0, c50);
                    c51 = _mm512_fmadd_ps(a5, b1, c51);
                }
            }};
        }
        let mut p = 0;
        while p + 4 <= kc {
            step!(p);
            step!(p + 1);
            step!(p + 2);
            step!(p + 3);
            p += 4;
        }
        while p < kc {
            step!(p);
            p += 1;
        }
        // AVX-512 masked loads and stores are as fast as plain ones (unlike AVX2's
        // `vmaskmovps` on AMD), and a masked-off lane is never touched: one path serves full
        // and partial blocks alike.
        let lane_mask =
            |lanes: usize| -> __mmask16 { if lanes >= NR { 0xFFFF } else { (1u16 << lanes) - 1 } };
        let (lo_mask, hi_mask) = (lane_mask(cols), lane_mask(cols.saturating_sub(NR)));
        let acc = [[c00, c01], [c10, c11], [c20, c21], [c30, c31], [c40, c41], [c50, c51]];
        for (r, [lo, hi]) in acc.iter().enumerate().take(rows) {
            // SAFETY: the masks cover columns 0..cols of row r < rows, inside the caller's region.
            unsafe {
                let row = c.add(r * c_row_stride);
                // Past the region when `cols ≤ NR`, but then the mask is empty.
                let row_hi = row.wrapping_add(NR);
                let (mut lo, mut hi) = (*lo, *hi);
                if add {
                    lo = _mm512_add_ps(_mm512_maskz_loadu_ps(lo_mask, row), lo);
                    hi = _mm512_add_ps(_mm512_maskz_loadu_ps(hi_mask, row_hi), hi);
                }
                _mm512_mask_storeu_ps(row, lo_mask, lo);
                _mm512_mask_storeu_ps(row_hi, hi_mask, hi);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] as f64 * b[p * n + j] as f64).sum();
            }
        }
        c
    }

    fn pack_b(b: &[f32], k: usize, n: usize) -> Vec<f32> {
        let stride = b_row_stride(n);
        let mut padded = vec![0.0; k * stride];
        for row in 0..k {
            padded[row * stride..row * stride + n].copy_from_slice(&b[row * n..(row + 1) * n]);
        }
        padded
    }

    /// Every kernel set this CPU runs, named: portable, AVX2, AVX-512.
    fn kernel_sets<A: BlockTaps>() -> Vec<(crate::simd::Isa, Kernels<A>)> {
        use crate::simd::Isa;
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|&isa| isa <= Isa::detected())
            .map(|isa| (isa, Kernels::for_isa(isa)))
            .collect()
    }

    /// Odd sizes cover partial row blocks, partial strips (alone and after a full one, which
    /// the wide kernel takes as one partial pair) and several KC blocks.
    #[test]
    fn every_kernel_matches_the_naive_product() {
        let sizes = [
            (1, 1, 1),
            (6, 16, 7),
            (7, 17, 300),
            (13, 40, 513),
            (64, 33, 256),
            (5, 3, 2),
            (6, 32, 9),
            (8, 80, 5),
        ];
        for &(m, n, k) in &sizes {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
            let b: Vec<f32> = (0..k * n).map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0).collect();
            let packed_a = PackedA::new(&a, m, k);
            let packed_b = pack_b(&b, k, n);
            let offsets: Vec<usize> = (0..k).map(|r| r * b_row_stride(n)).collect();
            let rows_b = RowsB { data: &packed_b, offsets: &offsets };
            let expected = naive(m, n, k, &a, &b);
            for (isa, kernels) in kernel_sets() {
                for overwrite in [false, true] {
                    // C, with a margin after each row that must stay untouched, starts at 1:
                    // added to, or (overwrite) replaced, whatever it held.
                    let c_row_stride = n + 3;
                    let mut c = vec![1.0f32; m * c_row_stride];
                    unsafe {
                        gemm_packed_with(
                            kernels,
                            &packed_a,
                            rows_b,
                            n,
                            0..packed_a.row_blocks(),
                            c.as_mut_ptr(),
                            c_row_stride,
                            overwrite,
                        )
                    };
                    let before = if overwrite { 0.0 } else { 1.0 };
                    for (i, got) in c.iter().enumerate() {
                        let (row, col) = (i / c_row_stride, i % c_row_stride);
                        if col >= n {
                            assert_eq!(*got, 1.0, "{isa:?} {m}×{n}×{k} wrote past column {n} of row {row}");
                            continue;
                        }
                        let want = expected[row * n + col];
                        let tolerance = 1e-5 * (k as f64 + 1.0);
                        assert!(
                            ((*got as f64) - before - want).abs() <= tolerance,
                            "{isa:?} {m}×{n}×{k} element ({row}, {col}) (overwrite {overwrite}): {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// `A` read in place, rows anywhere in a buffer (overlapping, out of order, a partial last
    /// block, several blocks of the reduction), gives the bits of the same `A` packed.
    #[test]
    fn rows_in_place_give_the_bits_of_packed_rows() {
        for (m, n, k) in [(1, 5, 3), (7, 16, 300), (13, 40, 513), (24, 64, 257)] {
            let data: Vec<f32> = (0..4 * k + 97).map(|i| (i as f32 * 0.29).sin()).collect();
            let starts: Vec<usize> = (0..m).map(|r| (r * 37 + r * r * 5) % (3 * k + 97)).collect();
            let rows_a = RowsA::new(&data, &starts, k);
            let dense: Vec<f32> = starts.iter().flat_map(|&s| data[s..s + k].iter().copied()).collect();
            let packed_a = PackedA::new(&dense, m, k);
            let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.13).cos()).collect();
            let pb = pack_b(&b, k, n);
            let offsets: Vec<usize> = (0..k).map(|r| r * b_row_stride(n)).collect();
            let rb = RowsB { data: &pb, offsets: &offsets };
            for (isa, kernels) in kernel_sets::<PackedBlock>() {
                let mut want = vec![0.5f32; m * n];
                unsafe {
                    gemm_packed_with(
                        kernels,
                        &packed_a,
                        rb,
                        n,
                        0..packed_a.row_blocks(),
                        want.as_mut_ptr(),
                        n,
                        false,
                    )
                };
                let row_kernels = kernel_sets::<RowBlock>().into_iter().find(|(i, _)| *i == isa).unwrap().1;
                let mut got = vec![0.5f32; m * n];
                unsafe {
                    gemm_packed_with(
                        row_kernels,
                        &rows_a,
                        rb,
                        n,
                        0..rows_a.row_blocks(),
                        got.as_mut_ptr(),
                        n,
                        false,
                    )
                };
                assert_eq!(got, want, "{isa:?} {m}×{n}×{k}");
            }
        }
    }

    #[test]
    fn every_kernel_gives_the_same_bits() {
        for (m, n, k) in [(12, 32, 600), (13, 57, 300)] {
            let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
            let (pa, pb) = (PackedA::new(&a, m, k), pack_b(&b, k, n));
            let offsets: Vec<usize> = (0..k).map(|r| r * b_row_stride(n)).collect();
            let rb = RowsB { data: &pb, offsets: &offsets };
            let product = |kernels: Kernels<PackedBlock>| {
                let mut c = vec![0.0f32; m * n];
                unsafe {
                    gemm_packed_with(kernels, &pa, rb, n, 0..pa.row_blocks(), c.as_mut_ptr(), n, false)
                };
                c
            };
            // All use fused multiply-adds in the same order, so they agree to the bit.
            let portable = product(Kernels::portable());
            for (isa, kernels) in kernel_sets() {
                assert_eq!(product(kernels), portable, "{isa:?} against portable, {m}×{n}×{k}");
            }
        }
    }
}
