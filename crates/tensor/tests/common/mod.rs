//! Loader and comparison for the PyTorch golden fixtures in `tests/fixtures/`.
//!
//! `tools/gen_fixtures.py` writes one safetensors file per family. Each case stores
//! `{case}/input`, `{case}/weight` and `{case}/bias` when the op has them, and `{case}/output`, all
//! f32 in PyTorch's layout (`[N, C, *spatial]`, as stride's). The file's `__metadata__` holds
//! `cases`, a JSON list giving each case's `name`, `op`, the PyTorch `call` that produced the
//! output and its parameters as fields, which the tests turn into stride calls.
//!
//! A result passes when every element satisfies `|got − expected| ≤ 1e-5 + 1e-4·|expected|`.

// Each test binary (golden.rs, golden_pool.rs) compiles its own copy of this module and reads
// different parameter kinds, so some accessors go unused in one of them.
#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use safetensors::{Dtype, SafeTensors};
use serde_json::{Map, Value};
use stride_tensor::Tensor;

pub const GENERATOR: &str = "tools/gen_fixtures.py";
pub const ABS_TOL: f32 = 1e-5;
pub const REL_TOL: f32 = 1e-4;

/// One fixture file: its metadata, its cases and its tensors by name.
pub struct Fixture {
    pub path: PathBuf,
    pub metadata: HashMap<String, String>,
    pub cases: Vec<Case>,
    tensors: HashMap<String, Tensor>,
}

/// One recorded PyTorch call and its parameters.
pub struct Case {
    pub name: String,
    pub op: String,
    pub call: String,
    fields: Map<String, Value>,
}

impl Fixture {
    /// Reads `tests/fixtures/{family}.safetensors`; panics naming the file and the problem, since
    /// a missing or malformed fixture is a broken checkout, not a test result.
    pub fn load(family: &str) -> Fixture {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(format!("{family}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!("cannot read {}: {e} (regenerate it with python {GENERATOR})", path.display())
        });
        let (_, header) = SafeTensors::read_metadata(&bytes)
            .unwrap_or_else(|e| panic!("{}: not a safetensors file: {e:?}", path.display()));
        let metadata = header.metadata().clone().unwrap_or_default();
        let file = SafeTensors::deserialize(&bytes)
            .unwrap_or_else(|e| panic!("{}: not a safetensors file: {e:?}", path.display()));

        let mut tensors = HashMap::new();
        for (name, view) in file.tensors() {
            assert_eq!(
                view.dtype(),
                Dtype::F32,
                "{}: tensor {name} is {:?}, expected F32",
                path.display(),
                view.dtype()
            );
            let data =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            let tensor = Tensor::new(view.shape().to_vec(), data)
                .unwrap_or_else(|e| panic!("{}: tensor {name}: {e}", path.display()));
            tensors.insert(name, tensor);
        }

        let cases_json = metadata
            .get("cases")
            .unwrap_or_else(|| panic!("{}: __metadata__ has no `cases`", path.display()));
        let parsed: Vec<Map<String, Value>> = serde_json::from_str(cases_json)
            .unwrap_or_else(|e| panic!("{}: `cases` is not a JSON list of objects: {e}", path.display()));
        let cases = parsed
            .into_iter()
            .map(|fields| {
                let text = |key: &str| match fields.get(key) {
                    Some(Value::String(s)) => s.clone(),
                    other => panic!("{}: a case has {key} = {other:?}, expected a string", path.display()),
                };
                Case { name: text("name"), op: text("op"), call: text("call"), fields }
            })
            .collect();
        Fixture { path, metadata, cases, tensors }
    }

    /// `{case}/{role}`, which the case must have.
    pub fn tensor(&self, case: &Case, role: &str) -> &Tensor {
        self.optional(case, role)
            .unwrap_or_else(|| panic!("{}: case {} has no tensor {role}", self.path.display(), case.name))
    }

    /// `{case}/{role}` if the case has it (a bias, for instance).
    pub fn optional(&self, case: &Case, role: &str) -> Option<&Tensor> {
        self.tensors.get(&format!("{}/{role}", case.name))
    }

