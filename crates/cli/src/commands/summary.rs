//! `stride summary`: a zoo network layer by layer, through the size rule: each layer's path,
//! type, output volume, parameters and multiply-adds, then the totals.

use std::io::Write;

use anyhow::{Context, Result, bail};
use stride_nn::module::summarize;
use stride_zoo::BuildOptions;

use super::shape::group_thousands;

/// A network of the zoo layer by layer: output shapes, parameters, multiply-adds.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model (`stride models` lists them)
    model: String,
    /// The input volume C×H×W [default: the model's own]
    #[arg(long, value_name = "CxHxW")]
    input: Option<String>,
    /// Classes of the last layer [default: the model's own]
    #[arg(long)]
    classes: Option<usize>,
}

pub(crate) fn parse_volume(text: &str) -> Result<[usize; 3]> {
    let parts: Vec<&str> = text.split(['x', '×']).collect();
    let numbers: Vec<usize> = parts
        .iter()
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--input {text:?} is not C×H×W (for example 3x224x224)"))?;
    match numbers.as_slice() {
        [c, h, w] if *c > 0 && *h > 0 && *w > 0 => Ok([*c, *h, *w]),
        _ => bail!("--input {text:?} is not C×H×W with three positive numbers (for example 3x224x224)"),
    }
}

fn volume(shape: &[usize]) -> String {
    shape[1..].iter().map(usize::to_string).collect::<Vec<_>>().join("×")
}

pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    let info = stride_zoo::find(&args.model)?;
    let [c, h, w] = match &args.input {
        Some(text) => parse_volume(text)?,
        None => info.input,
    };
    let options = BuildOptions { in_channels: c, classes: args.classes.unwrap_or(info.classes), seed: 0 };
    // Shapes only: VGG-16's 138 million weights are never drawn nor written.
    let net = stride_nn::init::shape_only(|| info.build(&options))?;
    let (rows, output) = summarize(net.as_ref(), &[1, c, h, w])?;
    let path_width = rows.iter().map(|r| r.path.len()).max().unwrap_or(0).max("layer".len());
    let kind_width = rows.iter().map(|r| r.layer.len()).max().unwrap_or(0).clamp(4, 72);
    writeln!(out, "{} — {}; input {c}×{h}×{w}", info.name, info.summary)?;
    writeln!(
        out,
        "{:<path_width$}  {:<kind_width$}  {:>14}  {:>12}  {:>15}",
        "layer", "type", "output", "parameters", "mult-adds"
    )?;
    for r in &rows {
        let mut kind = r.layer.clone();
        if kind.chars().count() > kind_width {
            kind = kind.chars().take(kind_width - 1).collect::<String>() + "…";
        }
        let flag = if r.floored { "  floored: the size rule dropped a remainder" } else { "" };
        writeln!(
            out,
            "{:<path_width$}  {:<kind_width$}  {:>14}  {:>12}  {:>15}{flag}",
            r.path,
            kind,
            volume(&r.output),
            group_thousands(r.parameters as u64),
            group_thousands(r.mult_adds)
        )?;
    }
    let parameters: usize = rows.iter().map(|r| r.parameters).sum();
    let mult_adds: u64 = rows.iter().map(|r| r.mult_adds).sum();
    writeln!(
        out,
        "total: {} parameters, {} multiply-adds ({:.2} G) per image; output {}",
        group_thousands(parameters as u64),
        group_thousands(mult_adds),
        mult_adds as f64 / 1e9,
        volume(&output)
    )?;
    if let Some(biggest) = rows.iter().max_by_key(|r| r.parameters).filter(|_| parameters > 0) {
        writeln!(
            out,
            "largest layer: {} with {} parameters ({:.1}% of all)",
            biggest.path,
            group_thousands(biggest.parameters as u64),
            100.0 * biggest.parameters as f64 / parameters as f64
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volumes_and_numbers_read_and_print() {
        assert_eq!(parse_volume("3x224x224").unwrap(), [3, 224, 224]);
        assert_eq!(parse_volume("1×28×28").unwrap(), [1, 28, 28]);
        assert!(parse_volume("3x224").is_err());
        assert!(parse_volume("0x2x2").is_err());
        assert_eq!(group_thousands(138_357_544), "138,357,544");
    }
}
