//! `stride show`: pictures of what a trained network does, from a checkpoint of `stride train`:
//! its filters, the feature maps of a picture layer by layer, and two views of which part of the
//! picture its decision rests on (occlusion, saliency). The pictures are drawn by `stride-viz`.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use stride_nn::module::Module;
use stride_tensor::Tensor;
use stride_train::RunConfig;
use stride_train::classify::{Invert, prepare_image};
use stride_train::run_dir::open_model;
use stride_viz::feature_maps::{MapScale, feature_maps, render_feature_maps, volume};
use stride_viz::filters::{FilterChannels, conv_filters, render_filters};
use stride_viz::occlusion::{Occlusion, occlusion, render_occlusion};
use stride_viz::render::{format_value, input_picture, save_png};
use stride_viz::saliency::{render_saliency, saliency};

const LONG_ABOUT: &str = "\
Pictures of what a trained network does, each a PNG with a title, labels and a colour scale.

  stride show filters   CHECKPOINT [--layer PATH] -o FILE.png
  stride show maps      CHECKPOINT IMAGE [--layers PATH...] -o DIR
  stride show occlusion CHECKPOINT IMAGE [--patch N] [--stride N] -o FILE.png
  stride show saliency  CHECKPOINT IMAGE [--class K] -o FILE.png

CHECKPOINT is what `stride predict` takes: a run directory of `stride train`, its
checkpoint.json, or a weights file in it. A picture is prepared as `stride predict` prepares it
(resized to the model's input, grey for a one-channel model, inverted when its background is
light, normalised), and the pictures show it as the network sees it. Layers are named by their
paths, as `stride summary` lists them (conv1, layer1.0.conv1, inception3a.branch2.1.conv).";

/// Pictures of a trained network: filters, feature maps, occlusion and saliency maps.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct Args {
    #[command(subcommand)]
    picture: Picture,
}

const FILTERS_ABOUT: &str = "\
The filters of a convolution layer: what each of its neurons looks for.

A convolution layer's weight is [K, C, F, F]: K filters, each an F×F window over C input channels.
Each filter slides over its input and responds where the input looks like it, so the first layer's
filters show the elementary patterns the network detects: edges at various angles, colour blobs,
as in Krizhevsky et al.'s and Zeiler & Fergus's pictures of AlexNet and ZFNet.

Filters over 3 channels (a first layer on colour images) are drawn in colour, R, G, B. Otherwise
each (filter, input channel) is a tile, a row per filter and a column per channel, or with
`--channels mean` one tile per filter averaged over its channels (the default for layers with
more than 1024 such tiles). Each tile is scaled to its own smallest (black) and largest (white)
weight; the layer's whole range is written on the picture. Tiles are shown as applied: stride's
convolution is cross-correlation, as PyTorch's, so they are not flipped.";

/// A convolution layer's filters as a grid of tiles
#[derive(Debug, clap::Args)]
#[command(long_about = FILTERS_ABOUT)]
struct FiltersArgs {
    /// A run directory, its checkpoint.json, or a weights file of `stride train`
    checkpoint: PathBuf,
    /// The convolution layer, by its path (`stride summary MODEL` lists them) [default: the first]
    #[arg(long, value_name = "PATH")]
    layer: Option<String>,
    /// auto: colour for 3 input channels, else each channel (up to 1024 tiles), else mean
    #[arg(long, default_value = "auto", value_parser = ["auto", "colour", "each", "mean"])]
    channels: String,
    /// The PNG to write
    #[arg(short, long, value_name = "FILE.png")]
    output: PathBuf,
}

const MAPS_ABOUT: &str = "\
The feature maps of a picture, layer by layer: what each layer makes of it.

A layer turns its input volume into an output volume W2×H2×D2: D2 maps of W2×H2, one per filter
(or, after pooling and ReLU, one per channel of the input), with W2 = (W1 − F + 2P)/S + 1 by the
size rule. Each map shows where in the picture its filter responded: early maps follow edges and
strokes, later ones are coarser and respond to larger parts.

One PNG per layer is written into DIR, numbered in forward order (01-conv1.png, 02-relu1.png, …),
each titled with the layer's path, its output volume and its settings. By default every layer
with a four-dimensional output is drawn; --layers picks some by path. One colour scale serves all
maps of a layer (a map that barely responds is dark), or each map gets its own with --scale map.";

/// The feature maps of each layer for one picture, one PNG per layer
#[derive(Debug, clap::Args)]
#[command(long_about = MAPS_ABOUT)]
struct MapsArgs {
    #[command(flatten)]
    input: PictureInput,
    /// The layers to draw, by path (`stride summary MODEL` lists them) [default: all with maps]
    #[arg(long, value_name = "PATH", num_args = 1..)]
    layers: Vec<String>,
    /// layer: one colour scale per layer; map: each map scaled to its own range
    #[arg(long, default_value = "layer", value_parser = ["layer", "map"])]
    scale: String,
    /// The directory to write the PNGs into (created if needed)
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
}

