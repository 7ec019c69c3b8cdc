#!/usr/bin/env python3
"""Whole networks: stride against PyTorch and ONNX Runtime, same machine, threads, batch, run.

Cases (by default):
  inference  resnet18, resnet50, vgg16, googlenet, alexnet at batch 1 and 16, 3×224×224 input,
             1000 classes: one forward pass in evaluation mode without autograd, on a seeded input;
  train      lenet5 at batch 256 and resnet20 at batch 128, 1×28×28 input, 10 classes: one step
             of forward (training mode), cross-entropy, backward and SGD (lr 0.01, momentum 0.9,
             weight decay 5e-4) on a fixed batch.

Engines, each case in its own process per engine and round, so that the process's peak memory
(VmHWM) is that one network's:
  stride       `STRIDE bench net MODEL --batch N --task T --input CxHxW --classes K --threads T
               --min-runs R --min-seconds S --json`;
  pytorch      this script as a child (--worker pytorch): torchvision's network (weights=None;
               googlenet with aux_logits=False, init_weights=True, as tools/check_zoo_torchvision.py
               builds it), or for training the LeNet-5 of tools/bench_lenet.py and the CIFAR
               ResNet-20 of tools/gen_zoo_fixtures.py with a 1-channel stem (as
               tools/bench_train_step.py builds them); torch.set_num_threads(T); inference under
               torch.inference_mode() after model.eval();
  onnxruntime  inference only: the same torchvision network exported once per (network, batch)
               to a temporary .onnx file (torch.onnx.export with the TorchScript exporter,
               dynamo=False, which needs no onnxscript; fixed batch size), run by a child
               (--worker onnxruntime) in an InferenceSession with intra_op_num_threads=T,
               inter_op_num_threads=1, ORT_ENABLE_ALL and the CPUExecutionProvider.
Each child times the same way as tools/bench_torch.py: one warm-up call, then calls until both
--min-runs and --min-seconds are reached; it prints one JSON line with name, task, batch, input,
classes, threads, median_ms, min_ms, max_ms, images_per_second (batch / median seconds),
start_rss_mib (resident memory after the imports, before the network is built), peak_rss_mib
(VmHWM at the end) and engine.

The engines alternate (stride, pytorch, onnxruntime in round 1, the reverse in round 2, ...) so
that drift on a shared machine hits them alike; per case each engine's figure is the median of
its rounds' medians, and its peak memory the largest of its rounds'. The table gives per engine
the median milliseconds per call (one batch) and images/s, the throughput ratios stride / PyTorch
and stride / ONNX Runtime (their median_ms / stride's: above 1 means stride is faster), and the
peak resident memory of each engine's process in MiB. If the stride binary is missing or
`stride bench net` fails on a case, its stderr is printed and the other engines go on.

Usage (from the repository root, after `cargo build --release`; needs the venv described in
tools/README.md plus torchvision, onnx and onnxruntime):
    tools/.venv/bin/python tools/bench_nets.py --threads 2 [--rounds 2] [--json-out FILE]
    tools/.venv/bin/python tools/bench_nets.py --models alexnet --batches 1 --min-seconds 0.2 --rounds 1
"""
import argparse
import datetime
import importlib.metadata
import json
import os
import statistics
import sys
import tempfile
import time

# Light helpers only (no torch): the ONNX Runtime worker imports them too, and a torch import
# would count in its memory.
from bench_compare import cpu_flags, cpu_name, geometric_mean, git_commit, time_call, try_json_lines

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENGINES = ["stride", "pytorch", "onnxruntime"]
IMAGENET = ((3, 224, 224), 1000)
GREY_28 = ((1, 28, 28), 10)  # Fashion-MNIST's images, as stride's zoo trains them
# (network, task, default batches, (input, classes))
CASES = ([(m, "inference", [1, 16], IMAGENET) for m in ("resnet18", "resnet50", "vgg16", "googlenet", "alexnet")]
         + [("lenet5", "train", [256], GREY_28), ("resnet20", "train", [128], GREY_28)])
NAMES = {"stride": "stride", "pytorch": "PyTorch", "onnxruntime": "ONNX Runtime"}


def memory_mib(field):
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # the kernel reports kB
    return None


def input_shape(text):
    return tuple(int(v) for v in text.split("x"))


def shape_text(shape):
    return "x".join(str(v) for v in shape)


# ---------------------------------------------------------------------------------------------
# Workers: each runs in its own process and prints one JSON line.

def torch_network(name):
    """The PyTorch twin of stride's network `name`, seeded, in training mode."""
    import torch
    from bench_train_step import CIFAR_DEPTHS, torch_model  # LeNet-5, CIFAR ResNets with a 1-channel stem
    from check_zoo_torchvision import build  # torchvision's networks as stride's zoo mirrors them
    torch.manual_seed(0)
    return torch_model(name) if name == "lenet5" or name in CIFAR_DEPTHS else build(name)


