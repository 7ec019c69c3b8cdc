//! `y [M, N] = x [M, K] · Wᵀ` for a few rows `x` and a row-major `W [N, K]`: a fully connected
//! layer at batch 1 to 4 (AlexNet's and VGG's classifiers at inference).
//!
//! Such a product reads each weight once and does one multiply-add with it per row of `x`: it is
//! bound by memory, not arithmetic (AlexNet's first classifier layer streams 151 MB for 38 M
//! multiply-adds). The general GEMM packs `W` first, which doubles the traffic; here every
//! output is a dot product of a weight row with an `x` row, four weight rows at a time so that
//! each load of `x` serves four products, with the weight rows streamed straight from memory.
//!
//! Each output is summed by one task in a fixed order (eight lanes, then the lanes in a fixed
//! tree, then the tail), so the result does not depend on the thread count.

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
use crate::simd::LANES;

/// At most this many rows of `x` take this path; beyond it the GEMM's reuse of each weight
/// across rows wins.
pub(crate) const MAX_ROWS: usize = 4;

/// Weight rows per task: enough work to be worth a task (a few hundred KiB of weights at
/// AlexNet's K), few enough that a 1000-class layer still splits across the cores.
const ROWS_PER_TASK: usize = 32;

/// How the dot products are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Plain loops (the compiler vectorises them without FMA).
    Portable,
    /// AVX2 with fused multiply-adds.
    #[cfg(target_arch = "x86_64")]
    Avx2Fma,
}

impl Kernel {
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if crate::simd::isa() >= crate::simd::Isa::Avx2 {
            return Kernel::Avx2Fma;
        }
        Kernel::Portable
    }
}

/// `y [m, n] = x [m, k] · wᵀ` with `w [n, k]` row-major, `m ≤ MAX_ROWS`.
pub(crate) fn product_t(m: usize, n: usize, k: usize, x: &[f32], w: &[f32], y: &mut [f32], kernel: Kernel) {
    assert!(m <= MAX_ROWS, "rows::product_t takes at most {MAX_ROWS} rows, got {m}");
    assert!(
        x.len() >= m * k && w.len() >= n * k && y.len() >= m * n,
        "rows::product_t operands are too short"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        y[..m * n].fill(0.0);
        return;
    }
    // Tasks own contiguous outputs of `yᵀ [n, m]`; transposed into `y` at the end (m·n values).
    let mut yt = vec![0.0f32; n * m];
    yt.par_chunks_mut(ROWS_PER_TASK * m).enumerate().for_each(|(task, yt)| {
        let first = task * ROWS_PER_TASK;
        let rows = yt.len() / m;
        let w = &w[first * k..(first + rows) * k];
        match kernel {
            // SAFETY: `detect` saw AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => unsafe { dots_avx2(m, k, x, w, yt) },
            Kernel::Portable => dots_portable(m, k, x, w, yt),
        }
    });
    for (j, outputs) in yt.chunks_exact(m).enumerate() {
        for (r, &v) in outputs.iter().enumerate() {
            y[r * n + j] = v;
        }
    }
}

/// `yt[j·m + r] = x_r · w_j` for the weight rows of one task.
fn dots_portable(m: usize, k: usize, x: &[f32], w: &[f32], yt: &mut [f32]) {
    for (row, outputs) in w.chunks_exact(k).zip(yt.chunks_exact_mut(m)) {
        for (r, out) in outputs.iter_mut().enumerate() {
            *out = row.iter().zip(&x[r * k..(r + 1) * k]).map(|(a, b)| a * b).sum();
        }
    }
}

/// [`dots_portable`] in AVX2: four weight rows against one `x` row at a time, eight lanes each.
///
/// # Safety
/// The CPU has AVX2 and FMA; `x` holds `m` rows of `k`, `w` whole rows of `k`, `yt` `m` outputs
/// per row of `w`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dots_avx2(m: usize, k: usize, x: &[f32], w: &[f32], yt: &mut [f32]) {
    use std::arch::x86_64::*;
    const BLOCK: usize = 4;
    let rows = w.len() / k;
    assert!(x.len() >= m * k && yt.len() >= rows * m);
    let whole = k / LANES * LANES;
    // Lane sums in a fixed order: (0+4, 1+5, 2+6, 3+7), then pairs, then the last two.
    let reduce = |v: __m256| {
        let quad = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps::<0b01>(pair, pair)))
    };
    let mut j = 0;
    while j < rows {
        let block = BLOCK.min(rows - j);
        for r in 0..m {
            let xr = &x[r * k..(r + 1) * k];
            let mut acc = [_mm256_setzero_ps(); BLOCK];
            let mut q = 0;
            while q < whole {
                // SAFETY: `q + 8 ≤ k`; weight row `j + b < rows` has `k` elements.
                let xv = unsafe { _mm256_loadu_ps(xr.as_ptr().add(q)) };
                for (b, acc) in acc.iter_mut().enumerate().take(block) {
                    let wv = unsafe { _mm256_loadu_ps(w.as_ptr().add((j + b) * k + q)) };
                    *acc = _mm256_fmadd_ps(wv, xv, *acc);
                }
                q += LANES;
            }
            for (b, acc) in acc.iter().enumerate().take(block) {
                let row = &w[(j + b) * k..(j + b + 1) * k];
                let tail: f32 = row[whole..].iter().zip(&xr[whole..]).map(|(a, b)| a * b).sum();
                yt[(j + b) * m + r] = reduce(*acc) + tail;
            }
        }
        j += block;
    }
}
