//! Optimisers with PyTorch's semantics: SGD (momentum, dampening, Nesterov, weight decay), Adam
//! and AdamW.
//!
//! An optimiser updates named parameters (torchvision-style paths such as `features.0.weight`)
//! from the gradients their last backward pass accumulated, and keeps its state by those names,
//! so the state can be saved and restored with a checkpoint. A parameter without a gradient is
//! skipped, as in PyTorch. The update is in place when no graph still refers to the parameter.

use std::collections::BTreeMap;

use stride_tensor::autograd::Var;
use stride_tensor::{Error, Result, Tensor};

/// A parameter to update, by its path.
pub type NamedParameter<'a> = (&'a str, &'a mut Var);

/// Something that turns gradients into parameter updates.
pub trait Optimizer {
    /// Applies one update to every parameter that has a gradient, and clears the gradients.
    fn step(&mut self, parameters: &mut [NamedParameter<'_>]) -> Result<()>;
    fn learning_rate(&self) -> f32;
    fn set_learning_rate(&mut self, lr: f32);
    /// The state tensors by `parameter path` + `.` + `buffer name` (for checkpoints).
    fn state(&self) -> BTreeMap<String, Tensor>;
    /// Restores what [`Optimizer::state`] returned.
    fn load_state(&mut self, state: BTreeMap<String, Tensor>) -> Result<()>;
}

/// Replaces a parameter's value by `update(value, grad)`, in place when possible.
fn apply(
    name: &str,
    param: &mut Var,
    mut update: impl FnMut(&mut Tensor, &Tensor) -> Result<()>,
) -> Result<bool> {
    let Some(grad) = param.take_grad() else { return Ok(false) };
    if grad.shape() != param.value().shape() {
        return Err(Error::shape(
            "optimizer",
            format!("{name}: gradient {} for a parameter of shape {}", grad.shape(), param.value().shape()),
        ));
    }
    match param.value_mut() {
        Some(value) => update(value, &grad)?,
        None => {
            // A graph still holds the old value: give the parameter a fresh node instead.
            let mut value = param.value().clone();
            update(&mut value, &grad)?;
            *param = Var::parameter(value);
        }
    }
    Ok(true)
}

fn check_hyper(op: &str, name: &str, value: f32, range: std::ops::Range<f32>) -> Result<()> {
    if !value.is_finite() || !range.contains(&value) {
        return Err(Error::invalid(
            op,
            format!("{name} must be in [{}, {}), got {value}", range.start, range.end),
        ));
    }
    Ok(())
}

/// Stochastic gradient descent, `torch.optim.SGD`.
#[derive(Debug, Clone)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub dampening: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    momentum_buffers: BTreeMap<String, Tensor>,
}

impl Sgd {
    /// Plain SGD with learning rate `lr`; add momentum, Nesterov and weight decay with the
    /// builder methods.
    pub fn new(lr: f32) -> Result<Self> {
        check_hyper("sgd", "learning rate", lr, 0.0..f32::INFINITY)?;
        Ok(Sgd {
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            momentum_buffers: BTreeMap::new(),
        })
    }

    pub fn momentum(mut self, momentum: f32) -> Result<Self> {
        check_hyper("sgd", "momentum", momentum, 0.0..1.0)?;
        self.momentum = momentum;
        Ok(self)
    }

    pub fn dampening(mut self, dampening: f32) -> Result<Self> {
        check_hyper("sgd", "dampening", dampening, 0.0..1.0)?;
        self.dampening = dampening;
        Ok(self)
    }

    /// Nesterov momentum; PyTorch requires momentum > 0 and no dampening.
    pub fn nesterov(mut self, on: bool) -> Result<Self> {
        if on && (self.momentum == 0.0 || self.dampening != 0.0) {
            return Err(Error::invalid("sgd", "Nesterov momentum needs momentum > 0 and dampening 0"));
        }
        self.nesterov = on;
        Ok(self)
    }

