//! `stride conv1d`: the lecture's first convolution (Module 11.1), a weighted average over a noisy
//! sensor, `s_t = Σ_{a=0..F−1} x_{t−a} w_{−a}`.
//!
//! ```text
//! x [1, 1, n]   the signal x_0 .. x_{n−1}
//! k [1, 1, F]   k_a = w_{−a}: the table's weights w_{−(F−1)} .. w_0 read backwards
//! s [1, 1, n−F+1]  s_t for t = F−1 .. n−1 (only windows that fit: no padding)
//! ```
//!
//! The numbers come from `stride_tensor::ops::conv::conv1d` in `KernelMode::Convolution`, the
//! true convolution the formula writes; the printed weighted sums only explain them.

use std::io::Write;

use anyhow::{Context, Result, bail};
use stride_tensor::Tensor;
use stride_tensor::ops::conv::{ConvSpec, KernelMode, conv1d};

/// The sensor readings x_0 .. x_11 from the lecture's table, written as the slides write them.
const LECTURE_SIGNAL: &str = "1.00,1.10,1.20,1.40,1.70,1.80,1.90,2.10,2.20,2.40,2.50,2.70";
/// The weights w_−6 .. w_0 from the lecture's table (oldest reading first).
const LECTURE_KERNEL: &str = "0.01,0.01,0.02,0.02,0.04,0.4,0.5";
/// The row S of the lecture's last slide, s_6 .. s_11.
const SLIDES_RESULT: &str = "1.80 1.96 2.11 2.16 2.28 2.42";

const LONG_ABOUT: &str = "\
Slide a 1-D filter over a signal: the lecture's noisy-sensor example (Module 11.1).

A laser sensor tracks an aeroplane, but its readings x_t are noisy. Averaging the last few
readings gives a steadier estimate, and since recent readings matter more, the average is
weighted:

    s_t = Σ_{a=0..F−1} x_{t−a} · w_{−a}

The weight array w is the filter (or kernel). Sliding it along the signal and taking one
weighted sum per position is a convolution; each s_t needs the F readings up to x_t, so the
first output is s_{F−1}.

With no options this reproduces the lecture: w_−6 .. w_0 = 0.01 0.01 0.02 0.02 0.04 0.4 0.5
over x_0 .. x_11 = 1.00 1.10 1.20 1.40 1.70 1.80 1.90 2.10 2.20 2.40 2.50 2.70, giving
s_6 .. s_11. Each line shows the weighted sum that makes s_t.

The values are computed by stride's conv1d in KernelMode::Convolution: the textbook convolution,
whose kernel k_a = w_{−a} is flipped before sliding. Deep-learning libraries (PyTorch, and stride
by default) compute cross-correlation instead, Σ_f w_f · x_{o+f}, which is the same sum with the
weights in the table's order.";

/// Slide a 1-D filter over a signal (the lecture's noisy-sensor example).
#[derive(Debug, clap::Args)]
#[command(long_about = LONG_ABOUT)]
pub struct Args {
    /// The signal x_0 .. x_{n−1}, comma-separated, e.g. "1,2,3,4" [default: the lecture's readings]
    #[arg(long, value_name = "VALUES", allow_hyphen_values = true)]
    signal: Option<String>,

    /// The weights w_−(F−1) .. w_0 in the lecture's order (oldest reading first), comma-separated
    /// [default: 0.01,0.01,0.02,0.02,0.04,0.4,0.5]
    #[arg(long, value_name = "VALUES", allow_hyphen_values = true)]
    kernel: Option<String>,
}

/// A list of numbers as typed: the text is kept so the explanation shows `1.90`, not `1.9`.
struct Values {
    text: Vec<String>,
    values: Vec<f32>,
}

