//! Matrix products, through the crate's one GEMM (`crate::gemm`).
//!
//! ```text
//! a [M, K]    · b [K, N]    = c [M, N]
//! a [B, M, K] · b [B, K, N] = c [B, M, N]    a 2-d operand, or a batch of 1, is shared by all B
//! ```
//!
//! [`matmul_t`] reads either operand transposed where it lies, `a` stored as `[K, M]` and `b` as
//! `[N, K]`, so a linear layer computes `x · Wᵀ` from `W [out, in]` as stored, without
//! materialising the transpose. `c[.., i, j] = Σ_p a[.., i, p] · b[.., p, j]`, accumulated in f32 by
//! the GEMM kernels.
//!
//! A linear layer's product `x · Wᵀ` takes one of three forms by the number of rows of `x`:
//! dot products streaming `W` once (at most `gemm::rows::MAX_ROWS` rows: inference at batch
//! 1–4), `(W · xᵀ)ᵀ` (fewer rows than outputs), or the plain GEMM. Each form's sums do not depend
//! on the thread count, but they are blocked differently, so the last bits of a row's result can
//! differ between batch sizes (as in PyTorch).
//!
//! ```
//! use stride_tensor::{Tensor, ops::matmul::matmul_t};
//! let x = Tensor::new([1, 3], vec![1.0, 2.0, 3.0]).unwrap(); // [batch, in]
//! let w = Tensor::new([2, 3], vec![1.0, 0.0, 0.0, 0.0, 1.0, 1.0]).unwrap(); // [out, in]
//! assert_eq!(matmul_t(&x, &w, false, true).unwrap().data(), &[1.0, 5.0]);
//! ```

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::gemm::{MatRef, Threads, gemm, rows};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// A checked product: the batch, the matrix sizes, and how far apart consecutive batch entries of
/// each operand lie (0 when shared).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    batch: Option<usize>,
    m: usize,
    k: usize,
    n: usize,
    a_step: usize,
    b_step: usize,
}

impl Plan {
    fn output_shape(&self) -> Shape {
        match self.batch {
            Some(b) => Shape::from([b, self.m, self.n]),
            None => Shape::from([self.m, self.n]),
        }
    }
}

/// How an operand is read, for error messages: `[B, M, K]`, `[K, M] (transposed)`...
fn layout(rank: usize, rows: &str, cols: &str, transposed: bool) -> String {
    let batch = if rank == 3 { "B, " } else { "" };
    if transposed {
        format!("[{batch}{cols}, {rows}] (transposed)")
    } else {
        format!("[{batch}{rows}, {cols}]")
    }
}

fn plan(a: &Shape, b: &Shape, transpose_a: bool, transpose_b: bool) -> Result<Plan> {
    const OP: &str = "matmul";
    let (ra, rb) = (a.rank(), b.rank());
    if !(2..=3).contains(&ra) || !(2..=3).contains(&rb) {
        return Err(Error::shape(
            OP,
            format!("operands must be 2-d [M, K] · [K, N] or 3-d (batched), got shapes {a} and {b}"),
        ));
    }
    let (da, db) = (&a.dims()[ra - 2..], &b.dims()[rb - 2..]);
    let (m, ka) = if transpose_a { (da[1], da[0]) } else { (da[0], da[1]) };
    let (kb, n) = if transpose_b { (db[1], db[0]) } else { (db[0], db[1]) };
    if ka != kb {
        return Err(Error::shape(
            OP,
            format!(
                "shapes {a} and {b} do not fit: inner dimension K is {ka} in a {} but {kb} in b {}",
                layout(ra, "M", "K", transpose_a),
                layout(rb, "K", "N", transpose_b)
            ),
        ));
    }
    let batch_a = (ra == 3).then(|| a.dims()[0]);
    let batch_b = (rb == 3).then(|| b.dims()[0]);
    let batch = match (batch_a, batch_b) {
        (None, None) => None,
        (Some(x), None) | (None, Some(x)) => Some(x),
        (Some(x), Some(y)) if x == y || y == 1 => Some(x),
        (Some(1), Some(y)) => Some(y),
        (Some(x), Some(y)) => {
            return Err(Error::shape(
                OP,
                format!("shapes {a} and {b} do not fit: batch sizes {x} and {y} differ and neither is 1"),
            ));
        }
    };
    // Saturating: an empty batch may hold matrices whose size overflows; it is never stepped over.
    let step = |own: Option<usize>, rows: usize, cols: usize| match own {
        Some(size) if size > 1 => rows.saturating_mul(cols),
        _ => 0,
    };
    let p = Plan { batch, m, k: ka, n, a_step: step(batch_a, m, ka), b_step: step(batch_b, ka, n) };
    p.output_shape().checked_numel()?;
    Ok(p)
}

