//! What the end-to-end tests share: running the built binary and reading what it printed.

#![allow(dead_code)] // Each test file uses its own part.

use std::process::{Command, Output};

pub fn stride(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stride")).args(args).output().expect("the stride binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).expect("stdout is UTF-8")
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).expect("stderr is UTF-8")
}

/// Exit code 1 with one `error: ...` message containing `needle`, and no panic.
pub fn assert_fails_with(output: &Output, needle: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains(needle), "expected {needle:?} in {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(output.stdout.is_empty(), "nothing on stdout after an error: {}", stdout(output));
}
