//! What a convolution layer looks for: its filters as pictures.
//!
//! ```text
//! weight [K, C, F_h, F_w]   K filters, each spanning C input channels (C_in / groups)
//! ```
//!
//! A first layer's filters on colour images are shown in colour (C = 3 as R, G, B), which is how
//! Krizhevsky et al. and Zeiler & Fergus show AlexNet's and ZFNet's edge and colour-blob
//! detectors; deeper layers have one picture per (filter, input channel), or each filter averaged
//! over its input channels. Each tile is scaled to its own smallest (black) and largest (white)
//! weight, so a filter with small weights is as visible as one with large ones; the layer's
//! overall range is written on the picture. The tiles are the weights as stride applies them:
//! convolution here is cross-correlation (as in PyTorch), so no tile is flipped.

use image::RgbImage;
use stride_nn::module::{Module, named_parameters};
use stride_tensor::Tensor;

use crate::colormap::{ColorMap, normalize_min_max, value_range};
use crate::error::{Error, Result};
use crate::render::{ColourBar, Figure, Grid, GridLabels, format_value, render_grid, rgb_tile, tile};

/// A convolution layer's weights `[K, C, F_h, F_w]` and its torchvision path (`layer1.0.conv1`).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvFilters {
    pub path: String,
    pub weight: Tensor,
}

/// How the input channels of a filter become tiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterChannels {
    /// [`FilterChannels::Colour`] for 3 input channels, [`FilterChannels::Each`] when that makes
    /// at most [`MAX_AUTO_TILES`] tiles, otherwise [`FilterChannels::Mean`].
    Auto,
    /// One colour tile per filter, its 3 input channels as R, G, B.
    Colour,
    /// One grey tile per (filter, input channel): a row per filter, a column per channel.
    Each,
    /// One grey tile per filter, the mean of its input channels.
    Mean,
}

/// The most tiles [`FilterChannels::Auto`] draws one per (filter, input channel).
pub const MAX_AUTO_TILES: usize = 1024;

/// The paths of the network's 2-D convolution layers (those with a weight `[K, C, F_h, F_w]`), in
/// the order of their parameters (torchvision's state_dict order).
pub fn conv_layer_paths(model: &mut dyn Module) -> Vec<String> {
    named_parameters(model)
        .into_iter()
        .filter(|(name, p)| name.ends_with(".weight") && p.value().rank() == 4)
        .map(|(name, _)| name.trim_end_matches(".weight").to_string())
        .collect()
}

/// The weights of the convolution at `layer`, or of the first convolution when `None`. A path
/// that names no convolution is an error listing those there are.
pub fn conv_filters(model: &mut dyn Module, layer: Option<&str>) -> Result<ConvFilters> {
    let convs = conv_layer_paths(model);
    let params = named_parameters(model);
    let Some(first) = convs.first() else {
        return Err(Error::Layer("this network has no 2-D convolution layer".into()));
    };
    let path = layer.unwrap_or(first);
    let weight_name = format!("{path}.weight");
    let weight = params.iter().find(|(name, _)| *name == weight_name).map(|(_, p)| p.value());
    let list = |paths: &[&String]| paths.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(", ");
    let all: Vec<&String> = convs.iter().collect();
    match weight {
        Some(w) if w.rank() == 4 => Ok(ConvFilters { path: path.to_string(), weight: w.clone() }),
        Some(w) => Err(Error::Layer(format!(
            "{path} is not a 2-D convolution (its weight is {}); the convolution layers are: {}",
            w.shape(),
            list(&all)
        ))),
        None => {
            let inside: Vec<&String> = convs.iter().filter(|c| c.starts_with(&format!("{path}."))).collect();
            if inside.is_empty() {
                Err(Error::Layer(format!(
                    "no convolution layer {path} in this network; the convolution layers are: {}",
                    list(&all)
                )))
            } else {
                Err(Error::Layer(format!(
                    "{path} holds several layers; the convolution layers in it are: {}",
                    list(&inside)
                )))
            }
        }
    }
}

/// The tiles of a layer's filters, each a tensor `[3, F_h, F_w]` (colour) or `[1, F_h, F_w]`
/// with values in [0, 1], each scaled to its own min–max.
#[derive(Debug, Clone, PartialEq)]
pub struct FilterTiles {
    /// What the tiles are ([`FilterChannels::Auto`] resolved).
    pub channels: FilterChannels,
    /// Filters `K` and input channels `C` of the layer.
    pub filters: usize,
    pub inputs: usize,
    /// One per filter, or for [`FilterChannels::Each`] one per (filter, channel), filter-major:
    /// tile `k·C + c` is channel `c` of filter `k`.
    pub tiles: Vec<Tensor>,
}

impl FilterChannels {
    /// What [`FilterChannels::Auto`] means for `filters × inputs` (others are returned as they
    /// are, or an error for colour without 3 channels).
    pub fn resolve(self, filters: usize, inputs: usize) -> Result<FilterChannels> {
        match self {
            FilterChannels::Auto if inputs == 3 => Ok(FilterChannels::Colour),
            FilterChannels::Auto if filters * inputs <= MAX_AUTO_TILES => Ok(FilterChannels::Each),
            FilterChannels::Auto => Ok(FilterChannels::Mean),
            FilterChannels::Colour if inputs != 3 => Err(Error::Invalid(format!(
                "colour tiles need filters over 3 input channels; these span {inputs}"
            ))),
            other => Ok(other),
        }
    }
}

