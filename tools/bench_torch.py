#!/usr/bin/env python3
"""PyTorch side of stride's convolution benchmark.

Runs every layer of a conv_layers.json file (../shared/bench/conv_layers.json by default) through
torch.nn.functional.conv{1,2,3}d with the same threads as stride, and prints one JSON object per
layer and direction in the format of `stride bench conv --json`:
  {"name", "direction", "threads", "median_ms", "min_ms", "max_ms", "gflops", "engine": "pytorch"}

GFLOP/s = 2 x multiply-adds (counted on the padded input, the file's `macs`) / median time.
Used by tools/bench_compare.py; needs the venv described in tools/README.md.
"""
import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F


def time_call(fn, min_runs, min_seconds, max_runs):
    fn()  # warm-up: oneDNN picks and caches its kernels on the first call
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="../shared/bench/conv_layers.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--directions", default="forward", help="comma list of forward,forward_backward")
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-runs", type=int, default=50)
    parser.add_argument("--filter", default="", help="only layers whose name contains this")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = json.load(open(args.layers))
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
    for layer in layers:
        if args.filter not in layer["name"]:
            continue
        dims = layer["dims"]
        x = torch.randn(layer["N"], layer["Cin"], *layer["input"])
        w = torch.randn(layer["Cout"], layer["Cin"] // layer["groups"], *layer["kernel"])
        kwargs = dict(stride=layer["stride"], padding=layer["padding"], dilation=layer["dilation"],
                      groups=layer["groups"])
        for direction in args.directions.split(","):
            if direction == "forward":
                def fn():
                    with torch.no_grad():
                        conv[dims](x, w, None, **kwargs)
                flops = 2 * layer["macs"]
            elif direction == "forward_backward":
                xg = x.clone().requires_grad_(True)
                wg = w.clone().requires_grad_(True)

                def fn():
                    y = conv[dims](xg, wg, None, **kwargs)
                    y.backward(torch.ones_like(y))
                flops = 3 * 2 * layer["macs"]
            else:
                raise SystemExit(f"unknown direction {direction!r}")
            times = time_call(fn, args.min_runs, args.min_seconds, args.max_runs)
            median = statistics.median(times)
            print(json.dumps({
                "name": layer["name"], "direction": direction, "threads": args.threads,
                "median_ms": round(median, 4), "min_ms": round(min(times), 4), "max_ms": round(max(times), 4),
                "gflops": round(flops / median / 1e6, 2), "engine": "pytorch",
            }), flush=True)


if __name__ == "__main__":
    main()
