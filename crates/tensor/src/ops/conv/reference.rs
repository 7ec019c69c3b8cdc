//! The plain loops that define convolution; every fast kernel is tested against these.
//!
//! Shapes are those of the module docs, lifted to three spatial axes `[D, H, W]`. Sums are
//! accumulated in f64 so that the reference is more exact than anything it checks.

use super::{ConvGeometry, ConvGradsWanted};

/// `y[n, k, o] = b[k] + Σ_c Σ_f w[k, c, f] · x[n, g·C_in/G + c, o·S − P_begin + f·D]`.
pub fn forward(g: &ConvGeometry, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let [id, ih, iw] = g.input;
    let [kd, kh, kw] = g.kernel;
    let [od, oh, ow] = g.output;
    let (cin_g, cout_g) = (g.in_per_group(), g.out_per_group());
    let mut y = Vec::with_capacity(g.batch * g.out_channels * g.output_volume());
    for n in 0..g.batch {
        for k in 0..g.out_channels {
            let group = k / cout_g;
            for z in 0..od {
                for r in 0..oh {
                    for c in 0..ow {
                        let mut acc = bias.map_or(0.0, |b| b[k] as f64);
                        for ci in 0..cin_g {
                            let channel = group * cin_g + ci;
                            for fz in 0..kd {
                                let Some(sz) = tap(z, fz, 0, g) else { continue };
                                if sz >= id {
                                    continue;
                                }
                                for fr in 0..kh {
                                    let Some(sr) = tap(r, fr, 1, g) else { continue };
                                    if sr >= ih {
                                        continue;
                                    }
                                    for fc in 0..kw {
                                        let Some(sc) = tap(c, fc, 2, g) else { continue };
                                        if sc >= iw {
                                            continue;
                                        }
                                        let xv = x
                                            [(((n * g.in_channels + channel) * id + sz) * ih + sr) * iw + sc];
                                        let wv = w[(((k * cin_g + ci) * kd + fz) * kh + fr) * kw + fc];
                                        acc += xv as f64 * wv as f64;
                                    }
                                }
                            }
                        }
                        y.push(acc as f32);
                    }
                }
            }
        }
    }
    y
}

/// The gradients `(dx, dw, db)` of [`forward`] for an upstream gradient `dy`, in the scatter form
/// that follows from its definition: every product `w[k, c, f] · x[n, c, s]` that fed `y[n, k, o]`
/// sends `dy[n, k, o]·w[k, c, f]` to `dx[n, c, s]` and `dy[n, k, o]·x[n, c, s]` to `dw[k, c, f]`;
/// the bias sends `dy[n, k, o]` to `db[k]`. Taps in the padding feed nothing and receive nothing.
/// `_wanted` is ignored: the reference always computes all three.
pub fn backward(
    g: &ConvGeometry,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    _wanted: ConvGradsWanted,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let [id, ih, iw] = g.input;
    let [kd, kh, kw] = g.kernel;
    let [od, oh, ow] = g.output;
    let (cin_g, cout_g) = (g.in_per_group(), g.out_per_group());
    let mut dx = vec![0.0f64; x.len()];
    let mut dw = vec![0.0f64; w.len()];
    let mut db = vec![0.0f64; g.out_channels];
    for n in 0..g.batch {
        for k in 0..g.out_channels {
            let group = k / cout_g;
            for z in 0..od {
                for r in 0..oh {
                    for c in 0..ow {
                        let upstream = dy[(((n * g.out_channels + k) * od + z) * oh + r) * ow + c] as f64;
                        db[k] += upstream;
                        for ci in 0..cin_g {
                            let channel = group * cin_g + ci;
                            for fz in 0..kd {
                                let Some(sz) = tap(z, fz, 0, g) else { continue };
                                if sz >= id {
                                    continue;
                                }
                                for fr in 0..kh {
                                    let Some(sr) = tap(r, fr, 1, g) else { continue };
                                    if sr >= ih {
                                        continue;
                                    }
                                    for fc in 0..kw {
                                        let Some(sc) = tap(c, fc, 2, g) else { continue };
                                        if sc >= iw {
                                            continue;
                                        }
                                        let xi =
                                            (((n * g.in_channels + channel) * id + sz) * ih + sr) * iw + sc;
                                        let wi = (((k * cin_g + ci) * kd + fz) * kh + fr) * kw + fc;
                                        dx[xi] += upstream * w[wi] as f64;
                                        dw[wi] += upstream * x[xi] as f64;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let narrow = |v: Vec<f64>| v.into_iter().map(|v| v as f32).collect();
    (narrow(dx), narrow(dw), narrow(db))
}

/// The input index that output position `o` reads through kernel tap `f` along `axis`, or
/// `None` when it falls in the leading zero padding.
fn tap(o: usize, f: usize, axis: usize, g: &ConvGeometry) -> Option<usize> {
    (o * g.stride[axis] + f * g.dilation[axis]).checked_sub(g.pad_begin[axis])
}
