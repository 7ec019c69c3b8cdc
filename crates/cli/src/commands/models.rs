//! `stride models`: the model zoo's registry, one line per network.

use std::io::Write;

use anyhow::Result;

/// List the networks stride ships, with their input size, classes and parameter count.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_: &Args, out: &mut impl Write) -> Result<()> {
    writeln!(out, "{:<10} {:>10} {:>8} {:>12}  description", "name", "input", "classes", "parameters")?;
    for m in stride_zoo::registry() {
        let [c, h, w] = m.input;
        writeln!(
            out,
            "{:<10} {:>10} {:>8} {:>12}  {}",
            m.name,
            format!("{c}×{h}×{w}"),
            m.classes,
            m.parameters,
            m.summary
        )?;
        writeln!(out, "{:<10} {:>10} {:>8} {:>12}  source: {}", "", "", "", "", m.source)?;
    }
    Ok(())
}