    /// Checks the metadata and that cases and tensors match one to one: every case has an input
    /// and an output, and no tensor belongs to a case that is not listed.
    pub fn check_consistency(&self, known_ops: &[&str]) {
        let file = self.path.display();
        assert_eq!(self.metadata.get("generator").map(String::as_str), Some(GENERATOR), "{file}");
        assert!(self.metadata.get("torch").is_some_and(|v| !v.is_empty()), "{file}: no torch version");
        assert!(self.metadata.get("seed").is_some_and(|v| v.parse::<u64>().is_ok()), "{file}: no seed");
        assert!(!self.cases.is_empty(), "{file}: no cases");
        let mut names = BTreeSet::new();
        for case in &self.cases {
            assert!(names.insert(case.name.as_str()), "{file}: case {} appears twice", case.name);
            assert!(
                known_ops.contains(&case.op.as_str()),
                "{file}: case {} has unknown op {}",
                case.name,
                case.op
            );
            assert!(case.call.starts_with("F."), "{file}: case {} call {:?}", case.name, case.call);
            self.tensor(case, "input");
            self.tensor(case, "output");
        }
        for key in self.tensors.keys() {
            let (case, role) = key.rsplit_once('/').unwrap_or_else(|| panic!("{file}: tensor name {key}"));
            assert!(names.contains(case), "{file}: tensor {key} belongs to no listed case");
            assert!(["input", "weight", "bias", "output"].contains(&role), "{file}: tensor {key}");
        }
    }

    /// Runs every case that `select` picks through `run` and compares with the stored output.
    /// Panics listing all failing cases; returns how many cases were checked.
    pub fn check_all(
        &self,
        select: impl Fn(&Case) -> bool,
        run: impl Fn(&Fixture, &Case) -> Result<Tensor, String>,
    ) -> usize {
        let mut checked = 0;
        let mut failures = Vec::new();
        for case in self.cases.iter().filter(|c| select(c)) {
            checked += 1;
            let outcome = run(self, case).and_then(|got| compare(&got, self.tensor(case, "output")));
            if let Err(why) = outcome {
                failures.push(format!("{} `{}`: {why}", case.name, case.call));
            }
        }
        assert!(checked > 0, "{}: no case was selected", self.path.display());
        assert!(
            failures.is_empty(),
            "{} of {checked} cases from {} disagree with PyTorch (tolerance {ABS_TOL:e} + {REL_TOL:e}·|expected|):\n{}",
            failures.len(),
            self.path.display(),
            failures.join("\n")
        );
        checked
    }
}

impl Case {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    fn field(&self, key: &str) -> &Value {
        self.get(key).unwrap_or_else(|| panic!("case {} has no field {key}", self.name))
    }

    pub fn usize(&self, key: &str) -> usize {
        let value = self.field(key);
        value
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .unwrap_or_else(|| panic!("case {}: {key} = {value}, expected an unsigned integer", self.name))
    }

    /// A per-axis list with exactly `N` entries.
    pub fn usizes<const N: usize>(&self, key: &str) -> [usize; N] {
        let value = self.field(key);
        let list: Option<Vec<usize>> = value.as_array().and_then(|items| {
            items.iter().map(|v| v.as_u64().and_then(|v| usize::try_from(v).ok())).collect()
        });
        list.and_then(|list| <[usize; N]>::try_from(list).ok())
            .unwrap_or_else(|| panic!("case {}: {key} = {value}, expected {N} unsigned integers", self.name))
    }

    pub fn f32(&self, key: &str) -> f32 {
        let value = self.field(key);
        value.as_f64().unwrap_or_else(|| panic!("case {}: {key} = {value}, expected a number", self.name))
            as f32
    }

    /// A boolean field; absent means false (`flip`, `global` are only written when true).
    pub fn flag(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(value) => value
                .as_bool()
                .unwrap_or_else(|| panic!("case {}: {key} = {value}, expected true or false", self.name)),
        }
    }

    /// The number of spatial axes, from the op's `1d` / `2d` / `3d` suffix.
    pub fn spatial_rank(&self) -> usize {
        (1..=3)
            .find(|n| self.op.ends_with(&format!("{n}d")))
            .unwrap_or_else(|| panic!("case {}: op {} names no spatial rank", self.name, self.op))
    }
}