    pub fn weight_decay(mut self, weight_decay: f32) -> Result<Self> {
        check_hyper("sgd", "weight decay", weight_decay, 0.0..f32::INFINITY)?;
        self.weight_decay = weight_decay;
        Ok(self)
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, parameters: &mut [NamedParameter<'_>]) -> Result<()> {
        let Sgd { lr, momentum, dampening, nesterov, weight_decay, .. } = *self;
        for (name, param) in parameters.iter_mut() {
            let buffers = &mut self.momentum_buffers;
            apply(name, param, |p, grad| {
                let mut d = grad.clone();
                if weight_decay != 0.0 {
                    d.data_mut().iter_mut().zip(p.data()).for_each(|(g, &w)| *g += weight_decay * w);
                }
                if momentum != 0.0 {
                    let buf = match buffers.get_mut(*name) {
                        // The first step starts the buffer at the gradient, undamped (PyTorch).
                        None => buffers.entry(name.to_string()).or_insert_with(|| d.clone()),
                        Some(buf) => {
                            buf.data_mut()
                                .iter_mut()
                                .zip(d.data())
                                .for_each(|(b, &g)| *b = momentum * *b + (1.0 - dampening) * g);
                            buf
                        }
                    };
                    if nesterov {
                        d.data_mut().iter_mut().zip(buf.data()).for_each(|(g, &b)| *g += momentum * b);
                    } else {
                        d = buf.clone();
                    }
                }
                p.data_mut().iter_mut().zip(d.data()).for_each(|(w, &g)| *w -= lr * g);
                Ok(())
            })?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f32 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f32) {
        self.lr = lr;
    }

    fn state(&self) -> BTreeMap<String, Tensor> {
        self.momentum_buffers.iter().map(|(k, v)| (format!("{k}.momentum_buffer"), v.clone())).collect()
    }

    fn load_state(&mut self, state: BTreeMap<String, Tensor>) -> Result<()> {
        let mut buffers = BTreeMap::new();
        for (key, value) in state {
            let Some(name) = key.strip_suffix(".momentum_buffer") else {
                return Err(Error::invalid(
                    "sgd",
                    format!("unknown optimiser state `{key}` (SGD keeps `<param>.momentum_buffer`)"),
                ));
            };
            buffers.insert(name.to_string(), value);
        }
        self.momentum_buffers = buffers;
        Ok(())
    }
}

/// Adam (`torch.optim.Adam`, weight decay as an L2 term in the gradient) or AdamW
/// (`torch.optim.AdamW`, decoupled weight decay).
#[derive(Debug, Clone)]
pub struct Adam {
    pub lr: f32,
    pub betas: (f32, f32),
    pub eps: f32,
    pub weight_decay: f32,
    pub decoupled: bool,
    /// Per parameter: steps taken, first and second moment estimates.
    moments: BTreeMap<String, (u64, Tensor, Tensor)>,
}

impl Adam {
    /// Adam with PyTorch's defaults: betas (0.9, 0.999), eps 1e-8, no weight decay.
    pub fn new(lr: f32) -> Result<Self> {
        check_hyper("adam", "learning rate", lr, 0.0..f32::INFINITY)?;
        Ok(Adam {
            lr,
            betas: (0.9, 0.999),
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: false,
            moments: BTreeMap::new(),
        })
    }

    /// AdamW with PyTorch's defaults (weight decay 0.01, decoupled).
    pub fn adamw(lr: f32) -> Result<Self> {
        Ok(Adam { weight_decay: 0.01, decoupled: true, ..Self::new(lr)? })
    }

    pub fn betas(mut self, beta1: f32, beta2: f32) -> Result<Self> {
        check_hyper("adam", "beta1", beta1, 0.0..1.0)?;
        check_hyper("adam", "beta2", beta2, 0.0..1.0)?;
        self.betas = (beta1, beta2);
        Ok(self)
    }

    pub fn eps(mut self, eps: f32) -> Result<Self> {
        check_hyper("adam", "eps", eps, 0.0..f32::INFINITY)?;
        self.eps = eps;
        Ok(self)
    }

    pub fn weight_decay(mut self, weight_decay: f32) -> Result<Self> {
        check_hyper("adam", "weight decay", weight_decay, 0.0..f32::INFINITY)?;
        self.weight_decay = weight_decay;
        Ok(self)
    }
}

impl Optimizer for Adam {
    fn step(&mut self, parameters: &mut [NamedParameter<'_>]) -> Result<()> {
        let Adam { lr, betas: (b1, b2), eps, weight_decay, decoupled, .. } = *self;
        for (name, param) in parameters.iter_mut() {
            let moments = &mut self.moments;
            apply(name, param, |p, grad| {
                if !moments.contains_key(*name) {
                    let zeros = Tensor::zeros(p.shape().clone())?;
                    moments.insert(name.to_string(), (0, zeros.clone(), zeros));
                }
                let (t, m, v) = moments.get_mut(*name).expect("inserted just above");
                if m.shape() != p.shape() {
                    return Err(Error::shape(
                        "adam",
                        format!(
                            "{name}: restored state {} for a parameter of shape {}",
                            m.shape(),
                            p.shape()
                        ),
                    ));
                }
                *t += 1;
                let correction1 = 1.0 - (b1 as f64).powi(*t as i32);
                let correction2_sqrt = (1.0 - (b2 as f64).powi(*t as i32)).sqrt();
                let step_size = (lr as f64 / correction1) as f32;
                let (m, v) = (m.data_mut(), v.data_mut());
                for (i, (w, &g)) in p.data_mut().iter_mut().zip(grad.data()).enumerate() {
                    let g = if decoupled || weight_decay == 0.0 { g } else { g + weight_decay * *w };
                    if decoupled {
                        *w *= 1.0 - lr * weight_decay;
                    }
                    m[i] = b1 * m[i] + (1.0 - b1) * g;
                    v[i] = b2 * v[i] + (1.0 - b2) * g * g;
                    let denom = (v[i].sqrt() as f64 / correction2_sqrt) as f32 + eps;
                    *w -= step_size * m[i] / denom;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    fn learning_rate(&self) -> f32 {
        self.lr
    }

    fn set_learning_rate(&mut self, lr: f32) {
        self.lr = lr;
    }

    fn state(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (name, (t, m, v)) in &self.moments {
            out.insert(format!("{name}.step"), Tensor::scalar(*t as f32));
            out.insert(format!("{name}.exp_avg"), m.clone());
            out.insert(format!("{name}.exp_avg_sq"), v.clone());
        }
        out
    }

    fn load_state(&mut self, mut state: BTreeMap<String, Tensor>) -> Result<()> {
        let names: Vec<String> =
            state.keys().filter_map(|k| k.strip_suffix(".step").map(str::to_string)).collect();
        let mut moments = BTreeMap::new();
        for name in names {
            let step = state.remove(&format!("{name}.step")).map(|t| t.item()).transpose()?.unwrap_or(0.0);
            let (Some(m), Some(v)) =
                (state.remove(&format!("{name}.exp_avg")), state.remove(&format!("{name}.exp_avg_sq")))
            else {
                return Err(Error::invalid(
                    "adam",
                    format!("state for `{name}` lacks exp_avg or exp_avg_sq"),
                ));
            };
            moments.insert(name, (step as u64, m, v));
        }
        if let Some(key) = state.keys().next() {
            return Err(Error::invalid("adam", format!("unknown optimiser state `{key}`")));
        }
        self.moments = moments;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use stride_tensor::autograd::{add, mul, mul_scalar, sum_all};

    use super::*;

    /// Three steps on loss = Σ p·c + ¼ Σ p², from p = [1, −2, 3], against PyTorch 2.15:
    /// the same script is in the comment of each expected vector.
    fn run(optimizer: &mut dyn Optimizer) -> Vec<f32> {
        let mut p = Var::parameter(Tensor::new([3], vec![1.0, -2.0, 3.0]).unwrap());
        let c = Var::constant(Tensor::new([3], vec![0.5, 1.5, -2.0]).unwrap());
        for _ in 0..3 {
            let loss =
                add(&sum_all(&mul(&p, &c).unwrap()), &mul_scalar(&sum_all(&mul(&p, &p).unwrap()), 0.25))
                    .unwrap();
            loss.backward().unwrap();
            drop(loss);
            optimizer.step(&mut [("p", &mut p)]).unwrap();
        }
        p.value().data().to_vec()
    }

    fn assert_close(got: &[f32], want: &[f32]) {
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 2e-6, "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn sgd_matches_pytorch() {
        // torch.optim.SGD([p], lr=0.1)
        assert_close(&run(&mut Sgd::new(0.1).unwrap()), &[0.7147499, -2.1426249, 3.1426249]);
        // momentum=0.9, weight_decay=0.01
        let mut sgd = Sgd::new(0.1).unwrap().momentum(0.9).unwrap().weight_decay(0.01).unwrap();
        assert_close(&run(&mut sgd), &[0.4578521, -2.2576547, 3.2522867]);
        // momentum=0.9, nesterov=True
        let mut nesterov = Sgd::new(0.1).unwrap().momentum(0.9).unwrap().nesterov(true).unwrap();
        assert_close(&run(&mut nesterov), &[0.2629253, -2.3685374, 3.3685374]);
        // momentum=0.9, dampening=0.5
        let mut damped = Sgd::new(0.1).unwrap().momentum(0.9).unwrap().dampening(0.5).unwrap();
        assert_close(&run(&mut damped), &[0.5946875, -2.202656, 3.202656]);
    }

    #[test]
    fn adam_and_adamw_match_pytorch() {
        // torch.optim.Adam([p], lr=0.1, weight_decay=0.01)
        let mut adam = Adam::new(0.1).unwrap().weight_decay(0.01).unwrap();
        assert_close(&run(&mut adam), &[0.7006311, -2.2982655, 3.2982104]);
        // torch.optim.AdamW([p], lr=0.1, weight_decay=0.1)
        let mut adamw = Adam::adamw(0.1).unwrap().weight_decay(0.1).unwrap();
        assert_close(&run(&mut adamw), &[0.6739872, -2.2364619, 3.2069511]);
    }

    /// Saving the state mid-run and restoring it into a fresh optimiser continues exactly.
    #[test]
    fn state_round_trip_continues_identically() {
        let mut a = Sgd::new(0.1).unwrap().momentum(0.9).unwrap();
        let mut b = Adam::new(0.05).unwrap();
        let _ = run(&mut a);
        let _ = run(&mut b);
        let mut a2 = Sgd::new(0.1).unwrap().momentum(0.9).unwrap();
        a2.load_state(a.state()).unwrap();
        let mut b2 = Adam::new(0.05).unwrap();
        b2.load_state(b.state()).unwrap();
        assert_eq!(run(&mut a), run(&mut a2));
        assert_eq!(run(&mut b), run(&mut b2));
    }

    #[test]
    fn parameters_without_gradients_are_skipped_and_graphs_kept_alive_are_safe() {
        let mut untouched = Var::parameter(Tensor::new([1], vec![4.0]).unwrap());
        let mut p = Var::parameter(Tensor::new([1], vec![1.0]).unwrap());
        let loss = sum_all(&mul_scalar(&p, 2.0));
        loss.backward().unwrap();
        // `loss` still holds p's node: the update must not change the recorded value.
        Sgd::new(0.5).unwrap().step(&mut [("p", &mut p), ("u", &mut untouched)]).unwrap();
        assert_eq!(p.value().data(), &[0.0]);
        assert_eq!(untouched.value().data(), &[4.0]);
        drop(loss);
    }

    #[test]
    fn invalid_hyperparameters_are_errors() {
        assert_eq!(
            Sgd::new(-1.0).unwrap_err().to_string(),
            "sgd: invalid argument: learning rate must be in [0, inf), got -1"
        );
        assert!(Sgd::new(0.1).unwrap().momentum(1.5).is_err());
        assert_eq!(
            Sgd::new(0.1).unwrap().nesterov(true).unwrap_err().to_string(),
            "sgd: invalid argument: Nesterov momentum needs momentum > 0 and dampening 0"
        );
        assert!(Adam::new(f32::NAN).is_err());
        assert!(
            Sgd::new(0.1)
                .unwrap()
                .load_state([("w.velocity".to_string(), Tensor::scalar(0.0))].into())
                .is_err()
        );
    }
}
