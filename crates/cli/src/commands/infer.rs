//! `stride infer`: a zoo network, with weights trained anywhere (a torchvision state_dict saved
//! as safetensors loads by name), on a stored input tensor; the output tensor is saved, so stride
//! and another framework can be compared on the same numbers.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use stride_nn::checkpoint::{load, load_tensors, save_tensors};
use stride_nn::module::Mode;
use stride_tensor::autograd::{Var, no_grad};
use stride_zoo::BuildOptions;

use super::set_threads;

const LONG_ABOUT: &str = "\
Run a network of the zoo on a stored input tensor and save its output.

--weights takes a safetensors file whose tensor names follow torchvision's state_dict (a run's
weights file from `stride train`, or PyTorch weights exported with
`safetensors.torch.save_file(model.state_dict(), \"weights.safetensors\")`); a missing, extra or
mis-shaped tensor is an error that lists each one. Without --weights the network keeps its
seeded initial weights.

--input is a safetensors file holding one f32 tensor [N, C, H, W] (or the one named by
--tensor); --output receives the network's output as the tensor `output`.";

/// Run a zoo network on a stored input tensor (NCHW, f32) and save the output tensor.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct Args {
    /// The model (`stride models` lists them)
    #[arg(long)]
    model: String,
    /// Weights by torchvision name (safetensors)
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// The input tensor file (safetensors)
    #[arg(long, value_name = "FILE")]
    input: PathBuf,
    /// Which tensor of --input to use [default: its only tensor]
    #[arg(long, value_name = "NAME")]
    tensor: Option<String>,
    /// Where to write the output tensor (safetensors)
    #[arg(long, value_name = "FILE")]
    output: PathBuf,
    /// Classes of the last layer [default: the model's own]
    #[arg(long)]
    classes: Option<usize>,
    /// Threads to compute with [default: all cores]
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    set_threads(args.threads)?;
    let info = stride_zoo::find(&args.model)?;
    let (mut tensors, _) = load_tensors(&args.input)?;
    let input = match &args.tensor {
        Some(name) => tensors.remove(name).with_context(|| {
            let names: Vec<&String> = tensors.keys().collect();
            format!("{} has no tensor {name:?}; it holds {names:?}", args.input.display())
        })?,
        None if tensors.len() == 1 => tensors.into_values().next().context("one tensor")?,
        None => {
            let names: Vec<&String> = tensors.keys().collect();
            bail!(
                "{} holds {} tensors {names:?}; choose one with --tensor",
                args.input.display(),
                names.len()
            )
        }
    };
    if input.rank() != 4 {
        bail!("the input must be [N, C, H, W], got {}", input.shape());
    }
    let options =
        BuildOptions { in_channels: input.dims()[1], classes: args.classes.unwrap_or(info.classes), seed: 0 };
    let mut net = info.build(&options)?;
    if let Some(weights) = &args.weights {
        load(net.as_mut(), weights)?;
    }
    net.output_shape(input.dims())?;
    net.fold_batch_norm()?;
    let started = std::time::Instant::now();
    let output = no_grad(|| net.forward(&Var::constant(input), Mode::Eval))?.value().clone();
    let seconds = started.elapsed().as_secs_f64();
    let shape = output.shape().clone();
    save_tensors(&BTreeMap::from([("output".to_string(), output)]), &args.output, HashMap::new())?;
    writeln!(
        out,
        "{}: output {shape} written to {} ({:.1} ms)",
        info.name,
        args.output.display(),
        1e3 * seconds
    )?;
    Ok(())
}
