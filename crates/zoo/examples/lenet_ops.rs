//! Times LeNet-5's kernels one by one at batch 128 (forward and backward), to see where a
//! training step goes. `cargo run --release -p stride-zoo --example lenet_ops`.

use std::time::Instant;

/// As in the `stride` binary: freed pages are reused instead of faulted in again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use stride_tensor::Tensor;
use stride_tensor::ops::conv::{ConvSpec, conv_backward, conv2d};
use stride_tensor::ops::pool::{PoolSpec, max_pool_backward, max_pool_with_indices};

fn time(name: &str, mut f: impl FnMut()) {
    for _ in 0..5 {
        f();
    }
    let mut times: Vec<f64> = (0..40)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!("{name:<28} median {:.3} ms  min {:.3}", times[20], times[0]);
}

fn main() {
    // As the `stride` binary does (see its main.rs): keep freed memory, never purge (option 15), no
    // transparent huge pages (prctl).
    // SAFETY: before any other thread exists.
    unsafe {
        libmimalloc_sys::mi_option_set(15, -1);
        #[cfg(target_os = "linux")]
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    let n = 128;
    let t = |dims: &[usize]| {
        Tensor::from_fn(dims.to_vec(), |i| ((i.iter().sum::<usize>() * 7) % 13) as f32 / 13.0 - 0.4).unwrap()
    };
    let (x1, w1, b1) = (t(&[n, 1, 28, 28]), t(&[6, 1, 5, 5]), t(&[6]));
    let s1 = ConvSpec::new().padding(2);
    let y1 = conv2d(&x1, &w1, Some(&b1), &s1).unwrap();
    time("conv1 forward", || drop(conv2d(&x1, &w1, Some(&b1), &s1).unwrap()));
    time("conv1 backward (dx, dw, db)", || drop(conv_backward(&x1, &w1, &y1, &s1).unwrap()));
    time("conv1 backward (dw, db)", || {
        drop(stride_tensor::ops::conv::conv_backward_params(&x1, &w1, &y1, &s1).unwrap())
    });
    let pool = PoolSpec::<2>::new(2);
    let (p1, idx1) = max_pool_with_indices(&y1, &pool).unwrap();
    time("pool1 forward", || drop(max_pool_with_indices(&y1, &pool).unwrap()));
    time("pool1 backward", || drop(max_pool_backward(&y1, &idx1, &p1, &pool).unwrap()));
    let (w2, b2) = (t(&[16, 6, 5, 5]), t(&[16]));
    let s2 = ConvSpec::new();
    let y2 = conv2d(&p1, &w2, Some(&b2), &s2).unwrap();
    time("conv2 forward", || drop(conv2d(&p1, &w2, Some(&b2), &s2).unwrap()));
    time("conv2 backward (dx, dw, db)", || drop(conv_backward(&p1, &w2, &y2, &s2).unwrap()));
    time("relu 128x6x28x28", || drop(y1.map(|v| v.max(0.0))));
}
