//! Weights on disk as safetensors, under torchvision's state_dict names, so a file moves between
//! stride and PyTorch (`safetensors.torch.save_file(model.state_dict(), path)`) unchanged.
//!
//! Saving is atomic: the bytes go to `FILE.tmp` in the same directory, are synced, then renamed
//! over `FILE`, so an interrupted save never leaves a half file where a good one was. Loading
//! matches by name and reports every missing, unexpected or mis-shaped tensor at once.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use stride_tensor::{Error, Result, Tensor};

use crate::module::Module;

fn io_error(path: &Path, action: &str, e: impl std::fmt::Display) -> Error {
    Error::invalid("checkpoint", format!("cannot {action} {}: {e}", path.display()))
}

/// Whether a tensor is stored as a 64-bit integer, as PyTorch stores batch norm's batch counter.
fn is_counter(name: &str) -> bool {
    name.ends_with("num_batches_tracked")
}

/// The module's parameters and buffers by name, as little-endian f32 bytes.
fn state(module: &mut dyn Module) -> BTreeMap<String, (Vec<usize>, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut params = Vec::new();
    module.parameters("", &mut params);
    for (name, var) in params {
        let t = var.value();
        out.insert(name, (t.dims().to_vec(), t.data().iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    let mut buffers = Vec::new();
    module.buffers("", &mut buffers);
    for (name, t) in buffers {
        out.insert(name, (t.dims().to_vec(), t.data().iter().flat_map(|v| v.to_le_bytes()).collect()));
    }
    out
}

/// Writes the module's state to `path` (atomically), with string `metadata` in the header.
pub fn save(module: &mut dyn Module, path: &Path, metadata: HashMap<String, String>) -> Result<()> {
    let state = state(module);
    let mut views = Vec::with_capacity(state.len());
    let counters: BTreeMap<&String, Vec<u8>> = state
        .iter()
        .filter(|(name, _)| is_counter(name))
        .map(|(name, (_, bytes))| {
            let values = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64);
            (name, values.flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect();
    for (name, (shape, bytes)) in &state {
        let (dtype, bytes) = match counters.get(name) {
            Some(int_bytes) => (Dtype::I64, int_bytes),
            None => (Dtype::F32, bytes),
        };
        let view = TensorView::new(dtype, shape.clone(), bytes)
            .map_err(|e| Error::invalid("checkpoint", format!("tensor {name}: {e}")))?;
        views.push((name.clone(), view));
    }
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::invalid("checkpoint", format!("cannot encode {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` so that a reader sees either the old file or the whole new one: they
/// go to `path.tmp` in the same directory, are synced, then renamed over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_error(path, "write", e)
    })
}

/// Saves named f32 tensors (an optimiser's state, say) to `path` atomically.
pub fn save_tensors(
    tensors: &BTreeMap<String, Tensor>,
    path: &Path,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let bytes: Vec<(&String, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| (name, t.data().iter().flat_map(|v| v.to_le_bytes()).collect()))
        .collect();
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, t), (_, data)) in tensors.iter().zip(&bytes) {
        let view = TensorView::new(Dtype::F32, t.dims().to_vec(), data)
            .map_err(|e| Error::invalid("checkpoint", format!("tensor {name}: {e}")))?;
        views.push((name.clone(), view));
    }
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|e| Error::invalid("checkpoint", format!("cannot encode {}: {e}", path.display())))?;
    write_atomic(path, &bytes)
}

/// Reads every tensor of a safetensors file as f32 (64-bit integers, such as PyTorch's batch
/// counters, are converted), with the file's metadata.
pub fn load_tensors(path: &Path) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| io_error(path, "read", e))?;
    read_tensors(&bytes, &path.display().to_string())
}

/// [`load_tensors`] from the bytes of a safetensors file held in memory (weights embedded in a
/// program, say); `source` names them in errors.
pub fn read_tensors(
    bytes: &[u8],
    source: &str,
) -> Result<(BTreeMap<String, Tensor>, HashMap<String, String>)> {
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::invalid("checkpoint", format!("{source} is not a safetensors file: {e}")))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::invalid("checkpoint", format!("{source}: unreadable header: {e}")))?;
    let mut out = BTreeMap::new();
    for (name, view) in file.tensors() {
        let values = match view.dtype() {
            Dtype::F32 => {
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
            }
            Dtype::I64 => view
                .data()
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
                .collect(),
            other => {
                return Err(Error::invalid(
                    "checkpoint",
                    format!("{source}: tensor {name} is stored as {other:?}; stride reads F32 and I64"),
                ));
            }
        };
        out.insert(name, Tensor::new(view.shape().to_vec(), values)?);
    }
    Ok((out, header.metadata().clone().unwrap_or_default()))
}

/// Loads the tensors of `path` into the module by name. Every parameter and buffer must be in
/// the file with the same shape, and the file must hold nothing else; otherwise nothing is
/// changed and the error lists each problem. Returns the file's metadata.
pub fn load(module: &mut dyn Module, path: &Path) -> Result<HashMap<String, String>> {
    let (tensors, metadata) = load_tensors(path)?;
    assign(module, tensors, &path.display().to_string())?;
    Ok(metadata)
}