/// Cuts a weight `[K, C, F_h, F_w]` into normalised tiles.
pub fn filter_tiles(weight: &Tensor, channels: FilterChannels) -> Result<FilterTiles> {
    let [k, c, fh, fw] = match *weight.dims() {
        [k, c, fh, fw] => [k, c, fh, fw],
        _ => {
            return Err(Error::Invalid(format!(
                "filters are drawn from a weight [K, C, F_h, F_w], got {}",
                weight.shape()
            )));
        }
    };
    let channels = channels.resolve(k, c)?;
    let plane = fh * fw;
    let data = weight.data();
    let mut tiles = Vec::new();
    for filter in data.chunks_exact((c * plane).max(1)).take(k) {
        match channels {
            FilterChannels::Colour => tiles.push(Tensor::new(vec![3, fh, fw], normalize_min_max(filter))?),
            FilterChannels::Each => {
                for values in filter.chunks_exact(plane.max(1)) {
                    tiles.push(Tensor::new(vec![1, fh, fw], normalize_min_max(values))?);
                }
            }
            FilterChannels::Mean | FilterChannels::Auto => {
                let mean: Vec<f32> = (0..plane)
                    .map(|i| (0..c).map(|ch| filter[ch * plane + i]).sum::<f32>() / c as f32)
                    .collect();
                tiles.push(Tensor::new(vec![1, fh, fw], normalize_min_max(&mean))?);
            }
        }
    }
    Ok(FilterTiles { channels, filters: k, inputs: c, tiles })
}

/// The filters as a grid of tiles without the page around it: the body of [`render_filters`],
/// and what a page with captions of its own shows (`stride serve`). Also returns what the tiles
/// are ([`FilterChannels::Auto`] resolved).
pub fn filter_grid(filters: &ConvFilters, channels: FilterChannels) -> Result<(RgbImage, FilterChannels)> {
    let (body, channels, _) = grid_and_words(filters, channels)?;
    Ok((body, channels))
}

/// The grid of tiles, what they are, and a line saying how to read them.
fn grid_and_words(
    filters: &ConvFilters,
    channels: FilterChannels,
) -> Result<(RgbImage, FilterChannels, String)> {
    let cut = filter_tiles(&filters.weight, channels)?;
    let [k, c, fh, fw] = [cut.filters, cut.inputs, filters.weight.dims()[2], filters.weight.dims()[3]];
    let images: Vec<RgbImage> = cut
        .tiles
        .iter()
        .map(|t| {
            if t.dims()[0] == 3 { rgb_tile(t.data(), fh, fw) } else { tile(t.data(), fh, fw, ColorMap::Gray) }
        })
        .collect();
    let (grid, labels, how) = match cut.channels {
        FilterChannels::Each if c > 1 => (
            Grid::with_shape(k, c, fh, fw),
            GridLabels::Matrix { rows: "filter".into(), columns: "input channel".into() },
            format!("one tile per filter (row) and input channel (column), {} tiles", k * c),
        ),
        FilterChannels::Colour => (
            Grid::square(k, fh, fw),
            GridLabels::Index,
            "one tile per filter, its 3 input channels as red, green, blue; numbered row by row".to_string(),
        ),
        FilterChannels::Mean if c > 1 => (
            Grid::square(k, fh, fw),
            GridLabels::Index,
            format!("one tile per filter, the mean over its {c} input channels; numbered row by row"),
        ),
        _ => (
            Grid::square(k, fh, fw),
            GridLabels::Index,
            "one tile per filter, numbered row by row".to_string(),
        ),
    };
    Ok((render_grid(&images, &grid, &labels)?, cut.channels, how))
}

/// The filters as a labelled picture: a grid of tiles under a title naming the layer and its
/// weight's shape, with a grey scale bar.
pub fn render_filters(filters: &ConvFilters, channels: FilterChannels) -> Result<RgbImage> {
    let (body, channels, how) = grid_and_words(filters, channels)?;
    let [k, c, fh, fw] = [0, 1, 2, 3].map(|i| filters.weight.dims()[i]);
    let (lo, hi) = value_range(filters.weight.data()).unwrap_or((0.0, 0.0));
    let figure = Figure {
        title: format!("{}: {k} filters of {c}×{fh}×{fw} (weight {})", filters.path, filters.weight.shape()),
        lines: vec![
            how,
            format!(
                "the layer's weights range from {} to {}; each tile is scaled to its own min and max",
                format_value(lo),
                format_value(hi)
            ),
            "shown as applied: convolution here is cross-correlation, so the tiles are not flipped".into(),
        ],
        body,
        bar: Some(ColourBar {
            map: ColorMap::Gray,
            low: 0.0,
            high: 1.0,
            label: if channels == FilterChannels::Colour {
                "each colour channel: from the tile's smallest weight (none) to its largest (full)".into()
            } else {
                "weight: from the tile's smallest (black) to its largest (white)".into()
            },
            end_words: Some(("tile min".into(), "tile max".into())),
        }),
    };
    figure.render()
}