def report(args, engine, times, start_rss):
    median = statistics.median(times)
    print(json.dumps({
        "name": args.model, "task": args.task, "batch": args.batch, "input": list(input_shape(args.input)),
        "classes": args.classes, "threads": args.threads,
        "median_ms": round(median, 4), "min_ms": round(min(times), 4), "max_ms": round(max(times), 4),
        "images_per_second": round(args.batch / (median / 1e3), 2),
        "start_rss_mib": round(start_rss, 1), "peak_rss_mib": round(memory_mib("VmHWM"), 1), "engine": engine,
    }), flush=True)


def pytorch_worker(args):
    import torch
    import torch.nn.functional as F
    import bench_train_step, check_zoo_torchvision  # noqa: F401 (imported now so start_rss counts them)
    torch.set_num_threads(args.threads)
    start_rss = memory_mib("VmRSS")
    net = torch_network(args.model)
    x = torch.randn(args.batch, *input_shape(args.input), generator=torch.Generator().manual_seed(1))
    if args.task == "inference":
        net.eval()
        with torch.inference_mode():
            times = time_call(lambda: net(x), args.min_runs, args.min_seconds)
    else:
        net.train()
        optimiser = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        labels = torch.arange(args.batch) % args.classes

        def step():
            optimiser.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), labels).backward()
            optimiser.step()
        times = time_call(step, args.min_runs, args.min_seconds)
    report(args, "pytorch", times, start_rss)


def export_worker(args):
    """Writes the network in evaluation mode to args.onnx; in a child so that the parent never
    holds torch and its memory."""
    import warnings
    import torch
    net = torch_network(args.model).eval()
    x = torch.randn(args.batch, *input_shape(args.input))
    started = time.perf_counter()
    with warnings.catch_warnings():
        # torch 2.15 calls the TorchScript exporter deprecated; it still works and, unlike the
        # default dynamo exporter, does not need onnxscript.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (x,), args.onnx, dynamo=False, input_names=["input"], output_names=["logits"])
    print(json.dumps({"onnx": args.onnx, "seconds": round(time.perf_counter() - started, 2)}), flush=True)


