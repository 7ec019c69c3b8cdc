#!/usr/bin/env python3
"""stride against PyTorch on the same convolution layers, same machine, same threads, same run.

Runs `stride bench conv --json` and tools/bench_torch.py in alternation (stride, torch, torch,
stride) so that drift on a shared machine hits both alike, takes per layer the median of each
engine's medians, and prints the table for BENCHMARKS.md: GFLOP/s of each, the ratio
stride / PyTorch, and the geometric mean of the ratios, with the date, commit, CPU and threads.

Usage (from the repository root, after `cargo build --release`):
    tools/.venv/bin/python tools/bench_compare.py --threads 2 [--layers FILE] [--rounds 2]
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_json_lines(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


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
    args = parser.parse_args()

    stride_cmd = [args.stride_bin, "bench", "conv", "--json", "--threads", str(args.threads),
                  "--layers", args.layers, "--min-seconds", args.min_seconds]
    torch_cmd = [sys.executable, os.path.join(ROOT, "tools", "bench_torch.py"), "--threads", str(args.threads),
                 "--layers", args.layers, "--min-seconds", args.min_seconds]
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

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    import torch
    print(f"date {datetime.date.today()}, commit {commit}, CPU {cpu_name()} ({cpu_flags()}), "
          f"{args.threads} threads, torch {torch.__version__}, {args.rounds} rounds")
    if peaks:
        print(f"measured FMA peak ≈ {statistics.median(peaks):.0f} GFLOP/s")
    print()
    print("| layer | direction | stride GFLOP/s (rounds) | PyTorch GFLOP/s (rounds) | ratio |")
    print("|---|---|---|---|---|")
    ratios = []
    for key, stride_runs in results["stride"].items():
        torch_runs = results["pytorch"].get(key)
        if not torch_runs:
            continue
        s, t = statistics.median(stride_runs), statistics.median(torch_runs)
        ratio = s / t
        ratios.append(ratio)
        fmt = lambda runs: "/".join(f"{v:.0f}" for v in runs)
        print(f"| {key[0]} | {key[1]} | {s:.1f} ({fmt(stride_runs)}) | {t:.1f} ({fmt(torch_runs)}) | {ratio:.2f}× |")
    if ratios:
        geo = math.exp(sum(math.log(r) for r in ratios) / len(ratios))
        print(f"\ngeometric mean of ratios: {geo:.2f}×; min {min(ratios):.2f}×, max {max(ratios):.2f}×")


if __name__ == "__main__":
    main()
