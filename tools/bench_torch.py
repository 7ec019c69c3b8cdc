#!/usr/bin/env python3
"""PyTorch side of stride's convolution benchmark.

Runs every layer of a conv_layers.json file (../shared/bench/conv_layers.json by default) through
PyTorch with the same threads as stride, and prints one JSON object per layer and direction in the
format of `stride bench conv --json`:
  {"name", "direction", "threads", "median_ms", "min_ms", "max_ms", "gflops",
   "max_relative_error", "engine": "pytorch"}

Directions (--directions, a comma list, all four by default), each timing exactly one thing:
  forward            torch.nn.functional.conv{1,2,3}d(x, w) under no_grad       2 × macs
  backward_input     aten.convolution_backward(dy, x, w, ..., output_mask=[True, False, False]):
                     dx alone                                                  2 × macs
  backward_weight    the same with output_mask=[False, True, False]: dW alone   2 × macs
  forward_backward   y = conv(x, w) with x and w requiring grad, y.backward(dy)  6 × macs
where dy is a fixed random gradient of the output's shape and GFLOP/s = the multiply-adds
counted (from the file's `macs`, on the padded input) / median time.

Before timing a direction it computes the result once and compares it with the same computation
in float64, as stride does: max_relative_error = max|result − float64| / max|float64| (for
forward_backward the larger of dx's and dW's). Above 1e-4 it says so on stderr, and the script
exits 1 after printing all rows. stdout carries only the JSON lines.

Used by tools/bench_compare.py; needs the venv described in tools/README.md.
"""
import argparse
import json
import statistics
import sys

import torch
import torch.nn.functional as F

from bench_compare import DIRECTIONS, time_call

TOLERANCE = 1e-4  # relative to the largest magnitude of the float64 result


def relative_error(result, reference):
    return ((result.double() - reference).abs().max() / reference.abs().max().clamp_min(1e-30)).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default="../shared/bench/conv_layers.json")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--directions", default=",".join(DIRECTIONS), help="comma list of " + ",".join(DIRECTIONS))
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--max-runs", type=int, default=50)
    parser.add_argument("--filter", default="", help="only layers whose name contains this")
    args = parser.parse_args()
    directions = args.directions.split(",")
    unknown = set(directions) - set(DIRECTIONS)
    if unknown:
        sys.exit(f"error: unknown direction(s) {', '.join(sorted(unknown))}; choose from {', '.join(DIRECTIONS)}")

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = json.load(open(args.layers))
    conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
    failures = 0
    for layer in layers:
        if args.filter not in layer["name"]:
            continue
        dims = layer["dims"]
        x = torch.randn(layer["N"], layer["Cin"], *layer["input"])
        w = torch.randn(layer["Cout"], layer["Cin"] // layer["groups"], *layer["kernel"])
        kwargs = dict(stride=layer["stride"], padding=layer["padding"], dilation=layer["dilation"],
                      groups=layer["groups"])
        with torch.no_grad():
            y = conv[dims](x, w, None, **kwargs)
        dy = torch.randn_like(y)

        def backward(dy, x, w, mask):
            # aten's own backward kernel, the one autograd calls for conv, without the graph around it.
            return torch.ops.aten.convolution_backward(
                dy, x, w, None, layer["stride"], layer["padding"], layer["dilation"], False, [0] * dims,
                layer["groups"], mask)

        # The float64 references, computed once per layer: y, dx and dW for the fixed dy.
        with torch.no_grad():
            y64 = conv[dims](x.double(), w.double(), None, **kwargs) if "forward" in directions else None
            dx64, dw64, _ = (backward(dy.double(), x.double(), w.double(), [True, True, False])
                             if set(directions) - {"forward"} else (None, None, None))

        for direction in directions:
            if direction == "forward":
                def fn():
                    with torch.no_grad():
                        return conv[dims](x, w, None, **kwargs)
                error = relative_error(fn(), y64)
                flops = 2 * layer["macs"]
            elif direction == "backward_input":
                fn = lambda: backward(dy, x, w, [True, False, False])
                error = relative_error(fn()[0], dx64)
                flops = 2 * layer["macs"]
            elif direction == "backward_weight":
                fn = lambda: backward(dy, x, w, [False, True, False])
                error = relative_error(fn()[1], dw64)
                flops = 2 * layer["macs"]
            else:  # forward_backward
                xg = x.clone().requires_grad_(True)
                wg = w.clone().requires_grad_(True)

                def fn():
                    conv[dims](xg, wg, None, **kwargs).backward(dy)
                fn()
                error = max(relative_error(xg.grad, dx64), relative_error(wg.grad, dw64))
                xg.grad = wg.grad = None
                flops = 3 * 2 * layer["macs"]
            if error > TOLERANCE:
                failures += 1
                print(f"bench_torch: {layer['name']} {direction}: max relative error {error:.2e} against "
                      f"float64 exceeds {TOLERANCE:g}", file=sys.stderr, flush=True)
            times = time_call(fn, args.min_runs, args.min_seconds, args.max_runs)
            median = statistics.median(times)
            print(json.dumps({
                "name": layer["name"], "direction": direction, "threads": args.threads,
                "median_ms": round(median, 4), "min_ms": round(min(times), 4), "max_ms": round(max(times), 4),
                "gflops": round(flops / median / 1e6, 2), "max_relative_error": float(f"{error:.3g}"),
                "engine": "pytorch",
            }), flush=True)
    if failures:
        sys.exit(f"bench_torch: {failures} result(s) disagree with float64 beyond {TOLERANCE:g}")


if __name__ == "__main__":
    main()
