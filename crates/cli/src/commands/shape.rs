//! `stride shape`: the size rule worked through a stack of layers, without any data.
//!
//! `stride shape --input 3x227x227 conv:96:11:s4 pool:max:3:s2 conv:256:5:p2 fc:10` prints, for
//! every layer, its output volume, its parameters and the lecture's formula
//! `W2 = (W1 − F + 2P)/S + 1`, `D2 = K` with the numbers put in. The stack stops at the first
//! layer that does not fit, with the tensor core's shape error.

use std::fmt::Write as _;

use anyhow::{Context, Result, anyhow, bail};
use stride_tensor::geometry::{self, AxisParams, Rounding};
use stride_tensor::ops::conv::ConvSpec;
use stride_tensor::ops::pool::{PoolKind, PoolSpec};

pub const GRAMMAR: &str = "\
Layers (one argument each):
  conv:K:F[:sS][:pP][:dD][:gG]   K filters of size F (F×F, F×F×F), stride S, zero padding P,
                                 dilation D, groups G (defaults S=1 P=0 D=1 G=1)
  pool:max|avg:F[:sS][:pP]       max or average pooling, window F, stride S (default F), padding P
  gap                            global average pooling: every feature map becomes one value
  fc:N                           fully connected layer with N outputs (flattens the volume)";

/// One parsed layer of the grammar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayerSpec {
    Conv { filters: usize, size: usize, stride: usize, padding: usize, dilation: usize, groups: usize },
    Pool { kind: PoolKind, size: usize, stride: Option<usize>, padding: usize },
    GlobalAvgPool,
    FullyConnected { outputs: usize },
}

fn number(token: &str, what: &str, layer: &str) -> Result<usize> {
    token.parse::<usize>().map_err(|_| anyhow!("layer `{layer}`: {what} `{token}` is not a whole number"))
}

impl LayerSpec {
    pub fn parse(text: &str) -> Result<Self> {
        let parts: Vec<&str> = text.split(':').collect();
        match parts.as_slice() {
            ["conv", k, f, options @ ..] => {
                let (filters, size) = (number(k, "filter count K", text)?, number(f, "filter size F", text)?);
                let (mut stride, mut padding, mut dilation, mut groups) = (1, 0, 1, 1);
                for option in options {
                    let (key, value) = option.split_at(option.len().min(1));
                    let value = number(value, "option value", text)?;
                    match key {
                        "s" => stride = value,
                        "p" => padding = value,
                        "d" => dilation = value,
                        "g" => groups = value,
                        _ => bail!("layer `{text}`: unknown option `{option}` (use sS, pP, dD or gG)"),
                    }
                }
                Ok(LayerSpec::Conv { filters, size, stride, padding, dilation, groups })
            }
            ["pool", kind, f, options @ ..] => {
                let kind = match *kind {
                    "max" => PoolKind::Max,
                    "avg" => PoolKind::Avg,
                    other => bail!("layer `{text}`: pooling kind `{other}` is neither max nor avg"),
                };
                let size = number(f, "window size F", text)?;
                let (mut stride, mut padding) = (None, 0);
                for option in options {
                    let (key, value) = option.split_at(option.len().min(1));
                    let value = number(value, "option value", text)?;
                    match key {
                        "s" => stride = Some(value),
                        "p" => padding = value,
                        _ => bail!("layer `{text}`: unknown option `{option}` (use sS or pP)"),
                    }
                }
                Ok(LayerSpec::Pool { kind, size, stride, padding })
            }
            ["gap"] => Ok(LayerSpec::GlobalAvgPool),
            ["fc", n] => Ok(LayerSpec::FullyConnected { outputs: number(n, "output count N", text)? }),
            _ => bail!("layer `{text}` does not follow the grammar\n{GRAMMAR}"),
        }
    }
}

/// Parses `3x227x227` (C×H×W), `1x100` (C×W) or `2x16x16x16` (C×D×H×W).
pub fn parse_volume(text: &str) -> Result<Vec<usize>> {
    let dims: Vec<usize> = text
        .split(['x', '×'])
        .map(|t| t.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|_| anyhow!("input `{text}` is not a volume like 3x227x227 (C×H×W)"))?;
    if !(2..=4).contains(&dims.len()) {
        bail!("input `{text}` has {} sizes; give C×W, C×H×W or C×D×H×W", dims.len());
    }
    if dims.contains(&0) {
        bail!("input `{text}` has a zero size");
    }
    Ok(dims)
}

