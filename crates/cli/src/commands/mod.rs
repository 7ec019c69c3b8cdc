//! The subcommands, one file each: its clap `Args` (with the long help that teaches) and a
//! `run(&Args, &mut impl Write) -> anyhow::Result<()>`.

pub mod bench;
pub mod conv1d;
pub mod eval;
pub mod filter;
pub mod infer;
pub mod models;
pub mod predict;
pub mod serve;
pub mod shape;
pub mod show;
pub mod summary;
pub mod train;

use anyhow::{Context, Result, ensure};

/// A run stopped by Ctrl-C after saving its checkpoint: not a failure to report, but the exit
/// status 130 a shell expects of an interrupted program.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

/// Sizes the global thread pool the kernels run on (`None`: one thread per core). The process
/// runs one command, so the global pool is the one to size.
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(threads) = threads {
        ensure!(threads > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("cannot size the thread pool")?;
    }
    Ok(())
}
