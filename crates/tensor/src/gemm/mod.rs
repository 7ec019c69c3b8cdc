//! Matrix products: the only place stride multiplies matrices.
//!
//! - [`gemm`]: general strided products through the `gemm` crate (its `x86-v4` feature enables
//!   AVX-512 kernels, picked at run time with AVX2 and portable fallbacks); used by `matmul`.
//! - [`rows`]: a few rows times a transposed weight matrix (a fully connected layer at batch 1
//!   to 4), which is bound by memory: dot products streaming the weights once, unpacked.
//! - [`packed`]: stride's own register-blocked GEMM for convolution, with the filters packed once
//!   and the input taps read in place; on convolution shapes it reaches about 96% of a core's FMA
//!   peak where the crate reaches 55–75% (BENCHMARKS.md).
//!
//! A faster kernel, or another device, replaces these two entry points.

pub(crate) mod packed;
pub(crate) mod rows;

/// A read-only matrix view: element `(r, c)` is at `ptr + r·row_stride + c·col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub data: &'a [f32],
    pub row_stride: usize,
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        MatRef { data, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major `rows × cols` matrix stored in `data`.
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        MatRef { data, row_stride: 1, col_stride: cols }
    }

    fn spans(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// Whether the product may use several threads of the current rayon pool.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Threads {
    One,
    Pool,
}

/// `dst[m×n] (+)= lhs[m×k] · rhs[k×n]`, `dst` row-major with row stride `dst_row_stride`.
///
/// With `accumulate`, the product is added to what `dst` holds (bias, earlier partial sums).
/// The views are checked to lie inside their slices, so the unsafe call below cannot read or
/// write out of bounds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_row_stride: usize,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    accumulate: bool,
    threads: Threads,
) {
    assert!(lhs.spans(m, k) && rhs.spans(k, n), "gemm operand views exceed their buffers");
    assert!(
        m == 0 || n == 0 || (m - 1) * dst_row_stride + n <= dst.len(),
        "gemm destination view exceeds its buffer"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_row_stride..r * dst_row_stride + n].fill(0.0);
            }
        }
        return;
    }
    let parallelism = match threads {
        Threads::One => gemm::Parallelism::None,
        Threads::Pool => match rayon::current_num_threads() {
            0 | 1 => gemm::Parallelism::None,
            n => gemm::Parallelism::Rayon(n),
        },
    };
    // SAFETY: the asserts above keep every element of each view inside its slice; `dst` is
    // borrowed mutably, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_row_stride as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr(),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_product_and_accumulates() {
        let (m, n, k) = (7, 13, 29);
        let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| ((i * 3) % 13) as f32 - 6.0).collect();
        let expected = naive(m, n, k, &a, &b);
        let mut c = vec![1.0; m * n];
        gemm(m, n, k, &mut c, n, MatRef::row_major(&a, k), MatRef::row_major(&b, n), false, Threads::Pool);
        assert_eq!(c, expected);
        gemm(m, n, k, &mut c, n, MatRef::row_major(&a, k), MatRef::row_major(&b, n), true, Threads::One);
        let doubled: Vec<f32> = expected.iter().map(|v| 2.0 * v).collect();
        assert_eq!(c, doubled);
    }

    #[test]
    fn transposed_views() {
        let (m, n, k) = (3, 4, 5);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32).collect();
        // a stored transposed (k × m), b stored transposed (n × k).
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut c = vec![0.0; m * n];
        gemm(m, n, k, &mut c, n, MatRef::transposed(&at, m), MatRef::transposed(&bt, k), false, Threads::One);
        assert_eq!(c, naive(m, n, k, &a, &b));
    }
}
