//! Max pooling without indices (inference), one axis at a time: first the maximum of each
//! output column's taps within every input row, then, per output row, the maximum of its input
//! rows' maxima.
//!
//! The rule of max pooling, "`>` keeps the first of equal values, a NaN takes over", picks over
//! any sequence the last NaN if there is one and otherwise the first of the largest values.
//! Applied to the row-major window one row at a time and then across the rows in order, it picks
//! the element the one-tap-at-a-time sweep of [`super::fast`] picks, so the result is the
//! reference's bit for bit (±0 and NaN payloads included). A tap in the padding may read −∞
//! instead of being skipped: −∞ is never taken.
//!
//! The gain over the general sweep: each input row's maxima are computed once for all the output
//! rows that read it (3×3 windows at stride 2 share a row, at stride 1 two), every pass reads
//! contiguous memory, and each group of eight outputs is kept in a register across its taps and
//! stored once. A row is copied between −∞ margins (the padding) and, at a stride above 1, split
//! into its stride phases `x[q], x[q+S], …`: the taps of consecutive output columns are then
//! neighbours.

use rayon::prelude::*;

use super::PoolGeometry;
use super::fast::{self, Taps, sliding_taps, sweep_max};
#[cfg(target_arch = "x86_64")]
use crate::simd::LANES;

/// How the maxima over shifted rows are taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Loops the compiler vectorises (four lanes on x86-64 without AVX).
    Portable,
    /// Eight lanes in AVX2 intrinsics.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::isa() >= crate::simd::Isa::Avx2 {
            return Kernel::Avx2;
        }
        Kernel::Portable
    }

    /// `out[c]` ← the maximum of `base[o + c]` over the offsets `o`, in their order.
    #[inline(always)]
    fn max_of_shifted(self, base: &[f32], offsets: &[usize], out: &mut [f32]) {
        let n = out.len();
        assert!(offsets.iter().all(|&o| o + n <= base.len()), "a shifted row ends past its buffer");
        match self {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `detect` saw AVX2; every shifted row lies inside `base` (asserted).
            Kernel::Avx2 if n >= LANES => unsafe { max_of_shifted_avx2(base, offsets, out) },
            _ => {
                out.fill(f32::NEG_INFINITY);
                for &o in offsets {
                    sweep_max::<false>(out, &mut [], &base[o..o + n], 1, 0);
                }
            }
        }
    }
}

/// Whether the width's taps are few enough to visit every one of them, padding included. A
/// kernel far wider than the row (valid with padding ⌊F/2⌋) goes to the general sweep, which
/// visits only the taps that land in the input.
pub(crate) fn suits(g: &PoolGeometry) -> bool {
    let reach = g.dilation[2] * (g.kernel[2] - 1) + 1;
    reach <= 4 * g.input[2] + 64
}

/// Everything about the width that does not depend on the data.
struct Columns {
    /// Padding on the left: where the row starts in its −∞-margined copy.
    left: usize,
    /// Length of the margined copy: the input with its padding, and as far as the last window
    /// reaches (ceil mode).
    len: usize,
    /// Where each width tap of output column 0 reads in the buffer the taps read (the margined
    /// row at stride 1, its stride phases above).
    offsets: Vec<usize>,
    /// Where phase `q` starts in the phase buffer (empty at stride 1).
    phase_starts: Vec<usize>,
}

impl Columns {
    fn new(g: &PoolGeometry) -> Self {
        let (iw, ow, kw, sw, dw, left) =
            (g.input[2], g.output[2], g.kernel[2], g.stride[2], g.dilation[2], g.padding[2]);
        let len = (left + iw).max(ow.saturating_sub(1) * sw + dw * (kw - 1) + 1);
        let phase_starts: Vec<usize> = if sw > 1 {
            (0..sw.min(len))
                .scan(0, |at, q| Some(std::mem::replace(at, *at + (len - q).div_ceil(sw))))
                .collect()
        } else {
            Vec::new()
        };
        // Column c, tap f reads margined element c·S + f·D: element c + ⌊f·D/S⌋ of phase f·D mod S.
        let offsets =
            (0..kw).map(|f| if sw == 1 { f * dw } else { phase_starts[f * dw % sw] + f * dw / sw }).collect();
        Columns { left, len, offsets, phase_starts }
    }
}

/// A task's buffers, reused from plane to plane.
struct Scratch {
    /// One input row between −∞ margins (the margins are written once).
    margined: Vec<f32>,
    /// The margined row split into stride phases.
    phases: Vec<f32>,
    /// The width maxima of every input row of the plane.
    maxima: Vec<f32>,
    /// Where the input rows of one output row start in `maxima`.
    rows: Vec<usize>,
}

pub(crate) fn max_pool(g: &PoolGeometry, x: &[f32], kernel: Kernel) -> Vec<f32> {
    let (input_volume, output_volume) = (g.input_volume(), g.output_volume());
    let mut y = vec![0.0f32; g.planes() * output_volume];
    if output_volume == 0 {
        return y;
    }
    if !suits(g) {
        return fast::max_pool_general(g, x);
    }
    let plan = Plan { g, columns: Columns::new(g), depth: sliding_taps(g, 0), height: sliding_taps(g, 1) };
    let scratch = || Scratch {
        margined: vec![f32::NEG_INFINITY; plan.columns.len],
        phases: vec![0.0; if g.stride[2] > 1 { plan.columns.len } else { 0 }],
        maxima: vec![0.0; g.input[0] * g.input[1] * g.output[2]],
        rows: Vec::new(),
    };
    y.par_chunks_mut(output_volume).zip(x.par_chunks(input_volume)).for_each_init(
        scratch,
        |scratch, (y, x)| {
            match kernel {
                // SAFETY: `detect` saw AVX2.
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2 => unsafe { plane_avx2(&plan, x, y, scratch) },
                Kernel::Portable => plane(&plan, x, y, scratch, kernel),
            }
        },
    );
    y
}

