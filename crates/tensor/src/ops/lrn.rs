//! Local response normalisation across channels (AlexNet §3.3), with PyTorch's
//! `nn.LocalResponseNorm` semantics.
//!
//! ```text
//! x [N, C, *S]    any number of trailing axes S (at least one): NCW, NCHW, NCDHW...
//! y [N, C, *S]    same shape
//! ```
//!
//! `y[n, c, s] = x[n, c, s] / (k + α/size · Σ_{c' = c − ⌊size/2⌋}^{c + ⌊(size−1)/2⌋} x[n, c', s]²)^β`
//!
//! Channels outside `0..C` count as zeros, and the divisor of the mean is always `size`: PyTorch
//! computes the sum with an average pool over zero-padded channels. AlexNet's `k = 2, n = 5,
//! α = 10⁻⁴, β = 0.75` is `local_response_norm(x, 5, 1e-4, 0.75, 2.0)`.
//!
//! The gradient, with `S[c] = k + α/size · Σ_{c' ∈ window(c)} x[c']²` (all at one `(n, s)`):
//!
//! `dx[j] = dy[j]·S[j]^−β − 2αβ/size · x[j] · Σ_{c : j ∈ window(c)} dy[c]·x[c]·S[c]^(−β−1)`
//!
//! where `j ∈ window(c)` exactly when `c ∈ j − ⌊(size−1)/2⌋ ..= j + ⌊size/2⌋`.
//!
//! [`local_response_norm`] and [`local_response_norm_backward`] are the production paths,
//! parallel over the `(n, c)` planes; [`local_response_norm_reference`] and
//! [`local_response_norm_backward_reference`] hold the plain loops that define them.

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::tensor::Tensor;

const OP: &str = "local_response_norm";

/// Validates the arguments; returns `(N, C, |S|)`, the batch, the channels and the plane size.
fn check(x: &Tensor, size: usize) -> Result<(usize, usize, usize)> {
    if x.rank() < 3 {
        return Err(Error::shape(
            OP,
            format!(
                "input must have at least 3 dimensions laid out as [N, C, *], got shape {} (rank {})",
                x.shape(),
                x.rank()
            ),
        ));
    }
    if size == 0 {
        return Err(Error::invalid(OP, "size must be at least 1, got 0"));
    }
    let dims = x.dims();
    Ok((dims[0], dims[1], dims[2..].iter().product()))
}

/// The channels `c − ⌊size/2⌋ ..= c + ⌊(size−1)/2⌋` clipped to `0..channels`, as a range.
fn window(c: usize, size: usize, channels: usize) -> std::ops::Range<usize> {
    c.saturating_sub(size / 2)..c.saturating_add((size - 1) / 2).saturating_add(1).min(channels)
}

/// Local response normalisation with the fast kernel. See the module docs for the formula.
pub fn local_response_norm(x: &Tensor, size: usize, alpha: f32, beta: f32, k: f32) -> Result<Tensor> {
    let (_, channels, plane) = check(x, size)?;
    let mut y = vec![0.0f32; x.numel()];
    if y.is_empty() {
        return Ok(Tensor::from_parts(x.shape().clone(), y));
    }
    let xs = x.data();
    // Each task owns one output plane and first uses it to accumulate the window's squares, in
    // ascending channel order and in f32, as PyTorch's pooled sum does.
    y.par_chunks_mut(plane).enumerate().for_each(|(nc, y)| {
        let (n, c) = (nc / channels, nc % channels);
        for neighbour in window(c, size, channels) {
            let src = &xs[(n * channels + neighbour) * plane..][..plane];
            for (acc, &v) in y.iter_mut().zip(src) {
                *acc += v * v;
            }
        }
        let src = &xs[nc * plane..][..plane];
        for (out, &v) in y.iter_mut().zip(src) {
            // PyTorch's order: the mean, times α, plus k, to the power β.
            *out = v / (*out / size as f32 * alpha + k).powf(beta);
        }
    });
    Ok(Tensor::from_parts(x.shape().clone(), y))
}