/// The shape of `matmul_t(a, b, transpose_a, transpose_b)`, checked, without computing it.
pub fn matmul_shape(a: &Shape, b: &Shape, transpose_a: bool, transpose_b: bool) -> Result<Shape> {
    Ok(plan(a, b, transpose_a, transpose_b)?.output_shape())
}

/// `a · b` for `[M, K] · [K, N]` or batched `[B, M, K] · [B, K, N]` (see the module docs).
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    matmul_t(a, b, false, false)
}

/// `op(a) · op(b)` where `op` transposes the last two axes of an operand whose flag is set; the
/// transpose is read in place, never copied.
pub fn matmul_t(a: &Tensor, b: &Tensor, transpose_a: bool, transpose_b: bool) -> Result<Tensor> {
    let p = plan(a.shape(), b.shape(), transpose_a, transpose_b)?;
    let shape = p.output_shape();
    let mut c = vec![0.0f32; shape.numel()];
    if c.is_empty() {
        return Ok(Tensor::from_parts(shape, c));
    }
    let Plan { m, k, n, .. } = p;
    let batch = p.batch.unwrap_or(1);
    let (xa, xb) = (a.data(), b.data());
    let lhs = |i: usize| {
        let data = &xa[i * p.a_step..][..m * k];
        if transpose_a { MatRef::transposed(data, m) } else { MatRef::row_major(data, k) }
    };
    let rhs = |i: usize| {
        let data = &xb[i * p.b_step..][..k * n];
        if transpose_b { MatRef::transposed(data, k) } else { MatRef::row_major(data, n) }
    };
    let rows = batch * m;
    if !transpose_a && transpose_b && p.b_step == 0 && rows <= rows::MAX_ROWS {
        // A fully connected layer at a small batch: bound by streaming the weights.
        rows::product_t(rows, n, k, &xa[..rows * k], &xb[..n * k], &mut c, rows::Kernel::detect());
    } else if !transpose_a && transpose_b && p.b_step == 0 && rows < n {
        // Fewer rows than weight rows (a classifier at batch 16–64: 16 × 4096): computed as
        // `yᵀ = W · xᵀ`, which hands the GEMM its long side as M; AlexNet's 9216 → 4096 layer at
        // batch 16 took half the time this way (39 → 17–20 ms), at batch 64 as long or less.
        let mut transposed = vec![0.0f32; n * rows];
        gemm(
            n,
            rows,
            k,
            &mut transposed,
            rows,
            MatRef::row_major(&xb[..n * k], k),
            MatRef::transposed(&xa[..rows * k], k),
            false,
            Threads::Pool,
        );
        for (j, column) in transposed.chunks_exact(rows).enumerate() {
            for (r, &v) in column.iter().enumerate() {
                c[r * n + j] = v;
            }
        }
    } else if !transpose_a && p.b_step == 0 {
        // A shared rhs: the batch of row-major lhs matrices is one tall [B·M, K] matrix.
        gemm(
            batch * m,
            n,
            k,
            &mut c,
            n,
            MatRef::row_major(&xa[..batch * m * k], k),
            rhs(0),
            false,
            Threads::Pool,
        );
    } else if batch > 1 && batch >= rayon::current_num_threads() {
        c.par_chunks_mut(m * n)
            .enumerate()
            .for_each(|(i, ci)| gemm(m, n, k, ci, n, lhs(i), rhs(i), false, Threads::One));
    } else {
        for (i, ci) in c.chunks_mut(m * n).enumerate() {
            gemm(m, n, k, ci, n, lhs(i), rhs(i), false, Threads::Pool);
        }
    }
    Ok(Tensor::from_parts(shape, c))
}

impl Tensor {
    /// See [`matmul`].
    pub fn matmul(&self, other: &Tensor) -> Result<Tensor> {
        matmul(self, other)
    }

