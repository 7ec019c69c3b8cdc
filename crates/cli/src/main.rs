//! `stride`: the command line of the stride CNN framework.
//!
//! One subcommand per file under `commands/`; this file only parses and dispatches. Every command
//! writes to the stdout it is given and returns an `anyhow::Result`, so an error prints as
//! `error: <message>` (with its causes) and exits 1 instead of panicking.

mod commands;

/// Large tensors are allocated and freed on every layer call; mimalloc reuses the freed pages
/// instead of handing them back to the kernel, which glibc does for blocks this large (each
/// reuse would otherwise pay page faults again: ~8 ms for a 9 MiB buffer on these VMs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the same index in its v2 and v3 headers, which the sys
/// crate does not name).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// By default mimalloc hands freed memory back to the kernel 10 ms after its last use; a
/// training step frees and reallocates every activation some hundreds of ms later, and paid the
/// page faults and the kernel's zeroing of fresh pages again each time (7% of a ResNet-20 step).
/// Freed memory is kept for reuse instead: the process's peak is unchanged.
///
/// Transparent huge pages are declined too (`prctl(PR_SET_THP_DISABLE)`, what mimalloc's own
/// `MIMALLOC_ALLOW_THP=0` does, an option it reads only before `main`): with them the kernel
/// still cleared 2 MiB pages on the layer calls of a warm process (`clear_page_erms`: 9% of a
/// ResNet-20 3×3 convolution's forward and 7% of ResNet-18 inference in `perf`, under 1%
/// without) and the peak memory grew (ResNet-18 inference: 156 against 124 MiB).
fn keep_freed_memory() {
    // SAFETY: called first thing in `main`, before any other thread exists (the option setter
    // is not thread safe); -1 means "never purge".
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // SAFETY: a process-wide flag; no pointer is passed. Failure (an old kernel) only leaves
    // huge pages allowed.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0)
    };
}

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

/// stride: convolutional networks from the lecture, in Rust.
#[derive(Debug, Parser)]
#[command(name = "stride", version, propagate_version = true)]
enum Cli {
    Conv1d(commands::conv1d::Args),
    Filter(commands::filter::Args),
    Shape(commands::shape::Args),
    Bench(commands::bench::Args),
    Train(commands::train::Args),
    Eval(commands::eval::Args),
    Predict(commands::predict::Args),
    Models(commands::models::Args),
    Summary(commands::summary::Args),
    Infer(commands::infer::Args),
    Show(commands::show::Args),
    Serve(commands::serve::Args),
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    // A misspelt cap would otherwise be ignored silently, and a benchmark would time the
    // instruction set its user meant to exclude.
    if let Err(message) = stride_tensor::simd::max_isa_from_env() {
        eprintln!("error: {message}");
        return ExitCode::FAILURE;
    }
    let mut out = io::stdout().lock();
    let result = match cli {
        Cli::Conv1d(args) => commands::conv1d::run(&args, &mut out),
        Cli::Filter(args) => commands::filter::run(&args, &mut out),
        Cli::Shape(args) => commands::shape::run(&args, &mut out),
        Cli::Bench(args) => commands::bench::run(&args, &mut out),
        Cli::Train(args) => commands::train::run(&args, &mut out),
        Cli::Eval(args) => commands::eval::run(&args, &mut out),
        Cli::Predict(args) => commands::predict::run(&args, &mut out),
        Cli::Models(args) => commands::models::run(&args, &mut out),
        Cli::Summary(args) => commands::summary::run(&args, &mut out),
        Cli::Infer(args) => commands::infer::run(&args, &mut out),
        Cli::Show(args) => commands::show::run(&args, &mut out),
        Cli::Serve(args) => commands::serve::run(&args, &mut out),
    };
    match result.and_then(|()| Ok(out.flush()?)) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`stride conv1d | head -1`) is the reader's choice, not a failure.
        Err(e) if e.downcast_ref::<io::Error>().is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe) => {
            ExitCode::SUCCESS
        }
        Err(e) if e.downcast_ref::<commands::Interrupted>().is_some() => ExitCode::from(130),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
