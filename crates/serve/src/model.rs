//! The network behind the page: a trained one (the LeNet-5 shipped with stride, or any checkpoint
//! of `stride train`) that predicts and shows its feature maps, or a zoo network without weights
//! that shows its layer table only.
//!
//! ```text
//! upload ─ decode ─ picture_for_model ─ prepare_picture ─┬─ feature_maps (every layer with maps)
//!                   [C, H, W] in [0, 1]   [1, C, H, W]    └─ top_k (softmax, most probable first)
//! ```
//!
//! The preprocessing is `stride predict`'s (resize, grey for one channel, inverted when the
//! border is light, normalised); the pictures are `stride show`'s grids (`stride-viz`), sent as
//! PNG inside JSON. The network sits behind a mutex: its forward pass takes `&mut self`.

use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use base64::Engine as _;
use image::{DynamicImage, ImageFormat, RgbImage};
use serde::Serialize;
use stride_data::image_io::picture_for_model;
use stride_nn::module::{LayerSummary, Module, summarize};
use stride_train::RunConfig;
use stride_train::classify::{Invert, prepare_picture, top_k};
use stride_train::run_dir::{model_from_weights, open_model};
use stride_viz::colormap::value_range;
use stride_viz::feature_maps::{MapScale, feature_map_grid, feature_maps, volume};
use stride_viz::filters::{FilterChannels, conv_filters, filter_grid};
use stride_viz::render::input_picture;
use stride_zoo::BuildOptions;

use crate::Error;
use crate::upload::{MAX_PIXELS, MAX_UPLOAD_BYTES};

/// The LeNet-5 that `stride train lenet5` made on Fashion-MNIST (README, "See it in a browser"):
/// the final weights of the run, with its config in the safetensors header.
pub const SHIPPED_WEIGHTS: &[u8] = include_bytes!("../assets/lenet5-fashion-mnist/weights.safetensors");
/// Where those weights live in the repository, for messages and the page.
pub const SHIPPED_PATH: &str = "crates/serve/assets/lenet5-fashion-mnist/weights.safetensors";
/// The metrics of the run that made them, one row per epoch (`metrics.csv` of `stride train`).
pub const SHIPPED_METRICS: &str = include_str!("../assets/lenet5-fashion-mnist/metrics.csv");

/// The shipped run's last epoch and its test accuracy (a fraction), from [`SHIPPED_METRICS`].
pub fn shipped_test_accuracy() -> Option<(usize, f64)> {
    let mut lines = SHIPPED_METRICS.lines();
    let header: Vec<&str> = lines.next()?.split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name);
    let (epoch, accuracy) = (column("epoch")?, column("test_accuracy")?);
    let last: Vec<&str> = lines.rfind(|l| !l.trim().is_empty())?.split(',').collect();
    Some((last.get(epoch)?.parse().ok()?, last.get(accuracy)?.parse().ok()?))
}

/// How many classes a prediction lists.
pub const TOP: usize = 5;

/// A network and what the page shows of it.
pub struct ServedModel {
    info: ModelInfo,
    trained: Option<Trained>,
}

struct Trained {
    config: RunConfig,
    network: Mutex<Box<dyn Module>>,
}

/// `GET /api/model`: what the page shows before any picture.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// The zoo name (`lenet5`).
    pub name: String,
    /// One line: `lenet5 trained on fashion-mnist`, or the zoo's summary.
    pub title: String,
    /// Where the weights came from, or that there are none.
    pub source: String,
    /// Whether `POST /api/predict` answers (a zoo network without weights does not).
    pub predicts: bool,
    pub dataset: Option<String>,
    pub classes: Vec<String>,
    /// `[C, H, W]`.
    pub input: [usize; 3],
    /// `W×H×C`, as the page writes volumes.
    pub input_volume: String,
    pub layers: Vec<LayerRow>,
    pub parameters: usize,
    pub mult_adds: u64,
    pub output: String,
    pub filters: Option<Picture>,
    pub limits: Limits,
}

/// One row of the layer table (`stride summary`'s).
#[derive(Debug, Clone, Serialize)]
pub struct LayerRow {
    pub path: String,
    pub layer: String,
    /// W2×H2×D2 for a volume, the length for a vector.
    pub output: String,
    pub parameters: usize,
    pub mult_adds: u64,
    /// The size rule dropped a remainder.
    pub floored: bool,
}

