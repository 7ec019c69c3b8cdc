//! `stride filter`: apply one of the lecture's 2-D kernels (blur, sharpen, edge) or a kernel of
//! your own to a PNG or JPEG, and save the feature map as an image.
//!
//! ```text
//! IN  [C, H, W]   C = 1 (grey) or 3 (colour), values in [0, 1]
//! OUT [C, H', W'] per channel, or [1, H', W'] with --depth; clamped to [0, 1] when saved
//! ```
//!
//! Loading, the kernels and the convolution live in `stride_data` (`image_io`, `filters`); this
//! file only reads the command line and reports what was done.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use stride_data::filters::{self, FilterMode, FilterSpec, Kernel};
use stride_data::image_io::{self, Format};

const LONG_ABOUT: &str = "\
Apply a 2-D convolution kernel to an image (Module 11.1) and save the result.

An image is a 2-D input; a small 2-D kernel slides over it and each position gives one output
value, a weighted sum of the pixel and its neighbours. The output is called a feature map. The
lecture's three kernels:

  blur      1,1,1; 1,1,1; 1,1,1  (divided by 9)
            each pixel becomes the mean of its 3×3 neighbourhood: noise and fine detail fade.
  sharpen   0,-1,0; -1,5,-1; 0,-1,0
            the pixel plus its difference from its four neighbours: flat areas stay (the weights
            sum to 1) and every change of intensity is exaggerated.
  edge      1,1,1; 1,-8,1; 1,1,1
            the neighbours minus eight times the pixel: the weights sum to 0, so flat areas go
            black and only the edges remain.

Or write your own with --kernel: rows separated by ';', values by ','. The sum is
cross-correlation, as in PyTorch and the lecture's toy example: the kernel is not flipped (the
three kernels above are symmetric, so for them it makes no difference).

A colour image is filtered channel by channel (R, G and B each get the kernel), so colour stays
colour. With --depth the kernel instead spans all channels, as a CNN filter does: the 2-D kernel
is repeated over the depth and the sums over R, G and B add up to a single-channel feature map
(three channels' worth: a blurred or sharpened colour photo comes out mostly white once clamped,
while edge responses, near 0 in flat areas, stay readable).

The output size follows O = ⌊(I + 2P − F)/S⌋ + 1 along each axis: --padding same (default) keeps
O = ⌈I/S⌉, --padding valid (P = 0) loses F − 1 pixels, --padding N adds N zero pixels on every
side; --stride S keeps every S-th position. Values are clamped to [0, 1] when saved, so the
negative half of an edge response shows as black.

A sample photo ships with the sources: crates/data/assets/astronaut.jpg (NASA, public domain).

Examples:
  stride filter edge crates/data/assets/astronaut.jpg edges.png
  stride filter blur --stride 2 crates/data/assets/astronaut.jpg small.jpg
  stride filter --kernel \"0,-1,0;-1,5,-1;0,-1,0\" --depth crates/data/assets/astronaut.jpg map.png";

const USAGE: &str = "stride filter [OPTIONS] <blur|sharpen|edge> <IN> <OUT>
       stride filter [OPTIONS] --kernel <ROWS> <IN> <OUT>";

/// Apply blur, sharpen, edge or your own kernel to a PNG/JPEG image.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT, override_usage = USAGE)]
pub struct Args {
    /// blur, sharpen or edge; with --kernel, the input image
    #[arg(value_name = "FILTER|IN")]
    first: PathBuf,

    /// The input image (.png, .jpg, .jpeg; a sample is crates/data/assets/astronaut.jpg); with
    /// --kernel, the output image
    #[arg(value_name = "IN|OUT")]
    second: PathBuf,

    /// The output image; its extension (.png, .jpg, .jpeg) chooses the format. Not given with --kernel
    #[arg(value_name = "OUT")]
    third: Option<PathBuf>,

    /// Your own kernel: rows separated by ';', values by ',', e.g. "0,-1,0;-1,5,-1;0,-1,0"
    #[arg(long, value_name = "ROWS", allow_hyphen_values = true)]
    kernel: Option<String>,

    /// One filter spanning all channels (the kernel repeated over the depth): a one-channel
    /// feature map instead of one filtered image per channel
    #[arg(long)]
    depth: bool,

    /// Zero padding: `same` keeps the size, `valid` adds none, N adds N pixels on every side
    #[arg(long, value_name = "same|valid|N", default_value = "same")]
    padding: String,

    /// Step between positions of the kernel; the output is about 1/N the size along each axis
    #[arg(long, value_name = "N", default_value_t = 1)]
    stride: usize,
}

/// The kernel and the two paths, from `FILTER IN OUT` or `--kernel ROWS IN OUT`.
fn resolve(args: &Args) -> Result<(Kernel, &Path, &Path)> {
    let names = Kernel::NAMES.join(", ");
    match (&args.kernel, &args.third) {
        (Some(text), None) => Ok((Kernel::parse(text)?, &args.first, &args.second)),
        (Some(_), Some(_)) => bail!(
            "give either a filter name or --kernel, not both (got {:?} and --kernel); \
             with --kernel pass only IN and OUT",
            args.first.to_string_lossy()
        ),
        (None, Some(output)) => {
            let name = args.first.to_string_lossy();
            match Kernel::named(&name) {
                Some(kernel) => Ok((kernel, &args.second, output)),
                None => {
                    bail!("unknown filter {name:?}; choose one of {names}, or give your own with --kernel")
                }
            }
        }
        (None, None) if Kernel::named(&args.first.to_string_lossy()).is_some() => bail!(
            "missing OUT after {:?}: give the path of the output image (.png, .jpg or .jpeg)",
            args.second.to_string_lossy()
        ),
        (None, None) => bail!("name a filter ({names}) before IN and OUT, or give your own with --kernel"),
    }
}

/// `W×H×D` of a `[C, H, W]` tensor, the lecture's way of writing volumes.
fn volume(dims: &[usize]) -> String {
    match dims {
        [c, h, w] => format!("{w}×{h}×{c}"),
        other => format!("{other:?}"),
    }
}

pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    let (kernel, input, output) = resolve(args)?;
    // Settle everything that can be wrong with the command line before reading the image.
    let padding = filters::parse_padding(&args.padding)?;
    Format::from_path(output)?;
    let mode = if args.depth { FilterMode::Depth } else { FilterMode::PerChannel };
    let spec = FilterSpec::new().padding(padding).stride(args.stride).mode(mode);

    let image = image_io::load_image(input)?;
    let filtered = filters::apply(&image, &kernel, &spec)?;
    image_io::save_image(output, &filtered)?;

    let how = match mode {
        FilterMode::PerChannel => "per channel".to_string(),
        FilterMode::Depth => match image.dims()[0] {
            1 => "spanning the one channel".to_string(),
            c => format!("spanning all {c} channels"),
        },
    };
    writeln!(
        out,
        "{} {} → {} {}: {kernel} {how}, padding {}, stride {}",
        input.display(),
        volume(image.dims()),
        output.display(),
        volume(filtered.dims()),
        args.padding.trim().to_ascii_lowercase(),
        args.stride
    )?;
    Ok(())
}
