//! `stride serve`: a local web page where a person draws or drops a picture and sees, live, what
//! a trained network makes of it (the server and the page are `stride-serve`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use stride_serve::{ServedModel, Server};

const LONG_ABOUT: &str = "\
A page in the browser that shows a trained network at work.

Open the address it prints. Draw on the canvas (light strokes on black, as Fashion-MNIST's
pictures are) or drop a PNG or JPEG on the page, and see, updated as you draw: the five most
probable classes, the picture as the network sees it (its input size, inverted when its
background is light, as `stride predict` does), the feature maps of every layer captioned with
the output volume W2×H2×D2, the first layer's filters, and the table of layer shapes.

Without --checkpoint it shows the LeNet-5 shipped with stride, trained by `stride train lenet5`
on Fashion-MNIST (the README says how to remake it). --checkpoint takes what `stride predict`
takes: a run directory of `stride train`, its checkpoint.json, or a weights file in it.
--model NAME shows a network of the zoo without weights: its layer table only.

It listens on 127.0.0.1 (this machine only) unless --host says otherwise; --port 0 picks a free
port. Uploads are limited to 8 MiB and 4096×4096 pixels; a request never reads a file. Ctrl-C
stops it.";

/// A local web page: draw or drop a picture, see the prediction, feature maps and filters live.
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct Args {
    /// A run directory, checkpoint.json or weights file of `stride train` [default: the shipped
    /// LeNet-5 trained on Fashion-MNIST]
    #[arg(long, value_name = "DIR", conflicts_with = "model")]
    checkpoint: Option<PathBuf>,
    /// A zoo network to show without weights: its layer table only (`stride models` lists them)
    #[arg(long, value_name = "NAME")]
    model: Option<String>,
    /// The port to listen on; 0 picks a free one
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The address to listen on: 127.0.0.1 is this machine only, 0.0.0.0 every network interface
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    host: String,
}

pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    let model = match (&args.checkpoint, &args.model) {
        (Some(checkpoint), _) => ServedModel::checkpoint(checkpoint)?,
        (None, Some(name)) => ServedModel::zoo(name)?,
        (None, None) => ServedModel::shipped()?,
    };
    // `::1` is written `[::1]` next to a port.
    let host = if args.host.contains(':') && !args.host.starts_with('[') {
        format!("[{}]", args.host)
    } else {
        args.host.clone()
    };
    let server = Server::bind(format!("{host}:{}", args.port), model)
        .map_err(|e| anyhow!("{e}; give another --port (0 picks a free one) or --host"))?;
    let stopper = server.stopper();
    ctrlc::set_handler(move || stopper.stop()).context("cannot install the Ctrl-C handler")?;
    writeln!(out, "{}: {}", server.model().info().title, server.model().info().source)?;
    writeln!(out, "serving on {} (Ctrl-C stops)", server.url())?;
    // Whoever started us (a person, a test reading the address) sees the address now.
    out.flush()?;
    server.run();
    writeln!(out, "stopped")?;
    Ok(())
}
