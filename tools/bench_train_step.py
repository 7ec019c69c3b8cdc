#!/usr/bin/env python3
"""Training steps of a zoo network: stride against PyTorch, same machine, threads, batch, run.

One training step is forward, cross-entropy, backward and an SGD step (momentum 0.9, weight
decay 5e-4) on a fixed batch of 1×28×28 images, as Fashion-MNIST feeds them: no data loading,
so the figure is the engine's. stride's side is `cargo run --release -p stride-zoo --example
train_step -- MODEL BATCH STEPS` (crates/zoo/examples/train_step.rs), which prints images/s over
STEPS steps after 10 warm-up steps; PyTorch's side builds the same network (the LeNet-5 of
tools/bench_lenet.py, the CIFAR ResNet of tools/gen_zoo_fixtures.py with a 1-channel stem) and
times the same loop after 3 warm-up steps.

The two alternate (stride, torch, torch, stride, ...) for --rounds rounds so that drift on a
shared machine hits both alike; the table gives per engine the median images/s and the min–max
over rounds, and the ratio stride / PyTorch of the medians, with date, commit, CPU and threads.

Usage (from the repository root; needs the venv described in tools/README.md):
    tools/.venv/bin/python tools/bench_train_step.py --model resnet20 --batch 128 --threads 2
"""
import argparse
import datetime
import os
import re
import statistics
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench_compare import cpu_flags, cpu_name
from bench_lenet import lenet5
from gen_zoo_fixtures import CifarResNet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CIFAR_DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}


def torch_model(name):
    if name == "lenet5":
        return lenet5()
    if name in CIFAR_DEPTHS:
        net = CifarResNet(CIFAR_DEPTHS[name], 10)
        net.conv1 = nn.Conv2d(1, 16, 3, 1, 1, bias=False)  # Fashion-MNIST's one channel
        return net
    sys.exit(f"error: no PyTorch twin for {name!r} here; choose lenet5 or {', '.join(CIFAR_DEPTHS)}")


def torch_images_per_second(name, batch, steps, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = torch_model(name).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch, 1, 28, 28)
    y = torch.arange(batch) % 10
    for step in range(steps + 3):
        if step == 3:
            start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return batch * steps / (time.perf_counter() - start)


def stride_images_per_second(binary, name, batch, steps, threads):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    out = subprocess.run([binary, name, str(batch), str(steps)], check=True, capture_output=True,
                         text=True, env=env, cwd=ROOT).stdout
    match = re.search(r"([0-9.]+) images/s", out)
    if not match:
        sys.exit(f"error: no 'images/s' in the output of {binary}: {out!r}")
    return float(match.group(1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    subprocess.run(["cargo", "build", "--release", "-q", "-p", "stride-zoo", "--example", "train_step"],
                   check=True, cwd=ROOT)
    binary = os.path.join(ROOT, "target", "release", "examples", "train_step")
    results = {"stride": [], "pytorch": []}
    for r in range(args.rounds):
        order = ["stride", "pytorch"] if r % 2 == 0 else ["pytorch", "stride"]
        for engine in order:
            if engine == "stride":
                v = stride_images_per_second(binary, args.model, args.batch, args.steps, args.threads)
            else:
                v = torch_images_per_second(args.model, args.batch, args.steps, args.threads)
            results[engine].append(v)
            print(f"round {r + 1}: {engine} {v:.0f} images/s", file=sys.stderr)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    print(f"{args.model} training step, batch {args.batch}, {args.threads} threads, "
          f"{datetime.date.today()}, commit {commit}, {cpu_name()} ({cpu_flags()}), "
          f"torch {torch.__version__}, {args.rounds} rounds of {args.steps} steps")
    print("| engine | images/s (median) | min–max |")
    print("|---|---|---|")
    for engine, values in results.items():
        print(f"| {engine} | {statistics.median(values):.0f} | {min(values):.0f}–{max(values):.0f} |")
    ratio = statistics.median(results["stride"]) / statistics.median(results["pytorch"])
    print(f"ratio stride / PyTorch: {ratio:.2f}×")


if __name__ == "__main__":
    main()