/// One row of the printed table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub layer: String,
    pub output: Vec<usize>,
    pub parameters: u64,
    pub explanation: String,
}

pub fn volume_text(v: &[usize]) -> String {
    v.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×")
}

/// Works the stack through; the rows up to the first bad layer, and its error if there is one.
pub fn walk(input: &[usize], layers: &[String]) -> (Vec<Row>, Option<anyhow::Error>) {
    let mut volume = input.to_vec();
    let mut rows = Vec::new();
    for (i, text) in layers.iter().enumerate() {
        let step = LayerSpec::parse(text).and_then(|layer| apply(&layer, &volume));
        match step.with_context(|| format!("layer {} `{text}` on input {}", i + 1, volume_text(&volume))) {
            Ok((output, parameters, explanation)) => {
                rows.push(Row { layer: text.clone(), output: output.clone(), parameters, explanation });
                volume = output;
            }
            Err(e) => return (rows, Some(e)),
        }
    }
    (rows, None)
}

/// Input and output symbols of each spatial axis, in the lecture's letters (its D is the
/// channel depth, so a volume's spatial depth is called Z here).
fn symbols(rank: usize) -> &'static [(&'static str, &'static str)] {
    match rank {
        1 => &[("W1", "W2")],
        2 => &[("H1", "H2"), ("W1", "W2")],
        _ => &[("Z1", "Z2"), ("H1", "H2"), ("W1", "W2")],
    }
}

/// `H2 = (H1 − F + 2P)/S + 1 = (227 − 11 + 2·0)/4 + 1 = 55; W2 = ...`, or `H2 = W2 = ...` when
/// every axis works out the same.
fn explain_axes(op: &str, axes: &[AxisParams]) -> Result<String> {
    let names = geometry::axis_names(axes.len());
    let syms = symbols(axes.len());
    let worked: Vec<String> = axes
        .iter()
        .zip(names)
        .map(|(a, name)| a.worked(op, name, Rounding::Floor))
        .collect::<Result<_, _>>()?;
    if worked.iter().all(|w| w == &worked[0]) && axes.iter().all(|a| a == &axes[0]) {
        let outs: Vec<&str> = syms.iter().map(|s| s.1).collect();
        return Ok(format!(
            "{} = {} = {}",
            outs.join(" = "),
            axes[0].rule(syms[syms.len() - 1].0),
            worked[0]
        ));
    }
    let parts: Vec<String> = axes
        .iter()
        .zip(syms)
        .zip(&worked)
        .map(|((a, (input, output)), w)| format!("{output} = {} = {w}", a.rule(input)))
        .collect();
    Ok(parts.join("; "))
}