/// A picture for the page: a PNG as a `data:` URL, what it shows, and its value range.
#[derive(Debug, Clone, Serialize)]
pub struct Picture {
    /// The layer's path (`conv1`).
    pub path: String,
    /// `28×28×6` for maps, `6×1×5×5` (K×C×F×F) for filters.
    pub shape: String,
    /// The layer as PyTorch prints it.
    pub layer: String,
    /// The values at the two ends of the picture's scale.
    pub low: f32,
    pub high: f32,
    pub png: String,
}

/// The upload limits, so the page can refuse a large file before sending it.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_pixels: u64,
}

/// `POST /api/predict`: the answer for one picture.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// The most probable classes, most probable first.
    pub top: Vec<ClassProbability>,
    /// Whether the picture was inverted (a light background, as `stride predict` does).
    pub inverted: bool,
    /// The picture as the network sees it (its input size, grey for one channel).
    pub input: String,
    /// Every layer with feature maps, in forward order.
    pub layers: Vec<Picture>,
    pub milliseconds: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassProbability {
    pub class: usize,
    pub name: String,
    pub probability: f32,
}

/// A failure while predicting that is the server's, not the upload's (HTTP 500).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PredictError(pub String);

impl From<stride_train::Error> for PredictError {
    fn from(e: stride_train::Error) -> Self {
        PredictError(e.to_string())
    }
}

impl From<stride_viz::Error> for PredictError {
    fn from(e: stride_viz::Error) -> Self {
        PredictError(e.to_string())
    }
}

impl From<stride_data::Error> for PredictError {
    fn from(e: stride_data::Error) -> Self {
        PredictError(e.to_string())
    }
}

/// `W×H×C` of a summary's output `[1, C, H, W]`, or the length of `[1, N]`.
fn output_volume(dims: &[usize]) -> String {
    match dims {
        [_, d, h, w] => format!("{w}×{h}×{d}"),
        [_, n] => n.to_string(),
        other => other.iter().skip(1).map(usize::to_string).collect::<Vec<_>>().join("×"),
    }
}

/// `data:image/png;base64,…`
pub fn png_data_url(picture: &RgbImage) -> Result<String, Error> {
    let mut bytes = Vec::new();
    picture
        .write_to(&mut std::io::Cursor::new(&mut bytes), ImageFormat::Png)
        .map_err(|e| Error::Png(e.to_string()))?;
    Ok(format!("data:image/png;base64,{}", base64::engine::general_purpose::STANDARD.encode(bytes)))
}

fn rows(summary: Vec<LayerSummary>) -> Vec<LayerRow> {
    summary
        .into_iter()
        .map(|r| LayerRow {
            output: output_volume(&r.output),
            path: r.path,
            layer: r.layer,
            parameters: r.parameters,
            mult_adds: r.mult_adds,
            floored: r.floored,
        })
        .collect()
}

const LIMITS: Limits = Limits { max_bytes: MAX_UPLOAD_BYTES, max_pixels: MAX_PIXELS };

impl ServedModel {
    /// The LeNet-5 shipped with stride, trained on Fashion-MNIST ([`SHIPPED_WEIGHTS`]).
    pub fn shipped() -> Result<ServedModel, Error> {
        let (config, network) = model_from_weights(SHIPPED_WEIGHTS, SHIPPED_PATH)?;
        let accuracy = match shipped_test_accuracy() {
            Some((epochs, accuracy)) => {
                format!("{:.2}% test accuracy after {epochs} epochs; ", 100.0 * accuracy)
            }
            None => String::new(),
        };
        let source = format!("the LeNet-5 shipped with stride ({accuracy}{SHIPPED_PATH})");
        ServedModel::trained(config, network, source)
    }

    /// A model trained by `stride train`: its run directory, checkpoint.json or a weights file.
    pub fn checkpoint(path: &Path) -> Result<ServedModel, Error> {
        let (config, network) = open_model(path)?;
        ServedModel::trained(config, network, path.display().to_string())
    }

    /// A zoo network without weights: its layer table for its own input, nothing to predict.
    pub fn zoo(name: &str) -> Result<ServedModel, Error> {
        let info = stride_zoo::find(name)?;
        let options = BuildOptions { in_channels: info.input[0], classes: info.classes, seed: 0 };
        // Shapes only: no weight is drawn or written (VGG-16 has 138 million).
        let network = stride_nn::init::shape_only(|| info.build(&options))?;
        let [c, h, w] = info.input;
        let (summary, output) = summarize(network.as_ref(), &[1, c, h, w])?;
        Ok(ServedModel {
            info: ModelInfo {
                name: info.name.to_string(),
                title: format!("{}: {}", info.name, info.summary),
                source: format!(
                    "no trained weights: the layer table only ({}); `stride serve --checkpoint DIR` shows a \
                     network trained by `stride train`",
                    info.source
                ),
                predicts: false,
                dataset: None,
                classes: Vec::new(),
                input: info.input,
                input_volume: format!("{w}×{h}×{c}"),
                parameters: summary.iter().map(|r| r.parameters).sum(),
                mult_adds: summary.iter().map(|r| r.mult_adds).sum(),
                layers: rows(summary),
                output: output_volume(&output),
                filters: None,
                limits: LIMITS,
            },
            trained: None,
        })
    }