    /// See [`matmul_t`].
    pub fn matmul_t(&self, other: &Tensor, transpose_self: bool, transpose_other: bool) -> Result<Tensor> {
        matmul_t(self, other, transpose_self, transpose_other)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn t(dims: &[usize], data: &[f32]) -> Tensor {
        Tensor::new(dims, data.to_vec()).unwrap()
    }

    fn message(result: Result<impl std::fmt::Debug>) -> String {
        result.unwrap_err().to_string()
    }

    /// The triple loop that defines the product, with the sum of |terms| of every output, which
    /// bounds its rounding error.
    fn naive(a: &Tensor, b: &Tensor, ta: bool, tb: bool) -> (Vec<f64>, Vec<f64>) {
        let p = plan(a.shape(), b.shape(), ta, tb).unwrap();
        let (mut c, mut magnitude) = (Vec::new(), Vec::new());
        for bi in 0..p.batch.unwrap_or(1) {
            let at = |i: usize, q: usize| {
                let off = bi * p.a_step;
                a.data()[off + if ta { q * p.m + i } else { i * p.k + q }] as f64
            };
            let bt = |q: usize, j: usize| {
                let off = bi * p.b_step;
                b.data()[off + if tb { j * p.k + q } else { q * p.n + j }] as f64
            };
            for i in 0..p.m {
                for j in 0..p.n {
                    c.push((0..p.k).map(|q| at(i, q) * bt(q, j)).sum());
                    magnitude.push((0..p.k).map(|q| (at(i, q) * bt(q, j)).abs()).sum());
                }
            }
        }
        (c, magnitude)
    }

    fn assert_close(c: &Tensor, a: &Tensor, b: &Tensor, ta: bool, tb: bool) {
        let (expected, magnitude) = naive(a, b, ta, tb);
        let k = plan(a.shape(), b.shape(), ta, tb).unwrap().k;
        assert_eq!(c.numel(), expected.len());
        for ((&got, &want), &mag) in c.data().iter().zip(&expected).zip(&magnitude) {
            let tolerance = (k as f64 + 2.0) * f32::EPSILON as f64 * mag + 1e-30;
            assert!((got as f64 - want).abs() <= tolerance, "{got} vs {want} (tolerance {tolerance})");
        }
    }

    #[test]
    fn two_by_two() {
        let a = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let b = t(&[3, 2], &[7.0, 8.0, 9.0, 10.0, 11.0, 12.0]);
        let c = a.matmul(&b).unwrap();
        assert_eq!(c.dims(), &[2, 2]);
        assert_eq!(c.data(), &[58.0, 64.0, 139.0, 154.0]);
        // aᵀ·aᵀ-shaped operands read in place give the same numbers as explicit transposes.
        let at = a.transpose(0, 1).unwrap();
        let bt = b.transpose(0, 1).unwrap();
        assert_eq!(at.matmul_t(&b, true, false).unwrap(), c);
        assert_eq!(a.matmul_t(&bt, false, true).unwrap(), c);
        assert_eq!(at.matmul_t(&bt, true, true).unwrap(), c);
    }

    #[test]
    fn batched_and_shared_operands() {
        let a = Tensor::from_fn([3, 2, 4], |i| (i[0] * 8 + i[1] * 4 + i[2]) as f32 * 0.5 - 3.0).unwrap();
        let b = Tensor::from_fn([4, 5], |i| (i[0] * 5 + i[1]) as f32 * 0.25 - 2.0).unwrap();
        let c = a.matmul(&b).unwrap();
        assert_eq!(c.dims(), &[3, 2, 5]);
        assert_close(&c, &a, &b, false, false);
        let b3 = Tensor::from_fn([3, 4, 5], |i| (i[0] + i[1] * i[2]) as f32 - 4.0).unwrap();
        assert_close(&a.matmul(&b3).unwrap(), &a, &b3, false, false);
        let b1 = b.reshape(&[1, 4, 5]).unwrap();
        assert_eq!(a.matmul(&b1).unwrap(), c);
        let a2 = Tensor::from_fn([2, 4], |i| (i[0] + 3 * i[1]) as f32).unwrap();
        let c = a2.matmul(&b3).unwrap();
        assert_eq!(c.dims(), &[3, 2, 5]);
        assert_close(&c, &a2, &b3, false, false);
        // The transposed lhs with a shared rhs takes the per-batch path.
        assert_close(&a.matmul_t(&b.transpose(0, 1).unwrap(), false, true).unwrap(), &a, &b, false, false);
        let a_t = a.transpose(1, 2).unwrap();
        assert_close(&a_t.matmul_t(&b, true, false).unwrap(), &a_t, &b, true, false);
    }

    #[test]
    fn empty_dimensions() {
        let c = Tensor::zeros([2, 0]).unwrap().matmul(&Tensor::zeros([0, 3]).unwrap()).unwrap();
        assert_eq!(c.dims(), &[2, 3]);
        assert!(c.data().iter().all(|&v| v == 0.0));
        assert_eq!(
            Tensor::zeros([0, 4]).unwrap().matmul(&Tensor::zeros([4, 3]).unwrap()).unwrap().dims(),
            &[0, 3]
        );
        assert_eq!(
            Tensor::zeros([0, 2, 4]).unwrap().matmul(&Tensor::zeros([4, 3]).unwrap()).unwrap().dims(),
            &[0, 2, 3]
        );
        // An empty batch of matrices too large to address is never stepped over.
        let huge = Tensor::zeros([0, usize::MAX, 2]).unwrap();
        assert_eq!(huge.matmul(&Tensor::zeros([2, 3]).unwrap()).unwrap().dims(), &[0, usize::MAX, 3]);
        assert_eq!(huge.matmul_t(&Tensor::zeros([0, 3, 2]).unwrap(), false, true).unwrap().numel(), 0);
    }

    #[test]
    fn shape_errors_name_both_shapes() {
        let a = Tensor::zeros([2, 3]).unwrap();
        let b = Tensor::zeros([4, 5]).unwrap();
        assert_eq!(
            message(a.matmul(&b)),
            "matmul: shapes [2, 3] and [4, 5] do not fit: inner dimension K is 3 in a [M, K] but 4 in b [K, N]"
        );
        assert_eq!(
            message(a.matmul_t(&b, true, true)),
            "matmul: shapes [2, 3] and [4, 5] do not fit: inner dimension K is 2 in a [K, M] (transposed) but \
             5 in b [N, K] (transposed)"
        );
        let a3 = Tensor::zeros([2, 3, 4]).unwrap();
        let b3 = Tensor::zeros([3, 4, 5]).unwrap();
        assert_eq!(
            message(a3.matmul(&b3)),
            "matmul: shapes [2, 3, 4] and [3, 4, 5] do not fit: batch sizes 2 and 3 differ and neither is 1"
        );
        assert_eq!(
            message(a3.matmul(&a3)),
            "matmul: shapes [2, 3, 4] and [2, 3, 4] do not fit: inner dimension K is 4 in a [B, M, K] but 3 in \
             b [B, K, N]"
        );
        assert_eq!(
            message(Tensor::zeros([3]).unwrap().matmul(&a)),
            "matmul: operands must be 2-d [M, K] · [K, N] or 3-d (batched), got shapes [3] and [2, 3]"
        );
        assert!(a.matmul(&Tensor::zeros([1, 2, 3, 4]).unwrap()).is_err());
        assert_eq!(
            matmul_shape(&Shape::from([usize::MAX, 1]), &Shape::from([1, 2]), false, false).unwrap_err().op(),
            "shape"
        );
    }

    #[test]
    fn shapes_without_data() {
        let s = matmul_shape(&Shape::from([8, 3, 5]), &Shape::from([7, 5]), false, true).unwrap();
        assert_eq!(s.dims(), &[8, 3, 7]);
    }

    #[test]
    fn large_products_agree_across_thread_counts() {
        let a = Tensor::from_fn([4, 96, 200], |i| ((i[0] * 7 + i[1] * 3 + i[2]) as f32 * 0.1).sin()).unwrap();
        let b = Tensor::from_fn([200, 130], |i| ((i[0] + 5 * i[1]) as f32 * 0.07).cos()).unwrap();
        let b3 = Tensor::from_fn([4, 130, 200], |i| ((i[0] + i[1] + 2 * i[2]) as f32 * 0.03).cos()).unwrap();
        let run = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| (a.matmul(&b).unwrap(), a.matmul_t(&b3, false, true).unwrap()))
        };
        let (one, two) = (run(1), run(2));
        assert_eq!(one, two);
        assert_close(&one.0, &a, &b, false, false);
        assert_close(&one.1, &a, &b3, false, true);
    }

    /// Operand shapes for every supported combination: 2-d or 3-d, batch shared or not, each
    /// operand stored plain or transposed; sizes include 0.
    fn product_case() -> impl Strategy<Value = (Tensor, Tensor, bool, bool)> {
        (1usize..4, 0usize..7, 0usize..7, 0usize..7, 0usize..4, 0usize..4, any::<bool>(), any::<bool>())
            .prop_flat_map(|(batch, m, k, n, a_kind, b_kind, ta, tb)| {
                // kind 0: 2-d, 1: batch of 1, otherwise the full batch.
                let lead = |kind: usize| match kind {
                    0 => vec![],
                    1 => vec![1],
                    _ => vec![batch],
                };
                let mut da = lead(a_kind);
                da.extend(if ta { [k, m] } else { [m, k] });
                let mut db = lead(b_kind);
                db.extend(if tb { [n, k] } else { [k, n] });
                let (na, nb) = (da.iter().product::<usize>(), db.iter().product::<usize>());
                (
                    prop::collection::vec(-4.0f32..4.0, na)
                        .prop_map(move |v| Tensor::new(da.clone(), v).unwrap()),
                    prop::collection::vec(-4.0f32..4.0, nb)
                        .prop_map(move |v| Tensor::new(db.clone(), v).unwrap()),
                    Just(ta),
                    Just(tb),
                )
            })
    }

    /// A fully connected layer at batch 1–4 (`x [M, K] · Wᵀ`): both dot-product kernels against
    /// the triple loop, and one thread against two bit for bit.
    fn check_rows_product(m: usize, n: usize, k: usize, seed: u64) {
        let value = |i: usize| {
            let h = (i as u64 ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            (h >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        };
        let x = Tensor::new([m, k], (0..m * k).map(value).collect()).unwrap();
        let w = Tensor::new([n, k], (0..n * k).map(|i| value(i + 1_000_003)).collect()).unwrap();
        let pool = |threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for kernel in [rows::Kernel::Portable, rows::Kernel::detect()] {
            let run = |threads| {
                let mut y = vec![0.0; m * n];
                pool(threads).install(|| rows::product_t(m, n, k, x.data(), w.data(), &mut y, kernel));
                y
            };
            let one = run(1);
            assert_eq!(one, run(2), "{kernel:?}: one thread against two");
            assert_close(&Tensor::new([m, n], one).unwrap(), &x, &w, false, true);
        }
        // And through matmul_t, which picks this path for such shapes.
        assert_close(&matmul_t(&x, &w, false, true).unwrap(), &x, &w, false, true);
    }

    #[test]
    fn rows_product_on_a_classifier_layer() {
        // AlexNet's last layer is 4096 → 1000: whole tasks of 32 rows, and blocks of 4 with none left.
        check_rows_product(1, 1000, 4096, 7);
        check_rows_product(3, 37, 203, 8);
    }

    #[test]
    fn fewer_rows_than_weight_rows_go_through_the_transposed_product() {
        // 16 rows against 300 weight rows, 2-d and as a batch of 3-d matrices with a shared rhs.
        let x = Tensor::from_fn([16, 203], |i| ((i[0] * 203 + i[1]) % 17) as f32 * 0.25 - 2.0).unwrap();
        let w = Tensor::from_fn([300, 203], |i| ((i[0] * 7 + i[1] * 3) % 11) as f32 * 0.5 - 2.5).unwrap();
        let pool = |threads| rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        let one = pool(1).install(|| matmul_t(&x, &w, false, true)).unwrap();
        assert_eq!(one.dims(), &[16, 300]);
        assert_close(&one, &x, &w, false, true);
        assert_eq!(pool(2).install(|| matmul_t(&x, &w, false, true)).unwrap(), one);
        let x3 = x.reshape(&[2, 8, 203]).unwrap();
        let batched = matmul_t(&x3, &w, false, true).unwrap();
        assert_eq!(batched.dims(), &[2, 8, 300]);
        assert_close(&batched, &x3, &w, false, true);
    }

    proptest! {
        #[test]
        fn matches_the_triple_loop((a, b, ta, tb) in product_case()) {
            let c = matmul_t(&a, &b, ta, tb).unwrap();
            prop_assert_eq!(c.shape(), &matmul_shape(a.shape(), b.shape(), ta, tb).unwrap());
            assert_close(&c, &a, &b, ta, tb);
        }

        #[test]
        fn rows_product_matches_the_triple_loop(m in 0usize..=4, n in 0usize..80, k in 0usize..50, seed in any::<u64>()) {
            check_rows_product(m, n, k, seed);
        }
    }
}