fn apply(layer: &LayerSpec, volume: &[usize]) -> Result<(Vec<usize>, u64, String)> {
    let rank = volume.len() - 1;
    if rank == 0 && !matches!(layer, LayerSpec::FullyConnected { .. }) {
        bail!("needs a volume with spatial axes, but the previous fully connected layer made a vector");
    }
    match *layer {
        LayerSpec::Conv { filters, size, stride, padding, dilation, groups } => match rank {
            1 => conv::<1>(volume, filters, size, stride, padding, dilation, groups),
            2 => conv::<2>(volume, filters, size, stride, padding, dilation, groups),
            _ => conv::<3>(volume, filters, size, stride, padding, dilation, groups),
        },
        LayerSpec::Pool { kind, size, stride, padding } => {
            let stride = stride.unwrap_or(size);
            match rank {
                1 => pool::<1>(volume, kind, size, stride, padding),
                2 => pool::<2>(volume, kind, size, stride, padding),
                _ => pool::<3>(volume, kind, size, stride, padding),
            }
        }
        LayerSpec::GlobalAvgPool => {
            let mut out = vec![volume[0]];
            out.extend(std::iter::repeat_n(1, rank));
            Ok((out, 0, format!("each of the {} feature maps averaged to one value", volume[0])))
        }
        LayerSpec::FullyConnected { outputs } => {
            let inputs: u64 = volume.iter().map(|&d| d as u64).product();
            let parameters = inputs * outputs as u64 + outputs as u64;
            Ok((vec![outputs], parameters, format!("{inputs} inputs × {outputs} outputs + {outputs} biases")))
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn conv<const N: usize>(
    volume: &[usize],
    filters: usize,
    size: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    groups: usize,
) -> Result<(Vec<usize>, u64, String)> {
    let channels = volume[0];
    let spec = ConvSpec::<N>::new().stride(stride).padding(padding).dilation(dilation).groups(groups);
    let input = [&[1usize][..], volume].concat();
    // Each filter spans the full depth of its group; groups = 0 is rejected by the geometry.
    let depth = channels / groups.max(1);
    let weight = [&[filters, depth][..], &[size; N][..]].concat();
    let g = spec.geometry(&input, &weight)?;
    let axes: Vec<AxisParams> = (0..N).map(|i| g.axis(i)).collect();
    let text = format!("{}; D2 = K = {filters}", explain_axes("conv", &axes)?);
    let weights = filters as u64 * depth as u64 * (size as u64).pow(N as u32);
    Ok((g.output_shape().dims()[1..].to_vec(), weights + filters as u64, text))
}

fn pool<const N: usize>(
    volume: &[usize],
    kind: PoolKind,
    size: usize,
    stride: usize,
    padding: usize,
) -> Result<(Vec<usize>, u64, String)> {
    let spec = PoolSpec::<N>::new(size).stride(stride).padding(padding);
    let input = [&[1usize][..], volume].concat();
    let shape = spec.output_shape(kind, &input)?;
    let axes: Vec<AxisParams> = (0..N)
        .map(|i| AxisParams {
            input: volume[1 + i],
            kernel: size,
            stride,
            pad_begin: padding,
            pad_end: padding,
            dilation: 1,
        })
        .collect();
    let text = format!("{}; D2 = D1 = {}", explain_axes("pool", &axes)?, volume[0]);
    Ok((shape.dims()[1..].to_vec(), 0, text))
}

/// The whole report as printed by the command.
pub fn report(input: &[usize], rows: &[Row]) -> String {
    let mut out = String::new();
    let width = rows.iter().map(|r| r.layer.len()).max().unwrap_or(5).max(5);
    let vol_width = rows
        .iter()
        .map(|r| volume_text(&r.output).chars().count())
        .max()
        .unwrap_or(6)
        .max(volume_text(input).chars().count());
    let _ = writeln!(
        out,
        "{:>3}  {:<width$}  {:<vol_width$}  {:>12}  size rule",
        "#", "layer", "output", "parameters"
    );
    let _ = writeln!(out, "{:>3}  {:<width$}  {:<vol_width$}  {:>12}", "", "input", volume_text(input), "");
    let mut total = 0u64;
    for (i, row) in rows.iter().enumerate() {
        total += row.parameters;
        let _ = writeln!(
            out,
            "{:>3}  {:<width$}  {:<vol_width$}  {:>12}  {}",
            i + 1,
            row.layer,
            volume_text(&row.output),
            group_thousands(row.parameters),
            row.explanation
        );
    }
    let _ = writeln!(out, "total parameters: {}", group_thousands(total));
    out
}

pub(crate) use stride_nn::module::group_thousands;

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn alexnet_2012_stack() {
        let (rows, err) = walk(
            &[3, 227, 227],
            &layers(&[
                "conv:96:11:s4",
                "pool:max:3:s2",
                "conv:256:5:p2",
                "pool:max:3:s2",
                "conv:384:3:p1",
                "gap",
                "fc:1000",
            ]),
        );
        assert!(err.is_none(), "{err:?}");
        let outputs: Vec<_> = rows.iter().map(|r| r.output.clone()).collect();
        assert_eq!(
            outputs,
            vec![
                vec![96, 55, 55],
                vec![96, 27, 27],
                vec![256, 27, 27],
                vec![256, 13, 13],
                vec![384, 13, 13],
                vec![384, 1, 1],
                vec![1000]
            ]
        );
        assert_eq!(rows[0].parameters, 96 * 3 * 121 + 96);
        assert_eq!(
            rows[0].explanation,
            "H2 = W2 = (W1 − F + 2P)/S + 1 = (227 − 11 + 2·0)/4 + 1 = 55; D2 = K = 96"
        );
        assert_eq!(rows[6].parameters, 384 * 1000 + 1000);
    }

    #[test]
    fn stops_at_the_first_bad_layer_with_the_size_rule() {
        let (rows, err) =
            walk(&[1, 28, 28], &layers(&["conv:6:5", "pool:max:2", "conv:16:5", "pool:max:2", "conv:120:5"]));
        assert_eq!(rows.len(), 4);
        let message = format!("{:#}", err.unwrap());
        assert!(
            message.starts_with(
                "layer 5 `conv:120:5` on input 16×4×4: conv2d: kernel 5 does not fit in height 4"
            ),
            "{message}"
        );
        assert!(message.contains("⌊(4 + 2·0 − 1·(5−1) − 1)/1⌋ + 1 < 1"), "{message}");
    }

    #[test]
    fn grammar_errors() {
        assert!(
            format!("{:#}", LayerSpec::parse("conv:x:3").unwrap_err())
                .contains("filter count K `x` is not a whole number")
        );
        assert!(
            format!("{:#}", LayerSpec::parse("conv:8:3:q2").unwrap_err()).contains("unknown option `q2`")
        );
        assert!(format!("{:#}", LayerSpec::parse("pool:min:2").unwrap_err()).contains("neither max nor avg"));
        assert!(
            format!("{:#}", LayerSpec::parse("dense:10").unwrap_err())
                .contains("does not follow the grammar")
        );
        assert!(parse_volume("3x0x4").is_err());
        assert!(parse_volume("3").is_err());
        assert_eq!(parse_volume("1x100").unwrap(), vec![1, 100]);
    }

    #[test]
    fn channel_mismatch_in_groups() {
        let (_, err) = walk(&[6, 8, 8], &layers(&["conv:8:3:g4"]));
        assert!(format!("{:#}", err.unwrap()).contains("groups 4 must divide both the input channels (6)"));
    }

    #[test]
    fn conv_after_fc_is_an_error() {
        let (_, err) = walk(&[1, 8, 8], &layers(&["fc:10", "conv:4:3"]));
        assert!(format!("{:#}", err.unwrap()).contains("previous fully connected layer made a vector"));
    }

    #[test]
    fn one_and_three_dimensional_volumes() {
        let (rows, err) = walk(&[1, 100], &layers(&["conv:4:7:s2:p3", "pool:avg:2"]));
        assert!(err.is_none());
        assert_eq!(rows[1].output, vec![4, 25]);
        let (rows, err) = walk(&[2, 16, 16, 16], &layers(&["conv:8:3:p1", "pool:max:2", "gap"]));
        assert!(err.is_none());
        assert_eq!(rows[2].output, vec![8, 1, 1, 1]);
    }
}

const LONG_ABOUT: &str = "\
Work the size rule through a stack of layers, without any data.

For a convolution with K filters of spatial extent F, stride S and zero padding P over an input
volume W1 × H1 × D1, the output volume is

    W2 = (W1 − F + 2P)/S + 1,   H2 = (H1 − F + 2P)/S + 1,   D2 = K

(with dilation D the filter spans D·(F−1) + 1 inputs, and the division rounds down). Pooling
keeps the depth. Every layer prints its output volume, its parameters and the formula with its
numbers; a layer that does not fit stops the stack with the same error the library gives.

Example (AlexNet, 2012): stride shape --input 3x227x227 conv:96:11:s4 pool:max:3:s2 conv:256:5:p2";

/// Work the size rule W2 = (W1 − F + 2P)/S + 1 through a stack of layers.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT, after_long_help = GRAMMAR)]
pub struct Args {
    /// The input volume C×H×W (or C×W, C×D×H×W), e.g. 3x227x227
    #[arg(long, value_name = "CxHxW")]
    input: String,

    /// The layers, in order (see the grammar below)
    #[arg(value_name = "LAYER", required = true)]
    layers: Vec<String>,
}

pub fn run(args: &Args, out: &mut impl std::io::Write) -> Result<()> {
    let input = parse_volume(&args.input)?;
    let (rows, error) = walk(&input, &args.layers);
    write!(out, "{}", report(&input, &rows))?;
    match error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
