#!/usr/bin/env python3
"""The zoo's full-size ImageNet networks against torchvision: same weights, same input, compare.

For each network it builds torchvision's model with seeded random weights (torch.manual_seed, no
download), sets every batch norm's running statistics, scale and shift to seeded random values
(as tools/gen_zoo_fixtures.py does: mean N(0, 0.1²), variance U[0.5, 1.5), weight U[0.5, 1.5),
bias N(0, 0.1²)) so that evaluation mode really uses them, saves the state_dict as safetensors
(contiguous tensors, int64 batch counters included) and a seeded input N(0, 1) of shape
[--batch, 3, 224, 224], runs PyTorch in eval mode under no_grad, runs

    STRIDE infer --model M --weights W.safetensors --input x.safetensors --output y.safetensors
                 --threads T

and compares the two [N, 1000] outputs. GoogLeNet is
`torchvision.models.googlenet(weights=None, aux_logits=False, init_weights=True)`: with
weights=None torchvision leaves `transform_input` False (it only turns it on for pretrained
weights), which is the network stride's `googlenet` builds; the script asserts it.

Printed per network:
  max|a-b|   the largest absolute difference between stride's output a and PyTorch's b;
  rel        max|a-b| / max|b|: the error relative to the scale of the logits. An element-wise
             |a-b| / |b| is not used because some of the 1000 logits are always near zero, where
             it measures nothing but the rounding of that one value;
  top-1      how many of the N samples have the same arg-max in both (informational: two logits
             closer than the rounding error may swap without anything being wrong);
  stride ms  the forward pass as `stride infer` reports it ("(… ms)"), a single call: it excludes
             reading the weights and the input, but includes the first touch of every buffer;
  torch ms   the first forward of PyTorch, timed the same way (after building the model, no
             warm-up), and the best of --repeat further forwards, both with --threads threads;
  stride s   the whole `stride infer` process: start, reading weights and input, forward, write;
  PASS/FAIL  max|a-b| <= rtol * max|b| + atol, by default rtol = 1e-3, atol = 1e-4.

Why that tolerance: both sides compute in float32 but sum in different orders (blocked GEMM with
different tile sizes, PyTorch's oneDNN/Winograd convolutions), so each layer adds an error of a
few ulps times sqrt(fan-in) relative to its output, and batch norm in eval mode rescales
activations by up to 1/sqrt(0.5) without renormalising the error. Over 8 to 152 layers this
stays around 1e-6 to 1e-5 of the output's scale; 1e-3 leaves two orders of magnitude of room.
Every real mistake (a wrong padding, stride or ceil_mode, a transposed or misnamed weight, a batch
norm eps of 1e-5 instead of GoogLeNet's 1e-3, a missing ReLU, dropout left on) moves the logits
by a sizeable fraction of their scale and fails it. atol only guards a network whose outputs
are all close to zero.

The output files go to a temporary directory that is removed at the end (VGG-19's weights are
about 575 MB). Exits 1 if any network fails, with stride's stderr printed when it did not run.

Usage (from the repository root, after `cargo build --release -p stride-cli`; needs the venv of
tools/README.md plus torchvision):
    tools/.venv/bin/python tools/check_zoo_torchvision.py --threads 2
    tools/.venv/bin/python tools/check_zoo_torchvision.py --models resnet18,googlenet --batch 2
    tools/.venv/bin/python tools/check_zoo_torchvision.py --all
"""
import argparse
import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torch.nn as nn
import torchvision
from safetensors.numpy import load_file
from safetensors.torch import save_file

from gen_zoo_fixtures import randomise_statistics  # the same statistics as the CI fixtures

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT = ["alexnet", "vgg11", "vgg16_bn", "googlenet", "resnet18", "resnet50"]
ALL = (["alexnet"]
       + [f"vgg{d}{bn}" for d in (11, 13, 16, 19) for bn in ("", "_bn")]
       + ["googlenet"]
       + [f"resnet{d}" for d in (18, 34, 50, 101, 152)])
MS = re.compile(r"\(([0-9.]+) ms\)\s*$", re.MULTILINE)


def build(name):
    models = torchvision.models
    if name == "googlenet":
        model = models.googlenet(weights=None, aux_logits=False, init_weights=True)
        assert model.transform_input is False, "torchvision's googlenet transforms its input"
        return model
    return getattr(models, name)(weights=None)


