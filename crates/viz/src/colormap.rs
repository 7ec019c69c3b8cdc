//! Numbers to colours: min–max normalisation and the colour maps every picture uses.
//!
//! The maps are matplotlib's, which readers of network pictures know: `viridis` for activations
//! (dark = low, yellow = high, readable in grey and by colour-blind readers), `inferno` for
//! saliency (black = no effect), and the diverging `RdBu_r` for signed quantities with a
//! meaningful zero (blue = negative, white = 0, red = positive). Each is sampled at nine stops
//! and interpolated linearly, which is indistinguishable from the 256-entry tables at these sizes.

use image::Rgb;

/// A colour map from [0, 1] to RGB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMap {
    /// Black (0) to white (1).
    Gray,
    /// matplotlib's `viridis`: dark violet, blue, green, yellow.
    Viridis,
    /// matplotlib's `inferno`: black, purple, orange, pale yellow.
    Inferno,
    /// matplotlib's `RdBu_r`: dark blue (0), white (0.5), dark red (1).
    Diverging,
}

const VIRIDIS: [[u8; 3]; 9] = [
    [68, 1, 84],
    [71, 44, 122],
    [59, 81, 139],
    [44, 113, 142],
    [33, 144, 141],
    [39, 173, 129],
    [92, 200, 99],
    [170, 220, 50],
    [253, 231, 37],
];

const INFERNO: [[u8; 3]; 9] = [
    [0, 0, 4],
    [31, 12, 72],
    [85, 15, 109],
    [136, 34, 106],
    [186, 54, 85],
    [227, 89, 51],
    [249, 140, 10],
    [249, 201, 50],
    [252, 255, 164],
];

const RDBU_R: [[u8; 3]; 9] = [
    [5, 48, 97],
    [33, 102, 172],
    [67, 147, 195],
    [146, 197, 222],
    [247, 247, 247],
    [244, 165, 130],
    [214, 96, 77],
    [178, 24, 43],
    [103, 0, 31],
];

impl ColorMap {
    /// The colour of `t`, clamped to [0, 1]; NaN is drawn as 0.
    pub fn at(self, t: f32) -> Rgb<u8> {
        let t = if t.is_nan() { 0.0 } else { t.clamp(0.0, 1.0) };
        let stops = match self {
            ColorMap::Gray => {
                let v = (255.0 * t).round() as u8;
                return Rgb([v, v, v]);
            }
            ColorMap::Viridis => &VIRIDIS,
            ColorMap::Inferno => &INFERNO,
            ColorMap::Diverging => &RDBU_R,
        };
        let position = t * (stops.len() - 1) as f32;
        let i = (position.floor() as usize).min(stops.len() - 2);
        let f = position - i as f32;
        let (a, b) = (stops[i], stops[i + 1]);
        Rgb(std::array::from_fn(|c| (a[c] as f32 + f * (b[c] as f32 - a[c] as f32)).round() as u8))
    }
}

/// The smallest and largest finite values, or `None` when there are none.
pub fn value_range(values: &[f32]) -> Option<(f32, f32)> {
    values
        .iter()
        .filter(|v| v.is_finite())
        .fold(None, |range, &v| Some(range.map_or((v, v), |(lo, hi): (f32, f32)| (lo.min(v), hi.max(v)))))
}

/// `(v − lo) / (hi − lo)` clamped to [0, 1]. When `hi ≤ lo` (a constant tile) every value maps
/// to 0.5, so a constant shows as a flat middle tone rather than as black or a division by zero.
pub fn normalize(values: &[f32], lo: f32, hi: f32) -> Vec<f32> {
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return vec![0.5; values.len()];
    }
    let span = hi - lo;
    values.iter().map(|&v| if v.is_finite() { ((v - lo) / span).clamp(0.0, 1.0) } else { 0.5 }).collect()
}

/// Each value placed between the smallest (0) and the largest (1) of `values`.
pub fn normalize_min_max(values: &[f32]) -> Vec<f32> {
    let (lo, hi) = value_range(values).unwrap_or((0.0, 0.0));
    normalize(values, lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_max_spans_zero_to_one() {
        assert_eq!(normalize_min_max(&[2.0, 4.0, 3.0]), [0.0, 1.0, 0.5]);
        assert_eq!(normalize_min_max(&[-1.0, 1.0]), [0.0, 1.0]);
        // A constant tile, an empty one, and values that are not finite.
        assert_eq!(normalize_min_max(&[7.0, 7.0]), [0.5, 0.5]);
        assert!(normalize_min_max(&[]).is_empty());
        assert_eq!(normalize_min_max(&[f32::NAN, 1.0, 3.0]), [0.5, 0.0, 1.0]);
        assert_eq!(value_range(&[f32::INFINITY, -2.0, 5.0]), Some((-2.0, 5.0)));
        assert_eq!(value_range(&[f32::NAN]), None);
        // Outside the given range: clamped.
        assert_eq!(normalize(&[-5.0, 0.5, 9.0], 0.0, 1.0), [0.0, 0.5, 1.0]);
    }

    #[test]
    fn maps_hit_their_end_points_and_interpolate() {
        assert_eq!(ColorMap::Gray.at(0.0), Rgb([0, 0, 0]));
        assert_eq!(ColorMap::Gray.at(1.0), Rgb([255, 255, 255]));
        assert_eq!(ColorMap::Viridis.at(0.0), Rgb(VIRIDIS[0]));
        assert_eq!(ColorMap::Viridis.at(1.0), Rgb(VIRIDIS[8]));
        assert_eq!(ColorMap::Diverging.at(0.5), Rgb([247, 247, 247]), "white at zero");
        assert_eq!(ColorMap::Inferno.at(2.0), ColorMap::Inferno.at(1.0));
        assert_eq!(ColorMap::Inferno.at(f32::NAN), ColorMap::Inferno.at(0.0));
        // Halfway between the first two stops.
        assert_eq!(ColorMap::Viridis.at(0.0625), Rgb([70, 23, 103]));
    }
}
