#!/usr/bin/env python3
"""Two stride binaries side by side on the same convolution layers, in alternating rounds.

    tools/ab_conv.py BASE HEAD [--layers FILE] [--rounds 4] [--threads 2] [-- extra bench args]

Runs `BIN bench conv --layers FILE --json --threads T --no-peak [extra]` for BASE and HEAD in
alternating order (BASE, HEAD, then HEAD, BASE, ...), so that a machine whose load drifts
treats both alike, and prints per layer and direction the median of the rounds' medians for
each, their min–max, and the speed-up BASE / HEAD; then the geometric mean of the speed-ups.
BASE and HEAD are typically two commits built into different target directories, e.g.
`git worktree add /tmp/base <rev> && CARGO_TARGET_DIR=/tmp/base-target cargo build --release`.
"""
import argparse
import collections
import json
import statistics
import subprocess


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base")
    parser.add_argument("head")
    parser.add_argument("--layers", default="bench/conv_layers.json")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("extra", nargs="*", help="passed to `stride bench conv` (after --)")
    # `--` before the extra arguments: argparse hands the positionals out before it sees them,
    # so whatever it does not know is passed on as they came.
    args, rest = parser.parse_known_args()
    args.extra += [a for a in rest if a != "--"]
    times = {"base": collections.defaultdict(list), "head": collections.defaultdict(list)}
    for r in range(args.rounds):
        order = [("base", args.base), ("head", args.head)]
        for name, binary in order if r % 2 == 0 else reversed(order):
            command = [binary, "bench", "conv", "--layers", args.layers, "--json", "--threads", str(args.threads), "--no-peak"]
            out = subprocess.run(command + args.extra, capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                if line.startswith("{"):
                    row = json.loads(line)
                    times[name][(row["name"], row["direction"])].append(row["median_ms"])
    ratios = []
    for key, base in times["base"].items():
        head = times["head"][key]
        ratio = statistics.median(base) / statistics.median(head)
        ratios.append(ratio)
        print(
            f"{key[0]:32} {key[1]:16} base {statistics.median(base):8.3f} ({min(base):.2f}–{max(base):.2f})"
            f"  head {statistics.median(head):8.3f} ({min(head):.2f}–{max(head):.2f})  {ratio:.2f}×"
        )
    print(f"geometric mean of the speed-ups: {statistics.geometric_mean(ratios):.3f}× over {len(ratios)} rows")


if __name__ == "__main__":
    main()
