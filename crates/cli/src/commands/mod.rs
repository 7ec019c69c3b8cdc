//! The subcommands, one file each: its clap `Args` (with the long help that teaches) and a
//! `run(&Args, &mut impl Write) -> anyhow::Result<()>`.

pub mod bench;
pub mod conv1d;
pub mod filter;
pub mod shape;
