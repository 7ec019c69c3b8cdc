//! What each layer makes of one image: its output volume, one feature map per channel.
//!
//! ```text
//! input  [1, C, H, W]      one prepared image
//! output [1, D2, H2, W2]   of a layer: D2 maps of H2 × W2, written W2×H2×D2 as in the lecture
//! ```
//!
//! The maps are taken from a real forward pass ([`forward_with_activations`]), in evaluation mode
//! and without recording a graph; the layers are the leaves that `stride summary` lists, under the
//! same paths, and a layer has feature maps when its output has four dimensions. By default one
//! colour scale serves all maps of a layer, so a channel that barely responds looks dark next to
//! one that responds strongly; [`MapScale::EachMap`] scales each map to its own range instead.

use image::RgbImage;
use stride_nn::module::{LayerSummary, Mode, Module, forward_with_activations, summarize};
use stride_tensor::Tensor;
use stride_tensor::autograd::{Var, no_grad};

use crate::colormap::{ColorMap, normalize, normalize_min_max, value_range};
use crate::error::{Error, Result};
use crate::render::{ColourBar, Figure, Grid, GridLabels, render_grid, tile};

/// One layer's output for one image.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerMaps {
    /// The torchvision path (`layer1.0.conv1`).
    pub path: String,
    /// The layer as PyTorch prints it (`Conv2d(1, 6, kernel_size=[5, 5], …)`).
    pub layer: String,
    /// `[D2, H2, W2]`: one map per output channel.
    pub maps: Tensor,
}

/// How the maps of a layer share a colour scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapScale {
    /// One scale for all maps of the layer, from its smallest to its largest value.
    Layer,
    /// Each map from its own smallest to its own largest value.
    EachMap,
}

/// The leaf layers whose output for an input of shape `input` has feature maps (four
/// dimensions), in forward order.
pub fn map_layers(model: &dyn Module, input: &[usize]) -> Result<Vec<LayerSummary>> {
    let (rows, _) = summarize(model, input)?;
    Ok(rows.into_iter().filter(|r| r.output.len() == 4).collect())
}

/// The feature maps of `layers` (all layers with maps when empty) for one image `[1, C, H, W]`,
/// in forward order. A path that is no layer, or a layer without maps, is an error listing the
/// layers that have them.
pub fn feature_maps(model: &mut dyn Module, input: &Tensor, layers: &[String]) -> Result<Vec<LayerMaps>> {
    if input.rank() != 4 || input.dims()[0] != 1 {
        return Err(Error::Invalid(format!(
            "feature maps are drawn for one image [1, C, H, W], got {}",
            input.shape()
        )));
    }
    let (rows, _) = summarize(model, input.dims())?;
    let with_maps: Vec<&LayerSummary> = rows.iter().filter(|r| r.output.len() == 4).collect();
    let listed = || with_maps.iter().map(|r| r.path.as_str()).collect::<Vec<_>>().join(", ");
    for path in layers {
        match rows.iter().find(|r| r.path == *path) {
            Some(row) if row.output.len() == 4 => {}
            Some(row) => {
                return Err(Error::Layer(format!(
                    "{path} has no feature maps: its output is {:?}, not [1, D, H, W]; the layers with maps are: {}",
                    row.output,
                    listed()
                )));
            }
            None => {
                return Err(Error::Layer(format!(
                    "no layer {path} in this network; the layers with feature maps are: {}",
                    listed()
                )));
            }
        }
    }
    let wanted = |path: &str| {
        with_maps.iter().any(|r| r.path == path) && (layers.is_empty() || layers.iter().any(|l| l == path))
    };
    let x = Var::constant(input.clone());
    let (_, kept) = no_grad(|| forward_with_activations(model, &x, Mode::Eval, |path, _| wanted(path)))?;
    kept.into_iter()
        .map(|(path, output)| {
            let layer = rows.iter().find(|r| r.path == path).map(|r| r.layer.clone()).unwrap_or_default();
            let dims = output.dims()[1..].to_vec();
            Ok(LayerMaps { path, layer, maps: Tensor::new(dims, output.into_data())? })
        })
        .collect()
}

/// `W2×H2×D2` of maps `[D2, H2, W2]`, as the lecture writes an output volume.
pub fn volume(maps: &Tensor) -> String {
    match *maps.dims() {
        [d, h, w] => format!("{w}×{h}×{d}"),
        _ => maps.shape().to_string(),
    }
}

/// One layer's maps as a grid of numbered tiles, one per channel, without the page around it:
/// the body of [`render_feature_maps`], and what a page with captions of its own shows (`stride
/// serve`). Also returns the values at the two ends of the colour scale.
pub fn feature_map_grid(maps: &LayerMaps, scale: MapScale) -> Result<(RgbImage, (f32, f32))> {
    let [d, h, w] = match *maps.maps.dims() {
        [d, h, w] => [d, h, w],
        _ => return Err(Error::Invalid(format!("feature maps are [D, H, W], got {}", maps.maps.shape()))),
    };
    let plane = h * w;
    let (lo, hi) = value_range(maps.maps.data()).unwrap_or((0.0, 0.0));
    let tiles: Vec<RgbImage> = maps
        .maps
        .data()
        .chunks_exact(plane.max(1))
        .take(d)
        .map(|values| {
            let t = match scale {
                MapScale::Layer => normalize(values, lo, hi),
                MapScale::EachMap => normalize_min_max(values),
            };
            tile(&t, h, w, ColorMap::Viridis)
        })
        .collect();
    let grid = render_grid(&tiles, &Grid::square(d, h, w), &GridLabels::Index)?;
    Ok((grid, (lo, hi)))
}

