#!/usr/bin/env python3
"""LeNet-5 training epochs: PyTorch alone, or stride against PyTorch on the same machine and threads.

Trains the LeNet-5 of `stride train lenet5` (crates/zoo/src/lenet.rs: same layers, same names,
61,706 parameters, so the state_dicts interchange) on Fashion-MNIST (or MNIST) with SGD and
cross-entropy, the way a fast PyTorch user does: the data set is decoded into tensors before
training, and each epoch draws its shuffled mini-batches by indexing those tensors with a
permutation (no DataLoader, no workers). Only the training pass of an epoch is timed, not the
evaluation nor the reading of the files, as stride's metrics.csv `seconds` column does. After each
epoch it prints: epoch, seconds, images/s, train loss and accuracy, test accuracy.

With --stride PATH it runs, for each of --rounds rounds, PyTorch for --epochs epochs and
`PATH train lenet5 ... --out TMPDIR/run-k` with the same hyper-parameters, seed and threads, and
the same recipe (`--schedule constant --no-augment`: a constant learning rate and no random crop
or flip, which this script does not do either; `--train-subset` when --train-images is given),
alternating which goes first (PyTorch, stride, stride, PyTorch, ...) so that drift on a shared
machine hits both alike. It reads each stride run's metrics.csv and prints the table for
BENCHMARKS.md: per framework the median epoch seconds (min–max over the epochs of all rounds,
epoch 1 of each round left out as warm-up unless --no-skip-first), images/s and final test
accuracy, the ratio stride / PyTorch of the medians, with the date, commit, CPU, threads and torch.

Usage (from the repository root; needs the venv described in tools/README.md):
    tools/.venv/bin/python tools/bench_lenet.py --epochs 1 --train-images 5000      # PyTorch only
    tools/.venv/bin/python tools/bench_lenet.py --stride target/release/stride --epochs 3 --rounds 3
"""
import argparse
import csv
import datetime
import gzip
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict

import numpy as np
import torch
import torch.nn as nn

from bench_compare import cpu_flags, cpu_name  # one reading of /proc/cpuinfo for every table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STATS = {"fashion-mnist": (0.2860, 0.3530), "mnist": (0.1307, 0.3081)}
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
METRICS_HEADER = ("epoch,lr,train_loss,train_accuracy,validation_loss,validation_accuracy,"
                  "test_loss,test_accuracy,seconds,images_per_second")


def lenet5():
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, 5, padding=2)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, 5)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(400, 120)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(120, 84)), ("relu4", nn.ReLU()),
        ("fc3", nn.Linear(84, 10))]))