#[cfg(test)]
mod tests {
    use stride_nn::layers::{Conv2d, Linear};
    use stride_nn::module::Sequential;
    use stride_tensor::ops::conv::ConvSpec;

    use super::*;

    fn net() -> Sequential {
        let conv1 = Conv2d::from_parts(
            Tensor::from_fn([4, 3, 3, 3], |i| (i[0] * 27 + i[1] * 9 + i[2] * 3 + i[3]) as f32).unwrap(),
            None,
            ConvSpec::new(),
        )
        .unwrap();
        let conv2 = Conv2d::from_parts(Tensor::zeros([2, 4, 1, 1]).unwrap(), None, ConvSpec::new()).unwrap();
        let fc = Linear::from_parts(Tensor::zeros([5, 8]).unwrap(), None).unwrap();
        let block = Sequential::named(vec![("conv", Box::new(conv2))]);
        Sequential::named(vec![("conv1", Box::new(conv1)), ("block", Box::new(block)), ("fc", Box::new(fc))])
    }

    #[test]
    fn layers_are_found_by_path_and_others_are_explained() {
        let mut model = net();
        assert_eq!(conv_layer_paths(&mut model), ["conv1", "block.conv"]);
        assert_eq!(conv_filters(&mut model, None).unwrap().path, "conv1");
        assert_eq!(conv_filters(&mut model, Some("block.conv")).unwrap().weight.dims(), &[2, 4, 1, 1]);
        let err = |layer| conv_filters(&mut net(), Some(layer)).unwrap_err().to_string();
        assert_eq!(
            err("fc"),
            "fc is not a 2-D convolution (its weight is [5, 8]); the convolution layers are: conv1, block.conv"
        );
        assert_eq!(
            err("conv9"),
            "no convolution layer conv9 in this network; the convolution layers are: conv1, block.conv"
        );
        assert_eq!(err("block"), "block holds several layers; the convolution layers in it are: block.conv");
        let mut no_conv = Sequential::new(vec![]);
        assert_eq!(
            conv_filters(&mut no_conv, None).unwrap_err().to_string(),
            "this network has no 2-D convolution layer"
        );
    }

    #[test]
    fn tiles_are_cut_and_normalised_per_tile() {
        let weight = conv_filters(&mut net(), None).unwrap().weight;
        let colour = filter_tiles(&weight, FilterChannels::Auto).unwrap();
        assert_eq!(colour.channels, FilterChannels::Colour);
        assert_eq!(colour.tiles.len(), 4);
        assert_eq!(colour.tiles[1].dims(), &[3, 3, 3]);
        // Filter 1 holds 27..54 in order: 0 to 1 in 26 steps.
        assert_eq!(colour.tiles[1].data()[0], 0.0);
        assert_eq!(colour.tiles[1].data()[26], 1.0);
        assert!((colour.tiles[1].data()[13] - 0.5).abs() < 1e-6);

        let each = filter_tiles(&weight, FilterChannels::Each).unwrap();
        assert_eq!(each.tiles.len(), 12);
        // Tile k·C + c: channel 2 of filter 1, values 45..54, again 0 to 1.
        assert_eq!(each.tiles[5].dims(), &[1, 3, 3]);
        assert_eq!((each.tiles[5].data()[0], each.tiles[5].data()[8]), (0.0, 1.0));

        let mean = filter_tiles(&weight, FilterChannels::Mean).unwrap();
        assert_eq!(mean.tiles.len(), 4);
        assert_eq!(mean.tiles[0].data()[4], 0.5);

        let one_channel = Tensor::zeros([6, 16, 5, 5]).unwrap();
        assert_eq!(filter_tiles(&one_channel, FilterChannels::Auto).unwrap().channels, FilterChannels::Each);
        assert_eq!(
            filter_tiles(&Tensor::zeros([64, 64, 3, 3]).unwrap(), FilterChannels::Auto).unwrap().channels,
            FilterChannels::Mean
        );
        assert_eq!(
            filter_tiles(&one_channel, FilterChannels::Colour).unwrap_err().to_string(),
            "colour tiles need filters over 3 input channels; these span 16"
        );
        // Constant filters (all zero) are a flat middle grey, not an error.
        assert!(
            filter_tiles(&one_channel, FilterChannels::Mean).unwrap().tiles[0]
                .data()
                .iter()
                .all(|&v| v == 0.5)
        );
    }

    #[test]
    fn the_picture_has_a_tile_per_filter() {
        let filters = conv_filters(&mut net(), None).unwrap();
        let colour = render_filters(&filters, FilterChannels::Auto).unwrap();
        let grey = render_filters(&filters, FilterChannels::Each).unwrap();
        assert!(colour.width() >= 2 * 57 && colour.height() > 2 * 57, "{:?}", colour.dimensions());
        assert!(grey.height() > colour.height(), "4 rows of 3 channels");
    }
}