def onnxruntime_worker(args):
    import numpy as np
    import onnxruntime as ort
    start_rss = memory_mib("VmRSS")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads  # counts the calling thread, as stride's --threads does
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(args.onnx, options, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((args.batch, *input_shape(args.input)), dtype=np.float32)
    feed = {session.get_inputs()[0].name: x}
    times = time_call(lambda: session.run(None, feed), args.min_runs, args.min_seconds)
    report(args, "onnxruntime", times, start_rss)


# ---------------------------------------------------------------------------------------------
# The driver.

def engine_command(args, engine, model, task, batch, shape, classes, onnx_path):
    common = ["--batch", str(batch), "--task", task, "--input", shape_text(shape), "--classes", str(classes),
              "--threads", str(args.threads), "--min-runs", str(args.min_runs), "--min-seconds", str(args.min_seconds)]
    if engine == "stride":
        return [args.stride_bin, "bench", "net", model] + common + ["--json"]
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", engine, "--model", model] + common
    return cmd + (["--onnx", onnx_path] if engine == "onnxruntime" else [])


def selected_cases(args):
    models = args.models.split(",") if args.models else None
    tasks = args.tasks.split(",")
    known = {m for m, *_ in CASES}
    if models and set(models) - known:
        sys.exit(f"error: unknown network(s) {', '.join(sorted(set(models) - known))}; "
                 f"choose from {', '.join(m for m, *_ in CASES)}")
    cases = []
    for model, task, batches, (shape, classes) in CASES:
        if (models is None or model in models) and task in tasks:
            for batch in ([int(b) for b in args.batches.split(",")] if args.batches else batches):
                cases.append((model, task, batch, shape, classes))
    if not cases:
        sys.exit("error: no case left after --models and --tasks")
    return cases


def version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cell(runs):
    """'ms (images/s)' of an engine's median over rounds, or a dash."""
    if not runs:
        return "–"
    ms = statistics.median(r["median_ms"] for r in runs)
    rate = runs[0]["batch"] / (ms / 1e3)
    return f"{ms:.{2 if ms < 10 else 1 if ms < 100 else 0}f} ({rate:.{1 if rate < 100 else 0}f})"


def run_case(args, tmp, case, rows):
    """All rounds of one case; returns {engine: its rows} for the engines that succeeded."""
    model, task, batch, shape, classes = case
    label = f"{model} {task} batch {batch}"
    engines = ["stride", "pytorch"] + (["onnxruntime"] if task == "inference" and not args.no_onnx else [])
    if not os.path.exists(args.stride_bin):
        engines.remove("stride")  # said once at the start
    onnx_path = os.path.join(tmp, f"{model}-b{batch}.onnx")
    if "onnxruntime" in engines:
        print(f"{label}: exporting to ONNX ...", file=sys.stderr, flush=True)
        export = [sys.executable, os.path.abspath(__file__), "--worker", "export", "--model", model,
                  "--batch", str(batch), "--input", shape_text(shape), "--classes", str(classes), "--onnx", onnx_path]
        _, error = try_json_lines(export)
        if error:
            print(f"{label}: the ONNX export failed, no ONNX Runtime figure: {error}", file=sys.stderr, flush=True)
            engines.remove("onnxruntime")
    runs = {engine: [] for engine in engines}
    for r in range(args.rounds):
        for engine in (engines if r % 2 == 0 else engines[::-1]):
            if engine not in runs:
                continue  # failed in an earlier round
            found, error = try_json_lines(engine_command(args, engine, model, task, batch, shape, classes, onnx_path))
            if not error and "median_ms" not in found[-1]:
                error = f"its JSON line has no median_ms: {found[-1]}"
            if error:
                print(f"{label}: {engine} failed, left out of this case: {error}", file=sys.stderr, flush=True)
                del runs[engine]
                continue
            row = dict(found[-1], round=r + 1)
            rows.append(row)
            runs[engine].append(row)
            print(f"{label}, round {r + 1}: {engine} {row['median_ms']:.2f} ms, peak "
                  f"{row.get('peak_rss_mib', float('nan')):.0f} MiB", file=sys.stderr, flush=True)
    if os.path.exists(onnx_path):
        os.remove(onnx_path)  # VGG-16's is half a gigabyte
    return runs


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="", help="comma list: only these networks' cases")
    parser.add_argument("--batches", default="", help="comma list replacing the default batch sizes of every case")
    parser.add_argument("--tasks", default="inference,train", help="comma list of inference,train")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the engines in alternating order")
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--min-seconds", type=float, default=1.0)
    parser.add_argument("--stride-bin", default=os.path.join(ROOT, "target", "release", "stride"))
    parser.add_argument("--no-onnx", action="store_true", help="leave ONNX Runtime out")
    parser.add_argument("--json-out", help="also write the header and every engine's raw rows to this file")
    worker = parser.add_argument_group("worker (internal: how the script runs its own child processes)")
    worker.add_argument("--worker", choices=["pytorch", "onnxruntime", "export"])
    worker.add_argument("--model")
    worker.add_argument("--batch", type=int)
    worker.add_argument("--task", choices=["inference", "train"], default="inference")
    worker.add_argument("--input", help="CxHxW")
    worker.add_argument("--classes", type=int)
    worker.add_argument("--onnx", help="the .onnx file to write (export) or run (onnxruntime)")
    args = parser.parse_args()

    if args.worker:
        {"pytorch": pytorch_worker, "onnxruntime": onnxruntime_worker, "export": export_worker}[args.worker](args)
        return

    cases = selected_cases(args)
    if not os.path.exists(args.stride_bin):
        print(f"bench_nets: no stride binary at {args.stride_bin} (run `cargo build --release` or pass "
              f"--stride-bin); going on without stride", file=sys.stderr, flush=True)
    rows, results = [], []
    with tempfile.TemporaryDirectory(prefix="bench_nets-") as tmp:
        for case in cases:
            results.append((case, run_case(args, tmp, case, rows)))

    header = {"date": str(datetime.date.today()), "commit": git_commit(), "cpu": cpu_name(), "cpu_flags": cpu_flags(),
              "threads": args.threads, "torch": version("torch"), "torchvision": version("torchvision"),
              "onnxruntime": version("onnxruntime"), "rounds": args.rounds, "min_seconds": args.min_seconds}
    print(f"date {header['date']}, commit {header['commit']}, CPU {header['cpu']} ({header['cpu_flags']}), "
          f"{args.threads} threads, torch {header['torch']}, torchvision {header['torchvision']}, "
          f"onnxruntime {header['onnxruntime']}, {args.rounds} rounds of at least {args.min_runs} runs "
          f"and {args.min_seconds:g} s")
    print()
    print("| network | task | batch | stride ms (img/s) | PyTorch ms (img/s) | ONNX Runtime ms (img/s) "
          "| stride/PyTorch | stride/ORT | peak MiB stride / PyTorch / ORT |")
    print("|---|---|---|---|---|---|---|---|---|")
    ratios = {"pytorch": [], "onnxruntime": []}
    for (model, task, batch, _, _), runs in results:
        median = {e: statistics.median(r["median_ms"] for r in runs[e]) for e in runs if runs[e]}
        ratio_cells = []
        for other in ("pytorch", "onnxruntime"):
            if "stride" in median and other in median:
                ratio = median[other] / median["stride"]  # throughput stride / other
                ratios[other].append(ratio)
                ratio_cells.append(f"{ratio:.2f}×")
            else:
                ratio_cells.append("–")
        peaks = [max((r.get("peak_rss_mib") or 0 for r in runs.get(e, [])), default=0) for e in ENGINES]
        peak_cell = " / ".join(f"{p:.0f}" if p else "–" for p in peaks)
        print(f"| {model} | {task} | {batch} | {' | '.join(cell(runs.get(e)) for e in ENGINES)} | "
              f"{' | '.join(ratio_cells)} | {peak_cell} |")
    if any(ratios.values()):
        print()
    for other, values in ratios.items():
        if values:
            print(f"geometric mean of throughput stride / {NAMES[other]}: {geometric_mean(values):.2f}× over "
                  f"{len(values)} cases; min {min(values):.2f}×, max {max(values):.2f}×")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