/// Sets the module's parameters and buffers from `tensors` by name, under the rules of [`load`];
/// `source` names where they came from in the error.
pub fn assign(module: &mut dyn Module, mut tensors: BTreeMap<String, Tensor>, source: &str) -> Result<()> {
    let mut problems = String::new();
    let expected = state(module);
    for (name, (shape, _)) in &expected {
        match tensors.get(name) {
            None => {
                let _ = writeln!(problems, "  missing: {name} {shape:?}");
            }
            Some(t) if t.dims() != shape.as_slice() => {
                let _ = writeln!(
                    problems,
                    "  {name}: file has shape {:?}, the model expects {shape:?}",
                    t.dims()
                );
            }
            Some(_) => {}
        }
    }
    for name in tensors.keys().filter(|n| !expected.contains_key(*n)) {
        let _ = writeln!(problems, "  unexpected: {name}");
    }
    if !problems.is_empty() {
        return Err(Error::shape(
            "checkpoint",
            format!("{source} does not fit the model:\n{}", problems.trim_end()),
        ));
    }
    let mut params = Vec::new();
    module.parameters("", &mut params);
    for (name, var) in params {
        if let Some(t) = tensors.remove(&name) {
            *var = stride_tensor::autograd::Var::parameter(t);
        }
    }
    let mut buffers = Vec::new();
    module.buffers("", &mut buffers);
    for (name, buffer) in buffers {
        if let Some(t) = tensors.remove(&name) {
            *buffer = t;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use stride_tensor::ops::conv::ConvSpec;

    use super::*;
    use crate::layers::{Conv2d, Linear};
    use crate::module::Sequential;
    use crate::norm::BatchNorm2d;

    fn net(seed: f32) -> Sequential {
        let w = Tensor::from_fn([4, 1, 3, 3], |i| seed + i[0] as f32 - i[3] as f32).unwrap();
        Sequential::new(vec![
            Box::new(Conv2d::from_parts(w, None, ConvSpec::new()).unwrap()),
            Box::new(BatchNorm2d::new(4).unwrap()),
            Box::new(
                Linear::from_parts(Tensor::full([2, 3], seed).unwrap(), Some(Tensor::zeros([2]).unwrap()))
                    .unwrap(),
            ),
        ])
    }

    #[test]
    fn round_trip_restores_every_parameter_and_buffer() {
        let dir = std::env::temp_dir().join(format!("stride-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("model.safetensors");
        let mut a = net(1.0);
        // Running statistics that differ from the fresh model's, so buffers are really restored.
        let mut buffers = Vec::new();
        a.buffers("", &mut buffers);
        *buffers[0].1 = Tensor::full([4], 0.5).unwrap();
        drop(buffers);
        save(&mut a, &path, HashMap::from([("epoch".to_string(), "3".to_string())])).unwrap();
        assert!(!dir.join("model.safetensors.tmp").exists());
        let (tensors, _) = load_tensors(&path).unwrap();
        let optimizer_path = dir.join("optimizer.safetensors");
        save_tensors(&tensors, &optimizer_path, HashMap::new()).unwrap();
        assert_eq!(load_tensors(&optimizer_path).unwrap().0, tensors);
        let mut b = net(5.0);
        let metadata = load(&mut b, &path).unwrap();
        assert_eq!(metadata["epoch"], "3");
        assert_eq!(state(&mut a), state(&mut b));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A PyTorch state_dict (tools/gen_checkpoint_fixture.py) loads by name, int64 batch counter
    /// included, and saves back in the same layout.
    #[test]
    fn a_pytorch_state_dict_loads_by_name() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_conv_bn_linear.safetensors");
        let mut model = net(9.0);
        let metadata = load(&mut model, &path).unwrap();
        assert_eq!(metadata["generator"], "tools/gen_checkpoint_fixture.py");
        let mut buffers = Vec::new();
        model.buffers("", &mut buffers);
        assert!((buffers[0].1.data()[0] - 0.025_506_208).abs() < 1e-7, "1.running_mean");
        assert_eq!(buffers[2].1.item().unwrap(), 1.0, "1.num_batches_tracked");
        drop(buffers);
        let params = crate::module::named_parameters(&mut model);
        assert!((params[0].1.value().data()[1] - 0.178_814_53).abs() < 1e-7, "0.weight");
        drop(params);
        let dir = std::env::temp_dir().join(format!("stride-ckpt-torch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let again = dir.join("again.safetensors");
        save(&mut model, &again, HashMap::new()).unwrap();
        let bytes = std::fs::read(&again).unwrap();
        let file = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(file.tensor("1.num_batches_tracked").unwrap().dtype(), Dtype::I64);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mismatches_are_listed_and_nothing_is_changed() {
        let dir = std::env::temp_dir().join(format!("stride-ckpt-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("other.safetensors");
        let mut other = Sequential::new(vec![
            Box::new(
                Conv2d::from_parts(Tensor::zeros([8, 1, 3, 3]).unwrap(), None, ConvSpec::new()).unwrap(),
            ),
            Box::new(Linear::from_parts(Tensor::zeros([2, 3]).unwrap(), None).unwrap()),
        ]);
        save(&mut other, &path, HashMap::new()).unwrap();
        let mut model = net(1.0);
        let before = state(&mut model);
        let err = load(&mut model, &path).unwrap_err().to_string();
        assert!(
            err.contains("0.weight: file has shape [8, 1, 3, 3], the model expects [4, 1, 3, 3]"),
            "{err}"
        );
        assert!(err.contains("missing: 1.running_mean [4]"), "{err}");
        assert!(err.contains("missing: 2.bias [2]"), "{err}");
        assert_eq!(state(&mut model), before);
        std::fs::write(&path, b"not a checkpoint").unwrap();
        assert!(load(&mut model, &path).unwrap_err().to_string().contains("is not a safetensors file"));
        assert!(
            load(&mut model, &dir.join("absent.safetensors"))
                .unwrap_err()
                .to_string()
                .contains("cannot read")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