/// What every plane of one call shares: the geometry, the width's taps, and the clipped depth
/// and height taps of each output position.
struct Plan<'g> {
    g: &'g PoolGeometry,
    columns: Columns,
    depth: Vec<Taps>,
    height: Vec<Taps>,
}

/// [`plane`] compiled with AVX2, so that the row kernel and the phase split inline into it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn plane_avx2(plan: &Plan<'_>, x: &[f32], y: &mut [f32], scratch: &mut Scratch) {
    plane(plan, x, y, scratch, Kernel::Avx2)
}

/// One `(n, c)` plane: the width pass into `scratch.maxima`, then the depth and height pass.
#[inline(always)]
fn plane(plan: &Plan<'_>, x: &[f32], y: &mut [f32], scratch: &mut Scratch, kernel: Kernel) {
    let Plan { g, columns, depth, height } = plan;
    let [_, ih, iw] = g.input;
    let [dd, dh, _] = g.dilation;
    let (ow, sw) = (g.output[2], g.stride[2]);
    let Scratch { margined, phases, maxima, rows } = scratch;
    for (row, maxima) in x.chunks_exact(iw).zip(maxima.chunks_exact_mut(ow)) {
        margined[columns.left..columns.left + iw].copy_from_slice(row);
        let taps: &[f32] = match sw {
            1 => margined,
            2 => {
                let (even, odd) = phases.split_at_mut(columns.len.div_ceil(2));
                split_pairs(margined, even, odd);
                phases
            }
            _ => {
                for (q, &start) in columns.phase_starts.iter().enumerate() {
                    for (slot, &v) in phases[start..].iter_mut().zip(margined[q..].iter().step_by(sw)) {
                        *slot = v;
                    }
                }
                phases
            }
        };
        kernel.max_of_shifted(taps, &columns.offsets, maxima);
    }
    let mut outputs = y.chunks_exact_mut(ow);
    for tz in depth {
        for tr in height {
            rows.clear();
            for z in (tz.first..).step_by(dd).take(tz.count) {
                rows.extend((tr.first..).step_by(dh).take(tr.count).map(|r| (z * ih + r) * ow));
            }
            let out = outputs.next().expect("one output row per (depth, height) position");
            kernel.max_of_shifted(maxima, rows, out);
        }
    }
}

/// Even elements of `row` into `even`, odd ones into `odd`. Pairs at a literal step vectorise
/// (as shuffles); a runtime step does not.
#[inline(always)]
fn split_pairs(row: &[f32], even: &mut [f32], odd: &mut [f32]) {
    for ((pair, e), o) in row.chunks_exact(2).zip(even.iter_mut()).zip(odd.iter_mut()) {
        *e = pair[0];
        *o = pair[1];
    }
    if row.len() % 2 == 1 {
        even[row.len() / 2] = row[row.len() - 1];
    }
}

/// [`Kernel::max_of_shifted`] eight outputs at a time, each group kept in a register across the
/// offsets and stored once, four groups side by side while they last (one group's chain of
/// max-then-blend waits on itself tap after tap). The last partial group is recomputed as the
/// whole group ending at `n` (the same values again), as masked stores are slow on AMD's cores.
///
/// # Safety
/// The CPU has AVX2, `out.len() ≥ 8`, and `o + out.len() ≤ base.len()` for every offset `o`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn max_of_shifted_avx2(base: &[f32], offsets: &[usize], out: &mut [f32]) {
    use std::arch::x86_64::*;
    const GROUPS: usize = 4;
    let n = out.len();
    let (b, o) = (base.as_ptr(), out.as_mut_ptr());
    // The rule of `sweep_max`: `maxps(v, best)` is `v > best ? v : best` (false when either is
    // NaN), then a NaN `v` takes over. (A blend of `best` and `v` on `v > best | v ≠ v` computes
    // the same, but where `best` came from memory the compiler made a masked store of it.)
    let pick = |v: __m256, best: __m256| {
        _mm256_blendv_ps(_mm256_max_ps(v, best), v, _mm256_cmp_ps::<_CMP_UNORD_Q>(v, v))
    };
    let mut c = 0;
    while c + GROUPS * LANES <= n {
        let mut best = [_mm256_set1_ps(f32::NEG_INFINITY); GROUPS];
        for &offset in offsets {
            for (g, best) in best.iter_mut().enumerate() {
                // SAFETY: `c + 32 ≤ n` and `offset + n ≤ base.len()` (the caller's).
                *best = pick(unsafe { _mm256_loadu_ps(b.add(offset + c + g * LANES)) }, *best);
            }
        }
        for (g, best) in best.into_iter().enumerate() {
            // SAFETY: `c + 32 ≤ n`.
            unsafe { _mm256_storeu_ps(o.add(c + g * LANES), best) };
        }
        c += GROUPS * LANES;
    }
    while c < n {
        c = c.min(n - LANES);
        let mut best = _mm256_set1_ps(f32::NEG_INFINITY);
        for &offset in offsets {
            // SAFETY: `c + 8 ≤ n` and `offset + n ≤ base.len()` (the caller's).
            best = pick(unsafe { _mm256_loadu_ps(b.add(offset + c)) }, best);
        }
        // SAFETY: `c + 8 ≤ n`.
        unsafe { _mm256_storeu_ps(o.add(c), best) };
        c += LANES;
    }
}