const OCCLUSION_ABOUT: &str = "\
Which part of the picture the decision rests on, found by hiding parts of it (Zeiler & Fergus 2013).

A grey square of --patch × --patch pixels (grey: the training data's mean, which carries no
evidence) is slid over the picture by --stride pixels, and each occluded copy goes through the
network. Where hiding the square makes the predicted class (or --class K) less probable, the part
it hid mattered. The picture shows, at each pixel, the drop in the class's probability averaged
over the squares covering it, drawn over the image: red where the probability falls, blue where
it rises, white where nothing changes. The default patch is a seventh of the input's side, moved
by half a patch; the copies run in batches without recording gradients.";

/// The drop in the class's probability as a grey patch slides over the picture
#[derive(Debug, clap::Args)]
#[command(long_about = OCCLUSION_ABOUT)]
struct OcclusionArgs {
    #[command(flatten)]
    input: PictureInput,
    /// The side of the grey square, in the network's input pixels [default: a seventh of the side]
    #[arg(long)]
    patch: Option<usize>,
    /// How far the square moves between positions [default: half the patch]
    #[arg(long)]
    stride: Option<usize>,
    /// The class to watch, by number [default: the predicted class]
    #[arg(long, value_name = "K")]
    class: Option<usize>,
    /// The PNG to write
    #[arg(short, long, value_name = "FILE.png")]
    output: PathBuf,
}

const SALIENCY_ABOUT: &str = "\
Which pixels the class score is most sensitive to (Simonyan, Vedaldi & Zisserman 2014).

The gradient of the class's score (its logit, before the softmax) with respect to every input
pixel is computed by one backward pass through the network in evaluation mode; the picture shows,
at each pixel, the largest absolute gradient over the channels. A bright pixel is one where a
small change moves the score most: a first-order, noisy but cheap view of the evidence (occlusion
needs one forward pass per patch position). The class is the predicted one unless --class K.";

/// The gradient of the class score with respect to the input pixels
#[derive(Debug, clap::Args)]
#[command(long_about = SALIENCY_ABOUT)]
struct SaliencyArgs {
    #[command(flatten)]
    input: PictureInput,
    /// The class whose score is differentiated, by number [default: the predicted class]
    #[arg(long, value_name = "K")]
    class: Option<usize>,
    /// The PNG to write
    #[arg(short, long, value_name = "FILE.png")]
    output: PathBuf,
}

#[derive(Debug, clap::Subcommand)]
enum Picture {
    Filters(FiltersArgs),
    Maps(MapsArgs),
    Occlusion(OcclusionArgs),
    Saliency(SaliencyArgs),
}

/// A checkpoint and a picture for it.
#[derive(Debug, clap::Args)]
struct PictureInput {
    /// A run directory, its checkpoint.json, or a weights file of `stride train`
    checkpoint: PathBuf,
    /// A PNG or JPEG picture of any size
    image: PathBuf,
    /// auto: invert pictures whose border is mostly light (for MNIST-style models); yes; no
    #[arg(long, default_value = "auto", value_parser = ["auto", "yes", "no"])]
    invert: String,
}

/// A trained model, its config, and a prepared picture `[1, C, H, W]`.
struct Prepared {
    config: RunConfig,
    model: Box<dyn Module>,
    input: Tensor,
    inverted: bool,
}

impl PictureInput {
    fn prepare(&self) -> Result<Prepared> {
        let (config, model) = open_model(&self.checkpoint)?;
        let invert = match self.invert.as_str() {
            "yes" => Invert::Always,
            "no" => Invert::Never,
            _ => Invert::Auto,
        };
        let (input, inverted) = prepare_image(&config, &self.image, invert)?;
        Ok(Prepared { config, model, input, inverted })
    }
}

impl Prepared {
    fn class_name(&self, class: usize) -> String {
        self.config.classes.get(class).cloned().unwrap_or_else(|| class.to_string())
    }

    fn note(&self) -> &'static str {
        if self.inverted { " (picture inverted: light background)" } else { "" }
    }

    /// `--class K` checked against the model's classes, with their names.
    fn check_class(&self, class: Option<usize>) -> Result<()> {
        let classes = &self.config.classes;
        if let Some(k) = class
            && k >= classes.len()
        {
            bail!(
                "--class {k} is out of range: the model has {} classes, 0 ({}) to {} ({})",
                classes.len(),
                classes.first().map_or("", String::as_str),
                classes.len().saturating_sub(1),
                classes.last().map_or("", String::as_str)
            );
        }
        Ok(())
    }
}

pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    match &args.picture {
        Picture::Filters(args) => filters(args, out),
        Picture::Maps(args) => maps(args, out),
        Picture::Occlusion(args) => occlude(args, out),
        Picture::Saliency(args) => salient(args, out),
    }
}

fn filters(args: &FiltersArgs, out: &mut impl Write) -> Result<()> {
    let (_, mut model) = open_model(&args.checkpoint)?;
    let channels = match args.channels.as_str() {
        "colour" => FilterChannels::Colour,
        "each" => FilterChannels::Each,
        "mean" => FilterChannels::Mean,
        _ => FilterChannels::Auto,
    };
    let filters = conv_filters(model.as_mut(), args.layer.as_deref())?;
    let picture = render_filters(&filters, channels)?;
    save_png(&picture, &args.output)?;
    let [k, c, fh, fw] = [0, 1, 2, 3].map(|i| filters.weight.dims()[i]);
    writeln!(out, "{}: {k} filters of {c}×{fh}×{fw} → {}", filters.path, args.output.display())?;
    Ok(())
}

/// `NN-path.png`, numbered in forward order.
fn map_file(dir: &Path, index: usize, path: &str) -> PathBuf {
    dir.join(format!("{:02}-{path}.png", index + 1))
}

fn maps(args: &MapsArgs, out: &mut impl Write) -> Result<()> {
    let mut prepared = args.input.prepare()?;
    let all = feature_maps(prepared.model.as_mut(), &prepared.input, &args.layers)?;
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create the directory {}", args.output.display()))?;
    let scale = if args.scale == "map" { MapScale::EachMap } else { MapScale::Layer };
    writeln!(out, "{}{}", args.input.image.display(), prepared.note())?;
    let path_width = all.iter().map(|m| m.path.chars().count()).max().unwrap_or(0);
    let volume_width = all.iter().map(|m| volume(&m.maps).chars().count()).max().unwrap_or(0);
    for (index, maps) in all.iter().enumerate() {
        let file = map_file(&args.output, index, &maps.path);
        save_png(&render_feature_maps(maps, scale)?, &file)?;
        let volume = volume(&maps.maps);
        writeln!(out, "  {:<path_width$}  {volume:>volume_width$}  → {}", maps.path, file.display())?;
    }
    Ok(())
}

fn occlude(args: &OcclusionArgs, out: &mut impl Write) -> Result<()> {
    let mut prepared = args.input.prepare()?;
    prepared.check_class(args.class)?;
    let [h, w] = [prepared.input.dims()[2], prepared.input.dims()[3]];
    let mut settings = Occlusion::for_input(h, w);
    if let Some(patch) = args.patch {
        if patch > h.min(w) {
            bail!(
                "--patch {patch} is larger than the {w}×{h} input the network sees (every picture is resized \
                 to the model's input); give --patch {} or less",
                h.min(w)
            );
        }
        settings.patch = patch;
        settings.stride = (patch / 2).max(1);
    }
    if let Some(stride) = args.stride {
        settings.stride = stride;
    }
    settings.class = args.class;
    let map = occlusion(prepared.model.as_mut(), &prepared.input, &settings)?;
    let name = prepared.class_name(map.class);
    let picture = input_picture(&prepared.input, &prepared.config.mean, &prepared.config.std)?;
    save_png(&render_occlusion(&picture, &map, &name)?, &args.output)?;
    let (mut worst, mut at) = (0f32, None);
    for (i, &p) in map.occluded.data().iter().enumerate() {
        if map.probability - p > worst {
            worst = map.probability - p;
            at = Some((map.tops[i / map.lefts.len()], map.lefts[i % map.lefts.len()]));
        }
    }
    let effect = match at {
        Some((top, left)) => format!(
            "hiding the {p}×{p} patch at row {top}, column {left} lowers it most, by {}",
            format_value(worst),
            p = map.patch
        ),
        None => format!("no {p}×{p} patch lowers it", p = map.patch),
    };
    writeln!(
        out,
        "{}{}: {name} (class {}), p = {:.3}; {effect} → {}",
        args.input.image.display(),
        prepared.note(),
        map.class,
        map.probability,
        args.output.display(),
    )?;
    Ok(())
}

fn salient(args: &SaliencyArgs, out: &mut impl Write) -> Result<()> {
    let mut prepared = args.input.prepare()?;
    prepared.check_class(args.class)?;
    let map = saliency(prepared.model.as_mut(), &prepared.input, args.class)?;
    let name = prepared.class_name(map.class);
    let picture = input_picture(&prepared.input, &prepared.config.mean, &prepared.config.std)?;
    save_png(&render_saliency(&picture, &map, &name)?, &args.output)?;
    writeln!(
        out,
        "{}{}: {name} (class {}), score {}, p = {:.3} → {}",
        args.input.image.display(),
        prepared.note(),
        map.class,
        format_value(map.score),
        map.probability,
        args.output.display()
    )?;
    Ok(())
}