/// Parses `"1.00,1.10,..."`; `what` names the option in errors.
fn parse_values(what: &str, text: &str) -> Result<Values> {
    if text.trim().is_empty() {
        bail!("{what} {text:?} is empty; give comma-separated numbers, e.g. \"1,2,3\"");
    }
    let mut parsed = Values { text: Vec::new(), values: Vec::new() };
    for (i, item) in text.split(',').enumerate() {
        let item = item.trim();
        let position = i + 1;
        if item.is_empty() {
            bail!("{what} {text:?}: value {position} is empty");
        }
        let v: f32 = match item.parse() {
            Ok(v) => v,
            Err(_) => bail!("{what} {text:?}: value {position}, {item:?}, is not a number"),
        };
        if !v.is_finite() {
            bail!("{what} {text:?}: value {position}, {item:?}, is not a finite number");
        }
        parsed.text.push(item.to_string());
        parsed.values.push(v);
    }
    Ok(parsed)
}

/// A result rounded to 6 decimals without trailing zeros: f32 noise (1.8110001) stays out of
/// sight, exact values print as the lecture would write them.
fn format_value(v: f32) -> String {
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".to_string() } else { s.to_string() }
}

/// A factor of a printed product; negative ones in parentheses so `x×(-0.5)` reads unambiguously.
fn factor(text: &str) -> String {
    if text.starts_with('-') { format!("({text})") } else { text.to_string() }
}

pub fn run(args: &Args, out: &mut impl Write) -> Result<()> {
    let lecture = args.signal.is_none() && args.kernel.is_none();
    let signal = parse_values("--signal", args.signal.as_deref().unwrap_or(LECTURE_SIGNAL))?;
    let weights = parse_values("--kernel", args.kernel.as_deref().unwrap_or(LECTURE_KERNEL))?;
    let (n, f) = (signal.values.len(), weights.values.len());

    // The formula pairs x_{t−a} with w_{−a}: as a kernel indexed by a that is w read backwards,
    // and KernelMode::Convolution flips it back while sliding.
    let k: Vec<f32> = weights.values.iter().rev().copied().collect();
    let x = Tensor::new([1, 1, n], signal.values.clone())?;
    let w = Tensor::new([1, 1, f], k)?;
    let spec = ConvSpec::<1>::new().mode(KernelMode::Convolution);
    let s = conv1d(&x, &w, None, &spec).with_context(|| {
        format!("a {f}-tap kernel needs a signal at least {f} long, but the signal has {n} values")
    })?;

    if lecture {
        writeln!(
            out,
            "The lecture's noisy sensor (Module 11.1): s_t = Σ_{{a=0..{}}} x_{{t−a}} w_{{−a}}",
            f - 1
        )?;
    } else {
        writeln!(out, "s_t = Σ_{{a=0..{}}} x_{{t−a}} w_{{−a}}", f - 1)?;
    }
    let w_label = if f == 1 { "w_0".to_string() } else { format!("w_−{} .. w_0", f - 1) };
    let x_label = if n == 1 { "x_0".to_string() } else { format!("x_0 .. x_{}", n - 1) };
    let width = w_label.chars().count().max(x_label.chars().count());
    writeln!(out, "  {w_label:<width$} = {}", weights.text.join(" "))?;
    writeln!(out, "  {x_label:<width$} = {}", signal.text.join(" "))?;
    writeln!(out)?;
    for (o, &value) in s.data().iter().enumerate() {
        let t = o + f - 1;
        let terms: Vec<String> = (0..f)
            .map(|a| format!("{}×{}", factor(&signal.text[t - a]), factor(&weights.text[f - 1 - a])))
            .collect();
        writeln!(out, "s_{t} = {} = {}", terms.join(" + "), format_value(value))?;
    }
    writeln!(out)?;
    writeln!(
        out,
        "computed by stride_tensor::ops::conv::conv1d in KernelMode::Convolution (flipped kernel)"
    )?;
    if lecture {
        let rounded: Vec<String> = s.data().iter().map(|v| format!("{v:.2}")).collect();
        writeln!(
            out,
            "note: the slides show S = {SLIDES_RESULT}, rounded and partly wrong; to two decimals the sums are {}",
            rounded.join(" ")
        )?;
    }
    Ok(())
}