/// The channels `c` whose window contains channel `j`, `j − ⌊(size−1)/2⌋ ..= j + ⌊size/2⌋`
/// clipped to `0..channels`: the transpose of [`window`].
fn reverse_window(j: usize, size: usize, channels: usize) -> std::ops::Range<usize> {
    j.saturating_sub((size - 1) / 2)..j.saturating_add(size / 2).saturating_add(1).min(channels)
}

/// Checks that `dy` has the shape of `x`, which is also the output's.
fn check_grad_output(x: &Tensor, dy: &Tensor) -> Result<()> {
    if dy.dims() != x.dims() {
        return Err(Error::shape(
            BACKWARD_OP,
            format!(
                "grad_output has shape {} but the output for input {} is {}",
                dy.shape(),
                x.shape(),
                x.shape()
            ),
        ));
    }
    Ok(())
}

const BACKWARD_OP: &str = "local_response_norm_backward";

/// The gradient of [`local_response_norm`] with respect to `x`, given `dy`, the gradient with
/// respect to its output (same shape as `x`). See the module docs for the formula.
pub fn local_response_norm_backward(
    x: &Tensor,
    dy: &Tensor,
    size: usize,
    alpha: f32,
    beta: f32,
    k: f32,
) -> Result<Tensor> {
    let (_, channels, plane) = check(x, size).map_err(rename)?;
    check_grad_output(x, dy)?;
    let mut dx = vec![0.0f32; x.numel()];
    if dx.is_empty() {
        return Ok(Tensor::from_parts(x.shape().clone(), dx));
    }
    let (xs, dys) = (x.data(), dy.data());
    // Three passes, each parallel over planes and each element computed by one task in a fixed
    // order: S per plane (as the forward), then `dy·x·S^(−β−1)` per plane, then dx, which reads
    // the second pass of the neighbouring planes.
    let mut scale = vec![0.0f32; x.numel()];
    scale.par_chunks_mut(plane).enumerate().for_each(|(nc, scale)| {
        let (n, c) = (nc / channels, nc % channels);
        for neighbour in window(c, size, channels) {
            let src = &xs[(n * channels + neighbour) * plane..][..plane];
            for (acc, &v) in scale.iter_mut().zip(src) {
                *acc += v * v;
            }
        }
        for s in scale.iter_mut() {
            *s = *s / size as f32 * alpha + k;
        }
    });
    let mut weighted = vec![0.0f32; x.numel()];
    weighted.par_chunks_mut(plane).enumerate().for_each(|(nc, weighted)| {
        let at = nc * plane..(nc + 1) * plane;
        for ((w, &s), (&d, &v)) in
            weighted.iter_mut().zip(&scale[at.clone()]).zip(dys[at.clone()].iter().zip(&xs[at]))
        {
            *w = d * v * s.powf(-beta - 1.0);
        }
    });
    let factor = 2.0 * alpha * beta / size as f32;
    dx.par_chunks_mut(plane).enumerate().for_each(|(nc, dx)| {
        let (n, j) = (nc / channels, nc % channels);
        // dx first gathers Σ over the channels whose window holds j, in ascending order.
        for c in reverse_window(j, size, channels) {
            let src = &weighted[(n * channels + c) * plane..][..plane];
            for (acc, &w) in dx.iter_mut().zip(src) {
                *acc += w;
            }
        }
        let at = nc * plane..(nc + 1) * plane;
        for ((out, &s), (&d, &v)) in
            dx.iter_mut().zip(&scale[at.clone()]).zip(dys[at.clone()].iter().zip(&xs[at]))
        {
            *out = d * s.powf(-beta) - factor * v * *out;
        }
    });
    Ok(Tensor::from_parts(x.shape().clone(), dx))
}

/// The forward's checks reported under the backward's name.
fn rename(err: Error) -> Error {
    match err {
        Error::Shape { message, .. } => Error::shape(BACKWARD_OP, message),
        Error::InvalidArgument { message, .. } => Error::invalid(BACKWARD_OP, message),
    }
}