/// One layer's maps as a picture: a grid with a tile per channel, the layer's path, its output
/// volume and its description in the title, and a colour scale.
pub fn render_feature_maps(maps: &LayerMaps, scale: MapScale) -> Result<RgbImage> {
    let (body, (lo, hi)) = feature_map_grid(maps, scale)?;
    let [d, h, w] = [0, 1, 2].map(|i| maps.maps.dims()[i]);
    let (how, bar) = match scale {
        MapScale::Layer => (
            "one colour scale for every map of the layer",
            ColourBar {
                map: ColorMap::Viridis,
                low: lo,
                high: hi,
                label: "activation".into(),
                end_words: None,
            },
        ),
        MapScale::EachMap => (
            "each map scaled to its own min and max",
            ColourBar {
                map: ColorMap::Viridis,
                low: 0.0,
                high: 1.0,
                label: format!("activation (the layer's values range from {lo} to {hi})"),
                end_words: Some(("map min".into(), "map max".into())),
            },
        ),
    };
    let figure = Figure {
        title: format!("{}: output volume W2×H2×D2 = {}", maps.path, volume(&maps.maps)),
        lines: vec![
            maps.layer.clone(),
            format!("{d} feature maps of {w}×{h}, one per output channel, numbered row by row; {how}"),
        ],
        body,
        bar: Some(bar),
    };
    figure.render()
}

#[cfg(test)]
mod tests {
    use stride_nn::layers::{Activation, Conv2d, Flatten};
    use stride_nn::module::Sequential;
    use stride_tensor::ops::conv::ConvSpec;

    use super::*;

    fn net() -> Sequential {
        // Two filters: the identity and its negative.
        let weight = Tensor::new(vec![2, 1, 1, 1], vec![1.0, -1.0]).unwrap();
        let conv = Conv2d::from_parts(weight, None, ConvSpec::new()).unwrap();
        Sequential::named(vec![
            ("conv", Box::new(conv)),
            ("relu", Box::new(Activation::ReLU)),
            ("flatten", Box::new(Flatten::default())),
        ])
    }

    #[test]
    fn maps_are_the_layers_outputs() {
        let input = Tensor::new(vec![1, 1, 2, 3], vec![1.0, -2.0, 3.0, -4.0, 5.0, -6.0]).unwrap();
        let mut net = net();
        assert_eq!(map_layers(&net, input.dims()).unwrap().len(), 2);
        let maps = feature_maps(&mut net, &input, &[]).unwrap();
        assert_eq!(maps.iter().map(|m| m.path.as_str()).collect::<Vec<_>>(), ["conv", "relu"]);
        assert_eq!(maps[0].maps.dims(), &[2, 2, 3]);
        assert_eq!(
            maps[0].layer,
            "Conv2d(1, 2, kernel_size=[1, 1], stride=[1, 1], padding=[0, 0], bias=False)"
        );
        assert_eq!(maps[1].maps.data(), [1.0, 0.0, 3.0, 0.0, 5.0, 0.0, 0.0, 2.0, 0.0, 4.0, 0.0, 6.0]);
        assert_eq!(volume(&maps[1].maps), "3×2×2");
        let only = feature_maps(&mut net, &input, &["relu".to_string()]).unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0], maps[1]);
    }

    #[test]
    fn layers_without_maps_are_explained() {
        let input = Tensor::zeros([1, 1, 2, 3]).unwrap();
        let err =
            |layer: &str| feature_maps(&mut net(), &input, &[layer.to_string()]).unwrap_err().to_string();
        assert_eq!(
            err("flatten"),
            "flatten has no feature maps: its output is [1, 12], not [1, D, H, W]; the layers with maps are: conv, relu"
        );
        assert_eq!(
            err("conv2"),
            "no layer conv2 in this network; the layers with feature maps are: conv, relu"
        );
        let batch = Tensor::zeros([2, 1, 2, 3]).unwrap();
        assert!(feature_maps(&mut net(), &batch, &[]).is_err());
    }

    #[test]
    fn the_picture_holds_every_map() {
        let input = Tensor::from_fn([1, 1, 6, 6], |i| i[2] as f32 - i[3] as f32).unwrap();
        let maps = feature_maps(&mut net(), &input, &[]).unwrap();
        for scale in [MapScale::Layer, MapScale::EachMap] {
            let image = render_feature_maps(&maps[0], scale).unwrap();
            // Two 6×6 maps enlarged to 60×60, side by side.
            assert!(image.width() >= 2 * 60 && image.height() > 60, "{:?}", image.dimensions());
        }
    }
}