def read_idx(path, magic):
    """One IDX file (gzip-compressed, or plain when only that exists) as a uint8 array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if int.from_bytes(data[:4], "big") != magic:
        raise SystemExit(f"{path}: not an IDX file with magic {magic:#x}")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    array = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if array.size != int(np.prod(shape)):
        raise SystemExit(f"{path}: {array.size} bytes of data, the header says {shape}")
    return array.reshape(shape)


def missing_data(dataset, problem):
    hint = ("`apt-get install dataset-fashion-mnist` puts Fashion-MNIST in /usr/share/datasets/fashion-mnist"
            if dataset == "fashion-mnist" else
            "put the four MNIST IDX files (train-images-idx3-ubyte.gz, ...) in one directory")
    raise SystemExit(f"bench_lenet: {problem}; {hint}, or name another directory with --data")


def load_split(directory, dataset, split):
    """Images normalised as float32 [N, 1, 28, 28] and labels as int64 [N]."""
    if not os.path.isdir(directory):
        missing_data(dataset, f"the data directory {directory} does not exist")
    arrays = []
    for name, magic in zip(FILES[split], (0x803, 0x801)):
        path = next((os.path.join(directory, n) for n in (name + ".gz", name)
                     if os.path.exists(os.path.join(directory, n))), None)
        if path is None:
            missing_data(dataset, f"the data directory {directory} has no {name}.gz")
        arrays.append(read_idx(path, magic))
    images, labels = arrays
    mean, std = STATS[dataset]
    x = (torch.from_numpy(images.astype(np.float32)) / 255.0 - mean) / std
    return x.unsqueeze(1).contiguous(), torch.from_numpy(labels.astype(np.int64))


def evaluate(net, x, y, batch=1000):
    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            correct += (net(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum().item()
    net.train()
    return correct / len(x)


def train_pytorch(args, data, round_index, quiet=False):
    """One run of --epochs epochs from a fresh, seeded network; returns a list of epoch dicts."""
    train_x, train_y, test_x, test_y = data
    torch.manual_seed(args.seed)
    net = lenet5()
    optimiser = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    shuffle = torch.Generator().manual_seed(args.seed + 1)
    n = len(train_x)
    records = []
    net.train()
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        order = torch.randperm(n, generator=shuffle)
        loss_sum = torch.zeros((), dtype=torch.float64)
        correct = torch.zeros((), dtype=torch.int64)
        for i in range(0, n, args.batch_size):
            index = order[i:i + args.batch_size]
            x, y = train_x[index], train_y[index]
            optimiser.zero_grad(set_to_none=True)
            logits = net(x)
            loss = loss_fn(logits, y)
            loss.backward()
            optimiser.step()
            # Kept as tensors (stride also tracks train loss and accuracy during the pass).
            loss_sum += loss.detach() * len(index)
            correct += (logits.detach().argmax(1) == y).sum()
        seconds = time.perf_counter() - start
        record = {"epoch": epoch, "seconds": seconds, "images_per_second": n / seconds,
                  "train_loss": loss_sum.item() / n, "train_accuracy": correct.item() / n,
                  "test_accuracy": evaluate(net, test_x, test_y)}
        records.append(record)
        if not quiet:
            print(f"{'' if round_index is None else f'round {round_index} '}pytorch epoch {epoch}: "
                  f"{seconds:.3f} s, {record['images_per_second']:.0f} images/s, "
                  f"train loss {record['train_loss']:.4f} (accuracy {record['train_accuracy']:.4f}), "
                  f"test accuracy {record['test_accuracy']:.4f}", flush=True)
    return records


def run_stride(args, out_dir, round_index):
    cmd = [args.stride, "train", "lenet5", "--dataset", args.dataset, "--data", args.data,
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr", repr(args.lr),
           "--momentum", repr(args.momentum), "--weight-decay", repr(args.weight_decay),
           "--seed", str(args.seed), "--threads", str(args.threads), "--validation", str(args.validation),
           "--schedule", "constant", "--no-augment", "--quiet", "--out", out_dir]
    if args.train_images is not None:
        cmd[-2:-2] = ["--train-subset", str(args.train_images)]
    print(f"round {round_index} stride: {' '.join(cmd)}", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    except OSError as e:
        raise SystemExit(f"bench_lenet: cannot run {args.stride}: {e}")
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"bench_lenet: stride exited with status {proc.returncode} (its output is above)")
    path = os.path.join(out_dir, "metrics.csv")
    try:
        with open(path, newline="") as f:
            header = f.readline().strip()
            if header != METRICS_HEADER:
                raise SystemExit(f"bench_lenet: {path} has the header\n  {header}\nexpected\n  {METRICS_HEADER}")
            rows = list(csv.DictReader(f, fieldnames=METRICS_HEADER.split(",")))
    except OSError as e:
        raise SystemExit(f"bench_lenet: stride succeeded but {path} cannot be read: {e}")
    records = []
    for row in rows:
        record = {"epoch": int(row["epoch"]), "seconds": float(row["seconds"]),
                  "images_per_second": float(row["images_per_second"]),
                  "train_loss": float(row["train_loss"]), "train_accuracy": float(row["train_accuracy"]),
                  "test_accuracy": float(row["test_accuracy"]) if row["test_accuracy"] else None}
        records.append(record)
        test = "—" if record["test_accuracy"] is None else f"{record['test_accuracy']:.4f}"
        print(f"round {round_index} stride  epoch {record['epoch']}: {record['seconds']:.3f} s, "
              f"{record['images_per_second']:.0f} images/s, train loss {record['train_loss']:.4f} "
              f"(accuracy {record['train_accuracy']:.4f}), test accuracy {test}", flush=True)
    if len(records) != args.epochs:
        raise SystemExit(f"bench_lenet: {path} has {len(records)} epochs, expected {args.epochs}")
    return records


def timed_epochs(runs, skip_first):
    """The epoch records that count, over all rounds."""
    return [r for run in runs for r in run if not (skip_first and r["epoch"] == 1)]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stride", metavar="PATH", help="stride binary: run it side by side with PyTorch")
    parser.add_argument("--dataset", choices=sorted(STATS), default="fashion-mnist")
    parser.add_argument("--data", help="directory of the IDX .gz files (default /usr/share/datasets/DATASET)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each framework (with --stride)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--validation", type=int, default=5000,
                        help="training images held out (a seeded permutation's last ones; PyTorch does not "
                             "evaluate them, stride does, untimed)")
    parser.add_argument("--train-images", type=int,
                        help="train on only the first N of the images not held out (default all; "
                             "stride's --train-subset)")
    parser.add_argument("--skip-first", action=argparse.BooleanOptionalAction, default=True,
                        help="leave epoch 1 of each round out of the summary as warm-up (default on)")
    args = parser.parse_args()
    if args.data is None:
        args.data = os.path.join("/usr/share/datasets", args.dataset)
    if min(args.epochs, args.rounds, args.batch_size, args.threads) < 1:
        parser.error("--epochs, --rounds, --batch-size and --threads must be at least 1")
    if args.stride:
        if not os.path.isfile(args.stride) or not os.access(args.stride, os.X_OK):
            parser.error(f"--stride {args.stride}: no executable there (cargo build --release?)")
        args.stride = os.path.abspath(args.stride)
    args.data = os.path.abspath(args.data)

    torch.set_num_threads(args.threads)
    train_x, train_y = load_split(args.data, args.dataset, "train")
    test_x, test_y = load_split(args.data, args.dataset, "test")
    if not 0 <= args.validation < len(train_x):
        parser.error(f"--validation must be in [0, {len(train_x)})")
    keep = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(args.seed))
    keep = keep[:len(train_x) - args.validation]
    if args.train_images is not None:
        if not 1 <= args.train_images <= len(keep):
            parser.error(f"--train-images must be in [1, {len(keep)}]")
        keep = keep[:args.train_images]
    data = (train_x[keep].contiguous(), train_y[keep].contiguous(), test_x, test_y)
    print(f"{args.dataset}: {len(keep)} training images, {len(test_x)} test images; batch {args.batch_size}, "
          f"lr {args.lr}, momentum {args.momentum}, weight decay {args.weight_decay}, seed {args.seed}, "
          f"{args.threads} threads", flush=True)

    runs = {"pytorch": [], "stride": []}
    if not args.stride:
        runs["pytorch"].append(train_pytorch(args, data, None))
    else:
        with tempfile.TemporaryDirectory(prefix="bench_lenet-") as tmp:
            for k in range(1, args.rounds + 1):
                order = ["pytorch", "stride"] if k % 2 else ["stride", "pytorch"]
                for engine in order:
                    if engine == "pytorch":
                        runs["pytorch"].append(train_pytorch(args, data, k))
                    else:
                        runs["stride"].append(run_stride(args, os.path.join(tmp, f"run-{k}"), k))

    skip_first = args.skip_first and args.epochs > 1
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip() or "unknown"
    rounds = len(runs["pytorch"])
    print()
    print(f"date {datetime.date.today()}, commit {commit}, CPU {cpu_name()} ({cpu_flags()}), {args.threads} threads, "
          f"torch {torch.__version__}, LeNet-5 on {args.dataset} ({len(keep)} training images, batch "
          f"{args.batch_size}), {args.epochs} epochs × {rounds} rounds")
    if skip_first:
        print("epoch times: median (min–max) over epochs 2.." f"{args.epochs} of every round (epoch 1 is warm-up)")
    else:
        print("epoch times: median (min–max) over all epochs of every round, epoch 1 included"
              + (" (only one epoch per round)" if args.skip_first else ""))
    print()
    print("| framework | epoch seconds | images/s | final test accuracy |")
    print("|---|---|---|---|")
    medians = {}
    for engine in ("stride", "pytorch"):
        if not runs[engine]:
            continue
        epochs = timed_epochs(runs[engine], skip_first)
        seconds = [r["seconds"] for r in epochs]
        medians[engine] = statistics.median(seconds)
        rate = statistics.median(r["images_per_second"] for r in epochs)
        finals = [run[-1]["test_accuracy"] for run in runs[engine]]
        finals = [a for a in finals if a is not None]
        accuracy = (f"{statistics.median(finals) * 100:.2f}% ({'/'.join(f'{a * 100:.2f}' for a in finals)})"
                    if finals else "—")
        name = "PyTorch" if engine == "pytorch" else "stride"
        print(f"| {name} | {medians[engine]:.3f} ({min(seconds):.3f}–{max(seconds):.3f}) | {rate:.0f} | {accuracy} |")
    if "stride" in medians:
        ratio = medians["stride"] / medians["pytorch"]
        verdict = (f"stride is {1 / ratio:.2f}× faster" if ratio < 1 else
                   f"stride is {ratio:.2f}× slower" if ratio > 1 else "the same speed")
        print(f"\nepoch time stride / PyTorch: {ratio:.2f} ({verdict})")


if __name__ == "__main__":
    main()