def run_stride(args, name, weights, x_path, y_path):
    command = [args.stride, "infer", "--model", name, "--weights", weights, "--input", x_path,
               "--output", y_path, "--threads", str(args.threads)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return None, seconds, f"`{' '.join(command)}` exited {done.returncode}:\n{done.stderr}{done.stdout}"
    found = MS.findall(done.stdout)
    if not found:
        return None, seconds, f"no '(… ms)' in stride's output:\n{done.stdout}"
    return float(found[-1]), seconds, None


def check(args, name, tmp):
    torch.manual_seed(args.seed)
    model = build(name)
    generator = torch.Generator().manual_seed(args.seed + 1)
    with torch.no_grad():
        randomise_statistics(model, generator)
    model.eval()
    x = torch.randn((args.batch, 3, 224, 224), generator=generator)
    weights = os.path.join(tmp, f"{name}.safetensors")
    x_path = os.path.join(tmp, f"{name}-input.safetensors")
    y_path = os.path.join(tmp, f"{name}-output.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    save_file({"input": x.contiguous()}, x_path)

    with torch.no_grad():
        started = time.perf_counter()
        expected = model(x)
        torch_first = 1e3 * (time.perf_counter() - started)
        torch_best = float("inf")
        for _ in range(args.repeat):
            started = time.perf_counter()
            model(x)
            torch_best = min(torch_best, 1e3 * (time.perf_counter() - started))
    expected = expected.double().numpy()
    del model
    gc.collect()

    stride_ms, stride_total, error = run_stride(args, name, weights, x_path, y_path)
    row = {"model": name, "stride_ms": stride_ms, "stride_total_s": stride_total,
           "torch_first_ms": torch_first, "torch_best_ms": torch_best, "error": error}
    if error is None:
        got = load_file(y_path)["output"].astype(np.float64)
        if got.shape != expected.shape:
            row["error"] = f"stride's output is {list(got.shape)}, PyTorch's {list(expected.shape)}"
        else:
            diff = float(np.max(np.abs(got - expected)))
            scale = float(np.max(np.abs(expected)))
            agree = int(np.sum(np.argmax(got, 1) == np.argmax(expected, 1)))
            ok = bool(np.all(np.isfinite(got))) and diff <= args.rtol * scale + args.atol
            row.update(max_abs=diff, scale=scale, rel=diff / scale if scale > 0 else float("inf"),
                       top1=f"{agree}/{args.batch}", ok=ok)
    row.setdefault("ok", False)
    for path in (weights, x_path, y_path):
        if os.path.exists(path):
            os.remove(path)
    return row


def fmt(value, spec):
    return "—" if value is None or value == float("inf") else format(value, spec)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", help=f"comma-separated [default: {','.join(DEFAULT)}]")
    parser.add_argument("--all", action="store_true", help="every torchvision-backed zoo entry")
    parser.add_argument("--stride", default=os.path.join(ROOT, "target/release/stride"))
    parser.add_argument("--threads", type=int, default=2, help="for both frameworks [2]")
    parser.add_argument("--batch", type=int, default=1, help="images in the input [1]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2, help="further timed PyTorch forwards [2]")
    parser.add_argument("--rtol", type=float, default=1e-3)
    parser.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args()
    if args.all and args.models:
        parser.error("--all and --models exclude each other")
    names = ALL if args.all else (args.models.split(",") if args.models else DEFAULT)
    unknown = [n for n in names if n not in ALL]
    if unknown:
        parser.error(f"not torchvision-backed zoo entries: {unknown}; choose from {ALL}")
    if not os.access(args.stride, os.X_OK):
        sys.exit(f"no stride binary at {args.stride}: cargo build --release -p stride-cli, or --stride PATH")
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} threads, "
          f"input [{args.batch}, 3, 224, 224], seed {args.seed}, "
          f"PASS if max|a-b| <= {args.rtol:g}·max|b| + {args.atol:g}")
    header = (f"{'model':<10} {'max|a-b|':>9} {'max|b|':>9} {'rel':>8} {'top-1':>6} {'stride ms':>10} "
              f"{'torch ms':>9} {'torch best':>10} {'stride s':>9}  result")
    print(header)
    rows = []
    tmp = tempfile.mkdtemp(prefix="stride-zoo-check-")
    try:
        for name in names:
            row = check(args, name, tmp)
            rows.append(row)
            print(f"{name:<10} {fmt(row.get('max_abs'), '9.2e')} {fmt(row.get('scale'), '9.3g')} "
                  f"{fmt(row.get('rel'), '8.1e')} {row.get('top1', '—'):>6} "
                  f"{fmt(row['stride_ms'], '10.1f')} {fmt(row['torch_first_ms'], '9.1f')} "
                  f"{fmt(row['torch_best_ms'], '10.1f')} {fmt(row['stride_total_s'], '9.2f')}  "
                  f"{'PASS' if row['ok'] else 'FAIL'}", flush=True)
            if row["error"]:
                print(f"  {row['error']}", flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [r["model"] for r in rows if not r["ok"]]
    print(f"{len(rows) - len(failed)}/{len(rows)} pass" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
