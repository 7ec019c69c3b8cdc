//! Times the phases of a zoo network's training steps on a fixed batch of 1×28×28 images (no
//! data loading): forward, loss, backward, optimiser.
//! `cargo run --release -p stride-zoo --example train_step -- [MODEL] [BATCH] [STEPS]`
//! (default lenet5 128 200).

use std::time::Instant;

/// As in the `stride` binary: freed pages are reused instead of faulted in again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use stride_nn::module::{Mode, named_parameters};
use stride_nn::optim::{Optimizer, Sgd};
use stride_tensor::Tensor;
use stride_tensor::autograd::{Var, cross_entropy};

fn main() {
    // As the `stride` binary does (see its main.rs): keep freed memory, never purge (option 15), no
    // transparent huge pages (prctl).
    // SAFETY: before any other thread exists.
    unsafe {
        libmimalloc_sys::mi_option_set(15, -1);
        #[cfg(target_os = "linux")]
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let mut args = std::env::args().skip(1);
    let model = args.next().unwrap_or_else(|| "lenet5".to_string());
    let numbers: Vec<usize> = args.map(|a| a.parse().expect("a number")).collect();
    let (batch, steps) = (numbers.first().copied().unwrap_or(128), numbers.get(1).copied().unwrap_or(200));
    let mut net = stride_zoo::build(&model, 10, 1, 0).unwrap();
    let images =
        Tensor::from_fn([batch, 1, 28, 28], |i| ((i[0] * 7 + i[2] * 3 + i[3]) % 17) as f32 / 17.0).unwrap();
    let labels: Vec<usize> = (0..batch).map(|i| i % 10).collect();
    let mut sgd = Sgd::new(0.01).unwrap().momentum(0.9).unwrap().weight_decay(5e-4).unwrap();
    let mut t = [0f64; 4];
    for step in 0..steps + 10 {
        let t0 = Instant::now();
        let logits = net.forward(&Var::constant(images.clone()), Mode::Train).unwrap();
        let t1 = Instant::now();
        let loss = cross_entropy(&logits, &labels, 0.0).unwrap();
        let t2 = Instant::now();
        loss.backward().unwrap();
        drop((loss, logits));
        let t3 = Instant::now();
        let mut params = named_parameters(net.as_mut());
        let mut refs: Vec<(&str, &mut Var)> =
            params.iter_mut().map(|(n, v)| (n.as_str(), &mut **v)).collect();
        sgd.step(&mut refs).unwrap();
        let t4 = Instant::now();
        if step >= 10 {
            for (acc, d) in t.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
                *acc += d.as_secs_f64();
            }
        }
    }
    let per = |s: f64| 1e3 * s / steps as f64;
    let total: f64 = t.iter().sum();
    println!(
        "{model}, batch {batch}, {} threads: forward {:.3} ms, loss {:.3} ms, backward {:.3} ms, step {:.3} ms; {:.0} images/s",
        rayon::current_num_threads(),
        per(t[0]),
        per(t[1]),
        per(t[2]),
        per(t[3]),
        (batch * steps) as f64 / total
    );
}
