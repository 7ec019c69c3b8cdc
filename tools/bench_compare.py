#!/usr/bin/env python3
"""stride against PyTorch on the same convolution layers, same machine, same threads, same run.

Runs `stride bench conv --json` and tools/bench_torch.py in alternation (stride, torch, torch,
stride) so that drift on a shared machine hits both alike, takes per layer and direction the
median of each engine's medians, and prints the table for BENCHMARKS.md: GFLOP/s of each, the
ratio stride / PyTorch, and the geometric mean of the ratios per direction and overall, with the
date, commit, CPU and threads.

Directions (--directions, a comma list, all four by default), each timed as its own kernel:
  forward            y = conv(x, w)                                  GFLOP/s counts 2 × macs
  backward_input     dx from dy (the gradient with respect to x)     2 × macs
  backward_weight    dW from dy and x                                2 × macs
  forward_backward   forward, then both backwards (dx and dW)        6 × macs

Usage (from the repository root, after `cargo build --release`):
    tools/.venv/bin/python tools/bench_compare.py --threads 2 [--layers FILE] [--rounds 2]
        [--directions forward,backward_input] [--filter resnet50]
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRECTIONS = ["forward", "backward_input", "backward_weight", "forward_backward"]

# This module stays free of torch and numpy imports: bench_nets.py's ONNX Runtime worker imports
# its helpers, and a torch import there would count in that worker's memory.


def time_call(fn, min_runs, min_seconds, max_runs=None):
    """Milliseconds of each call of fn after one warm-up call, until both min_runs calls and
    min_seconds have passed (or max_runs calls, when given)."""
    fn()  # warm-up: oneDNN and ONNX Runtime pick and cache their kernels on the first call
    times = []
    start = time.perf_counter()
    while ((max_runs is None or len(times) < max_runs)
           and (len(times) < min_runs or time.perf_counter() - start < min_seconds)):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def try_json_lines(cmd, env=None):
    """Run cmd and return (the JSON objects it printed one per line, None), or (None, a message
    with its exit status and stderr) if it could not start, failed or printed no JSON."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    except OSError as e:
        return None, f"cannot run {cmd[0]}: {e}"
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not rows:
        what = f"exited with status {proc.returncode}" if proc.returncode else "printed no JSON line"
        return None, f"{' '.join(cmd)}\n  {what}; its stderr:\n{proc.stderr.rstrip() or '  (empty)'}"
    return rows, None


def run_json_lines(cmd):
    rows, error = try_json_lines(cmd)
    if error:
        sys.exit(f"error: {error}")
    return rows


def git_commit():
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=ROOT).stdout.strip()


def geometric_mean(values):
    return math.exp(sum(math.log(v) for v in values) / len(values))


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("flags"):
                flags = line.split(":", 1)[1].split()
                return "AVX-512" if "avx512f" in flags else ("AVX2+FMA" if "avx2" in flags else "SSE")
    except OSError:
        pass
    return "?"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", default=os.path.join(ROOT, "bench", "conv_layers.json"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of (stride, torch) in alternating order")
    parser.add_argument("--stride-bin", default=os.path.join(ROOT, "target", "release", "stride"))
    parser.add_argument("--min-seconds", default="1.0")
    parser.add_argument("--directions", default=",".join(DIRECTIONS), help="comma list of " + ",".join(DIRECTIONS))
    parser.add_argument("--filter", default="", help="only layers whose name contains this")
    args = parser.parse_args()
    unknown = set(args.directions.split(",")) - set(DIRECTIONS)
    if unknown:
        sys.exit(f"error: unknown direction(s) {', '.join(sorted(unknown))}; choose from {', '.join(DIRECTIONS)}")

    common = ["--threads", str(args.threads), "--layers", args.layers, "--min-seconds", args.min_seconds,
              "--directions", args.directions]
    if args.filter:
        common += ["--filter", args.filter]
    stride_cmd = [args.stride_bin, "bench", "conv", "--json"] + common
    torch_cmd = [sys.executable, os.path.join(ROOT, "tools", "bench_torch.py")] + common
    results = {"stride": {}, "pytorch": {}}
    peaks = []
    for r in range(args.rounds):
        order = [("stride", stride_cmd), ("pytorch", torch_cmd)]
        if r % 2:
            order.reverse()
        for engine, cmd in order:
            print(f"round {r + 1}: {engine} ...", file=sys.stderr, flush=True)
            for row in run_json_lines(cmd):
                results[engine].setdefault((row["name"], row["direction"]), []).append(row["gflops"])
                if "peak_percent" in row and row["peak_percent"]:
                    peaks.append(row["gflops"] * 100.0 / row["peak_percent"])

    import torch
    print(f"date {datetime.date.today()}, commit {git_commit()}, CPU {cpu_name()} ({cpu_flags()}), "
          f"{args.threads} threads, torch {torch.__version__}, {args.rounds} rounds")
    if peaks:
        print(f"measured FMA peak ≈ {statistics.median(peaks):.0f} GFLOP/s")
    print()
    print("| layer | direction | stride GFLOP/s (rounds) | PyTorch GFLOP/s (rounds) | ratio |")
    print("|---|---|---|---|---|")
    ratios = {}  # direction -> ratios of its rows
    for key, stride_runs in results["stride"].items():
        torch_runs = results["pytorch"].get(key)
        if not torch_runs:
            continue
        s, t = statistics.median(stride_runs), statistics.median(torch_runs)
        ratio = s / t
        ratios.setdefault(key[1], []).append(ratio)
        fmt = lambda runs: "/".join(f"{v:.0f}" for v in runs)
        print(f"| {key[0]} | {key[1]} | {s:.1f} ({fmt(stride_runs)}) | {t:.1f} ({fmt(torch_runs)}) | {ratio:.2f}× |")
    if ratios:
        print()
        every = [r for direction in ratios.values() for r in direction]
        for direction in DIRECTIONS + ["overall"]:
            values = every if direction == "overall" else ratios.get(direction)
            if values:
                print(f"geometric mean of ratios, {direction}: {geometric_mean(values):.2f}× over {len(values)} "
                      f"rows; min {min(values):.2f}×, max {max(values):.2f}×")
        print(f"rows below 1.0× (stride slower): {sum(r < 1.0 for r in every)} of {len(every)}")


if __name__ == "__main__":
    main()