/// The same result from plain loops accumulated in f64; slow, kept to define and test.
pub fn local_response_norm_reference(
    x: &Tensor,
    size: usize,
    alpha: f32,
    beta: f32,
    k: f32,
) -> Result<Tensor> {
    let (batch, channels, plane) = check(x, size)?;
    let xs = x.data();
    let at = |n: usize, c: usize, s: usize| xs[(n * channels + c) * plane + s] as f64;
    let mut y = Vec::with_capacity(x.numel());
    for n in 0..batch {
        for c in 0..channels {
            for s in 0..plane {
                let squares: f64 = window(c, size, channels).map(|c2| at(n, c2, s) * at(n, c2, s)).sum();
                let scale = (k as f64 + alpha as f64 / size as f64 * squares).powf(beta as f64);
                y.push((at(n, c, s) / scale) as f32);
            }
        }
    }
    Ok(Tensor::from_parts(x.shape().clone(), y))
}

/// The same gradient from plain loops accumulated in f64; slow, kept to define and test.
pub fn local_response_norm_backward_reference(
    x: &Tensor,
    dy: &Tensor,
    size: usize,
    alpha: f32,
    beta: f32,
    k: f32,
) -> Result<Tensor> {
    let (batch, channels, plane) = check(x, size).map_err(rename)?;
    check_grad_output(x, dy)?;
    let (xs, dys) = (x.data(), dy.data());
    let at = |n: usize, c: usize, s: usize| (n * channels + c) * plane + s;
    let (alpha, beta, k) = (alpha as f64, beta as f64, k as f64);
    let scale = |n: usize, c: usize, s: usize| {
        let squares: f64 = window(c, size, channels).map(|c2| (xs[at(n, c2, s)] as f64).powi(2)).sum();
        k + alpha / size as f64 * squares
    };
    let mut dx = Vec::with_capacity(x.numel());
    for n in 0..batch {
        for j in 0..channels {
            for s in 0..plane {
                let through_neighbours: f64 = reverse_window(j, size, channels)
                    .map(|c| {
                        dys[at(n, c, s)] as f64 * xs[at(n, c, s)] as f64 * scale(n, c, s).powf(-beta - 1.0)
                    })
                    .sum();
                let direct = dys[at(n, j, s)] as f64 * scale(n, j, s).powf(-beta);
                let grad =
                    direct - 2.0 * alpha * beta / size as f64 * xs[at(n, j, s)] as f64 * through_neighbours;
                dx.push(grad as f32);
            }
        }
    }
    Ok(Tensor::from_parts(x.shape().clone(), dx))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn close(a: &Tensor, b: &Tensor, tolerance: f32) {
        assert_eq!(a.dims(), b.dims());
        for (i, (&u, &v)) in a.data().iter().zip(b.data()).enumerate() {
            assert!((u - v).abs() <= tolerance * (1.0 + v.abs()), "element {i}: {u} vs {v}");
        }
    }

    /// Worked by hand; PyTorch's `F.local_response_norm(x, 2, alpha=1, beta=1, k=1)` agrees.
    #[test]
    fn hand_computed_case() {
        // size 2: channel c sees c−1 ..= c. Divisors 1 + (1)/2, 1 + (1+4)/2, 1 + (4+9)/2.
        let x = Tensor::new([1, 3, 1], vec![1.0, 2.0, 3.0]).unwrap();
        let y = local_response_norm(&x, 2, 1.0, 1.0, 1.0).unwrap();
        close(&y, &Tensor::new([1, 3, 1], vec![1.0 / 1.5, 2.0 / 3.5, 3.0 / 7.5]).unwrap(), 1e-6);
        close(&local_response_norm_reference(&x, 2, 1.0, 1.0, 1.0).unwrap(), &y, 1e-6);
    }

    #[test]
    fn window_is_clipped_but_divides_by_size() {
        // size 5 on 2 channels: every channel sees both, and the mean still divides by 5:
        // (0 + 5/5 · (9 + 16))^0.5 = 5.
        let x = Tensor::new([1, 2, 1, 1], vec![3.0, 4.0]).unwrap();
        let y = local_response_norm(&x, 5, 5.0, 0.5, 0.0).unwrap();
        close(&y, &Tensor::new([1, 2, 1, 1], vec![3.0 / 5.0, 4.0 / 5.0]).unwrap(), 1e-6);
    }

    #[test]
    fn window_bounds() {
        assert_eq!(window(0, 5, 10), 0..3);
        assert_eq!(window(5, 5, 10), 3..8);
        assert_eq!(window(9, 5, 10), 7..10);
        assert_eq!(window(4, 4, 10), 2..6);
        assert_eq!(window(0, 1, 1), 0..1);
    }

    #[test]
    fn empty_input_gives_empty_output() {
        let x = Tensor::zeros([0, 3, 4]).unwrap();
        assert_eq!(local_response_norm(&x, 3, 1e-4, 0.75, 1.0).unwrap().dims(), &[0, 3, 4]);
    }

    #[test]
    fn rank_below_three_is_an_error() {
        let err = local_response_norm(&Tensor::zeros([2, 3]).unwrap(), 5, 1e-4, 0.75, 2.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "local_response_norm: input must have at least 3 dimensions laid out as [N, C, *], got shape [2, 3] (rank 2)"
        );
    }

    #[test]
    fn zero_size_is_an_error() {
        let err = local_response_norm(&Tensor::zeros([1, 3, 4]).unwrap(), 0, 1e-4, 0.75, 2.0).unwrap_err();
        assert_eq!(err.to_string(), "local_response_norm: invalid argument: size must be at least 1, got 0");
    }

    #[test]
    fn one_and_two_threads_agree_bitwise() {
        let x = Tensor::from_fn([2, 7, 5, 3], |i| ((i[0] * 31 + i[1] * 7 + i[2] * 3 + i[3]) as f32).sin())
            .unwrap();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| local_response_norm(&x, 5, 1e-4, 0.75, 2.0).unwrap())
        };
        let (one, two) = (run(1), run(2));
        assert!(one.data().iter().zip(two.data()).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    fn noise(dims: &[usize], seed: u32, scale: f32) -> Tensor {
        Tensor::from_fn(dims, |i| {
            let h = i.iter().fold(seed, |h, &v| h.wrapping_mul(2_654_435_761).wrapping_add(v as u32 + 1));
            ((h >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .unwrap()
    }

    /// Central differences of `L(x) = Σ lrn(x)·r` in f64, against both backward paths.
    #[test]
    fn backward_matches_finite_differences() {
        // (shape, size, α, β, k, input scale): AlexNet's constants on large activations, an even
        // window, and a strong normalisation where the second term dominates.
        let cases = [
            (&[2, 7, 3, 2][..], 5, 1e-4, 0.75, 2.0, 40.0),
            (&[1, 6, 4][..], 4, 0.3, 1.0, 0.5, 1.5),
            (&[1, 5, 2, 2, 2][..], 3, 0.5, 0.5, 1.0, 2.0),
        ];
        for (seed, (dims, size, alpha, beta, k, scale)) in cases.into_iter().enumerate() {
            let x = noise(dims, seed as u32, scale);
            let r = noise(dims, seed as u32 + 50, 1.0);
            let eps = 1e-2 * scale;
            let loss = |x: &Tensor| -> f64 {
                let y = local_response_norm_reference(x, size, alpha, beta, k).unwrap();
                y.data().iter().zip(r.data()).map(|(&y, &r)| y as f64 * r as f64).sum()
            };
            let numeric: Vec<f32> = (0..x.numel())
                .map(|i| {
                    let (mut plus, mut minus) = (x.clone(), x.clone());
                    plus.data_mut()[i] += eps;
                    minus.data_mut()[i] -= eps;
                    ((loss(&plus) - loss(&minus)) / (2.0 * eps as f64)) as f32
                })
                .collect();
            let numeric = Tensor::new(dims, numeric).unwrap();
            close(&local_response_norm_backward(&x, &r, size, alpha, beta, k).unwrap(), &numeric, 1e-3);
            close(
                &local_response_norm_backward_reference(&x, &r, size, alpha, beta, k).unwrap(),
                &numeric,
                1e-3,
            );
        }
    }

    #[test]
    fn backward_one_and_two_threads_agree_bitwise() {
        let x = noise(&[2, 9, 5, 3], 3, 30.0);
        let dy = noise(&[2, 9, 5, 3], 4, 1.0);
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| local_response_norm_backward(&x, &dy, 5, 1e-4, 0.75, 2.0).unwrap())
        };
        let (one, two) = (run(1), run(2));
        assert!(one.data().iter().zip(two.data()).all(|(a, b)| a.to_bits() == b.to_bits()));
    }

    #[test]
    fn backward_errors() {
        let x = Tensor::zeros([1, 3, 4]).unwrap();
        let err = local_response_norm_backward(&x, &Tensor::zeros([1, 3, 5]).unwrap(), 5, 1e-4, 0.75, 2.0);
        assert_eq!(
            err.unwrap_err().to_string(),
            "local_response_norm_backward: grad_output has shape [1, 3, 5] but the output for input [1, 3, 4] is [1, 3, 4]"
        );
        let err = local_response_norm_backward_reference(&x, &x, 0, 1e-4, 0.75, 2.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "local_response_norm_backward: invalid argument: size must be at least 1, got 0"
        );
        let flat = Tensor::zeros([2, 3]).unwrap();
        let err = local_response_norm_backward(&flat, &flat, 5, 1e-4, 0.75, 2.0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "local_response_norm_backward: input must have at least 3 dimensions laid out as [N, C, *], got shape [2, 3] (rank 2)"
        );
        let empty = Tensor::zeros([0, 3, 4]).unwrap();
        assert_eq!(
            local_response_norm_backward(&empty, &empty, 3, 1e-4, 0.75, 1.0).unwrap().dims(),
            &[0, 3, 4]
        );
    }

    #[test]
    fn reverse_window_is_the_transpose_of_window() {
        for size in 1..8 {
            for channels in 1..10 {
                for j in 0..channels {
                    let holders: Vec<usize> =
                        (0..channels).filter(|&c| window(c, size, channels).contains(&j)).collect();
                    assert_eq!(reverse_window(j, size, channels).collect::<Vec<_>>(), holders, "size {size}");
                }
            }
        }
    }

    proptest! {
        #[test]
        fn fast_matches_reference(
            batch in 1usize..3,
            channels in 1usize..9,
            spatial in proptest::collection::vec(1usize..5, 1..4),
            size in 1usize..8,
            alpha in 1e-4f32..2.0,
            beta in 0.1f32..1.5,
            k in 0.5f32..3.0,
            seed in any::<u32>(),
        ) {
            let mut dims = vec![batch, channels];
            dims.extend(spatial);
            let x = Tensor::from_fn(dims, |i| {
                let h = i.iter().fold(seed, |h, &v| h.wrapping_mul(2_654_435_761).wrapping_add(v as u32 + 1));
                (h >> 8) as f32 / (1u32 << 24) as f32 * 4.0 - 2.0
            }).unwrap();
            let fast = local_response_norm(&x, size, alpha, beta, k).unwrap();
            let reference = local_response_norm_reference(&x, size, alpha, beta, k).unwrap();
            close(&fast, &reference, 1e-5);
        }

        #[test]
        fn backward_fast_matches_reference(
            batch in 1usize..3,
            channels in 1usize..9,
            spatial in proptest::collection::vec(1usize..5, 1..4),
            size in 1usize..8,
            alpha in 1e-4f32..2.0,
            beta in 0.1f32..1.5,
            k in 0.5f32..3.0,
            seed in any::<u32>(),
        ) {
            let mut dims = vec![batch, channels];
            dims.extend(spatial);
            let x = noise(&dims, seed, 2.0);
            let dy = noise(&dims, seed ^ 0x5555, 1.0);
            let fast = local_response_norm_backward(&x, &dy, size, alpha, beta, k).unwrap();
            let reference = local_response_norm_backward_reference(&x, &dy, size, alpha, beta, k).unwrap();
            close(&fast, &reference, 1e-5);
        }
    }
}