/// Whether `got` matches `expected` within the forward tolerance; see [`compare_within`].
pub fn compare(got: &Tensor, expected: &Tensor) -> Result<(), String> {
    compare_within(got, expected, ABS_TOL, REL_TOL)
}

/// Whether `|got − expected| ≤ abs + rel·|expected|` everywhere; on failure, says how many
/// elements are off and shows the worst one (largest error relative to its allowance) by
/// multi-index.
pub fn compare_within(got: &Tensor, expected: &Tensor, abs: f32, rel: f32) -> Result<(), String> {
    if got.dims() != expected.dims() {
        return Err(format!("shape {} but PyTorch gives {}", got.shape(), expected.shape()));
    }
    let mut bad = 0;
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&g, &e)) in got.data().iter().zip(expected.data()).enumerate() {
        let allowed = abs + rel * e.abs();
        // A NaN on either side would compare false everywhere and pass; it counts as the worst.
        let excess = match (g - e).abs() / allowed {
            excess if excess.is_nan() => f32::INFINITY,
            excess => excess,
        };
        if excess > 1.0 {
            bad += 1;
            if worst.is_none_or(|(_, w)| excess > w) {
                worst = Some((i, excess));
            }
        }
    }
    match worst {
        None => Ok(()),
        Some((i, _)) => {
            let (g, e) = (got.data()[i], expected.data()[i]);
            Err(format!(
                "{bad} of {} elements differ; worst at {:?}: got {g}, expected {e} (|diff| {:e} > {:e})",
                expected.numel(),
                multi_index(i, expected.dims()),
                (g - e).abs(),
                abs + rel * e.abs()
            ))
        }
    }
}

fn multi_index(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut index = vec![0; dims.len()];
    for (slot, &d) in index.iter_mut().zip(dims).rev() {
        *slot = flat % d;
        flat /= d;
    }
    index
}

/// Which of stride's two implementations a test runs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Path {
    Fast,
    Reference,
}

/// The convolution a case describes. PyTorch only correlates, so for `flip` cases the generator
/// flipped the weight itself; stride is asked for the true convolution instead.
pub fn conv_spec<const N: usize>(case: &Case) -> stride_tensor::ops::conv::ConvSpec<N> {
    use stride_tensor::ops::conv::{ConvSpec, KernelMode, Padding};
    let padding = match case.get("padding") {
        Some(serde_json::Value::String(mode)) if mode == "same" => Padding::Same,
        Some(other) => panic!("case {}: padding = {other}, expected \"same\"", case.name),
        None => Padding::asymmetric(case.usizes("padding_begin"), case.usizes("padding_end")),
    };
    let mode = if case.flag("flip") { KernelMode::Convolution } else { KernelMode::CrossCorrelation };
    ConvSpec::new()
        .stride(case.usizes::<N>("stride"))
        .padding(padding)
        .dilation(case.usizes::<N>("dilation"))
        .groups(case.usize("groups"))
        .mode(mode)
}

/// The pooling a case describes; fields an op does not take are absent and PyTorch's defaults
/// apply.
pub fn pool_spec<const N: usize>(case: &Case) -> Result<stride_tensor::ops::pool::PoolSpec<N>, String> {
    let padding = case.usizes::<N>("padding_begin");
    // PyTorch pools pad both sides alike; the file spells out both for uniformity with conv.
    if padding != case.usizes::<N>("padding_end") {
        return Err("asymmetric pooling padding cannot be expressed in PyTorch or stride".into());
    }
    let dilation = if case.get("dilation").is_some() { case.usizes::<N>("dilation") } else { [1; N] };
    let count_include_pad = case.get("count_include_pad").is_none() || case.flag("count_include_pad");
    let divisor_override = match case.get("divisor_override") {
        None | Some(serde_json::Value::Null) => None,
        Some(_) => Some(case.usize("divisor_override")),
    };
    Ok(stride_tensor::ops::pool::PoolSpec::<N>::new(case.usizes::<N>("kernel"))
        .stride(case.usizes::<N>("stride"))
        .padding(padding)
        .dilation(dilation)
        .ceil_mode(case.flag("ceil_mode"))
        .count_include_pad(count_include_pad)
        .divisor_override(divisor_override))
}