    fn trained(
        config: RunConfig,
        mut network: Box<dyn Module>,
        source: String,
    ) -> Result<ServedModel, Error> {
        let [c, h, w] = config.input;
        let (summary, output) = summarize(network.as_ref(), &[1, c, h, w])?;
        let filters = match conv_filters(network.as_mut(), None) {
            Ok(filters) => {
                let (grid, _) = filter_grid(&filters, FilterChannels::Auto)?;
                let (low, high) = value_range(filters.weight.data()).unwrap_or((0.0, 0.0));
                let shape = filters.weight.dims().iter().map(usize::to_string).collect::<Vec<_>>().join("×");
                let layer = summary.iter().find(|r| r.path == filters.path).map(|r| r.layer.clone());
                Some(Picture {
                    path: filters.path.clone(),
                    shape,
                    layer: layer.unwrap_or_default(),
                    low,
                    high,
                    png: png_data_url(&grid)?,
                })
            }
            // A network without convolutions has no filters to show.
            Err(_) => None,
        };
        let info = ModelInfo {
            name: config.model.clone(),
            title: format!("{} trained on {}", config.model, config.dataset),
            source,
            predicts: true,
            dataset: Some(config.dataset.clone()),
            classes: config.classes.clone(),
            input: config.input,
            input_volume: format!("{w}×{h}×{c}"),
            parameters: summary.iter().map(|r| r.parameters).sum(),
            mult_adds: summary.iter().map(|r| r.mult_adds).sum(),
            layers: rows(summary),
            output: output_volume(&output),
            filters,
            limits: LIMITS,
        };
        Ok(ServedModel { info, trained: Some(Trained { config, network: Mutex::new(network) }) })
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The prediction for a decoded picture, with every layer's feature maps; `None` for a
    /// network without weights.
    pub fn predict(&self, picture: &DynamicImage) -> Option<Result<Prediction, PredictError>> {
        let trained = self.trained.as_ref()?;
        Some(trained.predict(picture))
    }
}

impl Trained {
    fn predict(&self, picture: &DynamicImage) -> Result<Prediction, PredictError> {
        let start = Instant::now();
        let config = &self.config;
        let [c, h, w] = config.input;
        let image = picture_for_model(picture, c, h, w)?;
        let (input, inverted) = prepare_picture(config, image, Invert::Auto)?;
        let (maps, top) = {
            // A request that panicked while holding the network left it as it was: forward passes
            // in evaluation mode change nothing in it.
            let mut network = self.network.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let maps = feature_maps(network.as_mut(), &input, &[])?;
            let top = top_k(network.as_mut(), config, input.clone(), TOP.min(config.classes.len()))?;
            (maps, top)
        };
        let png = |picture: &RgbImage| png_data_url(picture).map_err(|e| PredictError(e.to_string()));
        let mut layers = Vec::with_capacity(maps.len());
        for m in &maps {
            let (grid, (low, high)) = feature_map_grid(m, MapScale::Layer)?;
            layers.push(Picture {
                path: m.path.clone(),
                shape: volume(&m.maps),
                layer: m.layer.clone(),
                low,
                high,
                png: png(&grid)?,
            });
        }
        Ok(Prediction {
            top: top
                .into_iter()
                .map(|p| ClassProbability { class: p.class, name: p.name, probability: p.probability })
                .collect(),
            inverted,
            input: png(&input_picture(&input, &config.mean, &config.std)?)?,
            layers,
            milliseconds: start.elapsed().as_secs_f64() * 1e3,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_run_is_described_by_its_metrics() {
        assert_eq!(shipped_test_accuracy(), Some((20, 0.9061)));
        let model = ServedModel::shipped().unwrap();
        let info = model.info();
        assert_eq!(info.name, "lenet5");
        assert_eq!(info.parameters, 61706);
        assert!(info.source.contains("90.61% test accuracy after 20 epochs"), "{}", info.source);
    }

    #[test]
    fn volumes_are_written_as_the_lecture_does() {
        assert_eq!(output_volume(&[1, 6, 28, 14]), "14×28×6");
        assert_eq!(output_volume(&[1, 120]), "120");
    }
}
