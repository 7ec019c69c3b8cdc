"""PyTorch golden fixtures for stride's convolution, pooling and batch normalisation.

Writes one safetensors file per family into crates/tensor/tests/fixtures/:

    conv.safetensors   conv1d / conv2d / conv3d
    pool.safetensors   max / avg pooling in 1-3D, adaptive pooling, local response norm
    conv_grad.safetensors   the gradients of conv1d / conv2d / conv3d
    pool_grad.safetensors   the gradients of pooling, adaptive pooling and LRN
    batch_norm.safetensors  batch norm in training and evaluation: outputs, running statistics,
                            gradients

Each case stores `{case}/input`, `{case}/weight` and `{case}/bias` (when the op has them) and
`{case}/output`, all float32 and contiguous. The file's `__metadata__` records the generator, the
torch version, the base seed and `cases`: a JSON list with, per case, its name, op, the exact
PyTorch expression that produced the output (`call`, evaluated as written with `x`, `w`, `b` bound
to the stored tensors) and the parameters as separate fields, so that the Rust tests
(crates/tensor/tests/golden*.rs) need neither Python nor a parser for the call.

Every output is also recomputed in float64 from the same float32 inputs; generation fails if the
float32 result strays from it, so the fixtures sit far inside the tolerance the tests allow.

A `conv_grad` case stores, beside `input`, `weight` and `bias`, a random `grad_output` and the
gradients `grad_input`, `grad_weight` and `grad_bias` (when the call has a bias) that
`torch.autograd.grad` gives for it; its record adds `backward`, the expression evaluated.

Usage (see tools/README.md for the environment):

    python tools/gen_fixtures.py            # rewrite the fixtures
    python tools/gen_fixtures.py --check    # exit 1 if the committed fixtures are stale
"""

import argparse
import json
import math
import pathlib
import sys
import warnings
import zlib

import torch
import torch.nn.functional as F
from safetensors.torch import load, save

GENERATOR = "tools/gen_fixtures.py"
SEED = 20240601
ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "crates" / "tensor" / "tests" / "fixtures"
# The largest tensor a case may hold, except the one full-size GoogLeNet pool that is the point of
# its case; keeps the committed files small enough to review by size.
MAX_ELEMENTS = 3000
# How far the float32 output may stray from the float64 recomputation: an order of magnitude
# inside the Rust tests' 1e-5 + 1e-4·|expected|.
SELF_CHECK_ABS, SELF_CHECK_REL = 2e-6, 1e-5


def per_axis(value, n):
    """An int or a sequence of n ints, as a list of n ints."""
    if isinstance(value, int):
        return [value] * n
    assert len(value) == n, (value, n)
    return list(value)


def arg(values):
    """How PyTorch is called with a per-axis value: an int when all axes agree, else a tuple."""
    if all(v == values[0] for v in values):
        return str(values[0])
    return str(tuple(values))


def case_seed(name):
    # Seeding each case from its name keeps every other case's data unchanged when one is added.
    return SEED + zlib.crc32(name.encode())


def randn(shape):
    return torch.randn(shape, dtype=torch.float32)


def distinct(shape, negative=False):
    """A random permutation of distinct values, so max pooling has no ties to break.

    Integers over a power of two are exact in float32, so the values stay distinct; `negative`
    makes them all negative, which tells padding with -inf apart from padding with zeros.
    """
    n = math.prod(shape)
    assert n < 2**24
    perm = torch.randperm(n).to(torch.float32)
    offset = n if negative else n // 2
    return ((perm - offset) / 64).reshape(shape)


class Family:
    """The cases of one fixture file."""

    def __init__(self, name):
        self.name = name
        self.cases = []
        self.tensors = {}

    def add(self, record, call, tensors, allow_large=False):
        """Evaluates `call` on `tensors` (x, w, b), checks it in float64 and stores the case."""
        name = record["name"]
        assert all(c["name"] != name for c in self.cases), f"duplicate case {name}"
        scope = {"F": F, "torch": torch}
        output = eval(call, scope, dict(tensors))
        exact = eval(call, scope, {k: v.double() for k, v in tensors.items()})
        error = (output.double() - exact).abs()
        bound = SELF_CHECK_ABS + SELF_CHECK_REL * exact.abs()
        if not bool((error <= bound).all()):
            raise AssertionError(f"{name}: float32 differs from float64 by {error.max().item():.3g}")
        stored = {"input": tensors["x"], "output": output}
        if "w" in tensors:
            stored["weight"] = tensors["w"]
        if "b" in tensors:
            stored["bias"] = tensors["b"]
        for role, tensor in stored.items():
            assert tensor.dtype == torch.float32
            if not allow_large:
                assert tensor.numel() <= MAX_ELEMENTS, f"{name}/{role} has {tensor.numel()} elements"
            self.tensors[f"{name}/{role}"] = tensor.detach().clone().contiguous()
        self.cases.append({"name": name, "op": record["op"], "call": call} | record)

    def serialize(self):
        metadata = {
            "generator": GENERATOR,
            "torch": torch.__version__,
            "seed": str(SEED),
            "cases": json.dumps(self.cases, separators=(",", ":")),
        }
        return save(self.tensors, metadata=metadata)


def conv(fam, name, x_shape, w_shape, **options):
    """A convolution case; see `conv_setup` for the options."""
    record, call, tensors = conv_setup(name, x_shape, w_shape, **options)
    fam.add(record, call, tensors)


def conv_setup(name, x_shape, w_shape, *, stride=1, padding=0, pad=None, dilation=1, groups=1,
               bias=True, flip=False):
    """The record, PyTorch call and seeded tensors of a convolution case.

    `padding` is PyTorch's symmetric padding (an int, a tuple or "same"); `pad=(begin, end)` is
    asymmetric padding, applied with F.pad before an unpadded convolution since F.conv has none.
    """
    torch.manual_seed(case_seed(name))
    n = len(x_shape) - 2
    op = f"conv{n}d"
    x = randn(x_shape)
    w = randn(w_shape)
    b = randn(w_shape[0])
    stride, dilation = per_axis(stride, n), per_axis(dilation, n)
    record = {"name": name, "op": op, "kernel": list(w_shape[2:]), "stride": stride}

    source = "x"
    kwargs = []
    if pad is not None:
        assert padding == 0
        begin, end = per_axis(pad[0], n), per_axis(pad[1], n)
        # F.pad lists (begin, end) pairs from the last axis to the first.
        pairs = [p for i in reversed(range(n)) for p in (begin[i], end[i])]
        source = f"F.pad(x, {tuple(pairs)})"
        record.update(padding_begin=begin, padding_end=end)
    elif padding == "same":
        kwargs.append("padding='same'")
        record["padding"] = "same"
    else:
        padding = per_axis(padding, n)
        if any(padding):
            kwargs.append(f"padding={arg(padding)}")
        record.update(padding_begin=padding, padding_end=padding)
    if any(s != 1 for s in stride):
        kwargs.insert(0, f"stride={arg(stride)}")
    if any(d != 1 for d in dilation):
        kwargs.append(f"dilation={arg(dilation)}")
    if groups != 1:
        kwargs.append(f"groups={groups}")
    record.update(dilation=dilation, groups=groups, bias=bias, flip=flip)

    weight = f"w.flip({tuple(range(2, 2 + n))})" if flip else "w"
    operands = [source, weight] + (["b"] if bias else [])
    call = f"F.{op}({', '.join(operands + kwargs)})"
    return record, call, {"x": x, "w": w} | ({"b": b} if bias else {})


def conv_cases():
    fam = Family("conv")
    # conv1d
    conv(fam, "conv1d_basic", (1, 3, 16), (4, 3, 3))
    conv(fam, "conv1d_s2_p1_batch3_nobias", (3, 2, 15), (3, 2, 5), stride=2, padding=1, bias=False)
    conv(fam, "conv1d_s3_p2", (2, 4, 20), (2, 4, 4), stride=3, padding=2)
    conv(fam, "conv1d_dilation2", (1, 2, 17), (3, 2, 3), padding=2, dilation=2)
    conv(fam, "conv1d_same_odd", (2, 3, 12), (2, 3, 5), padding="same")
    conv(fam, "conv1d_same_even", (1, 3, 11), (2, 3, 4), padding="same")
    conv(fam, "conv1d_asymmetric_pad", (1, 2, 10), (3, 2, 3), pad=(1, 3))
    conv(fam, "conv1d_groups2", (2, 4, 12), (6, 2, 3), padding=1, groups=2)
    conv(fam, "conv1d_depthwise", (1, 5, 14), (5, 1, 3), stride=2, padding=1, groups=5, bias=False)
    # conv2d
    conv(fam, "conv2d_basic", (1, 3, 8, 8), (4, 3, 3, 3))
    conv(fam, "conv2d_s2_p1_batch3_nobias", (3, 2, 9, 9), (4, 2, 3, 3), stride=2, padding=1, bias=False)
    conv(fam, "conv2d_s3_p2", (2, 3, 10, 11), (2, 3, 4, 4), stride=3, padding=2)
    conv(fam, "conv2d_nonsquare_mixed", (2, 4, 9, 13), (4, 2, 3, 5), stride=(2, 1), padding=(1, 0),
         dilation=(1, 2), groups=2)
    conv(fam, "conv2d_dilation2", (1, 2, 11, 11), (3, 2, 3, 3), padding=2, dilation=2)
    conv(fam, "conv2d_same_odd", (2, 3, 7, 9), (4, 3, 3, 3), padding="same")
    conv(fam, "conv2d_same_even", (1, 2, 8, 7), (3, 2, 4, 2), padding="same", bias=False)
    conv(fam, "conv2d_same_dilation2", (1, 2, 9, 8), (2, 2, 3, 2), padding="same", dilation=2)
    conv(fam, "conv2d_asymmetric_pad", (1, 3, 7, 8), (2, 3, 3, 3), pad=((1, 0), (0, 2)))
    conv(fam, "conv2d_asymmetric_pad_s2", (2, 2, 8, 8), (3, 2, 3, 2), stride=2, pad=((0, 2), (1, 1)))
    conv(fam, "conv2d_groups2", (1, 4, 8, 8), (6, 2, 3, 3), padding=1, groups=2)
    conv(fam, "conv2d_depthwise", (2, 4, 9, 9), (8, 1, 3, 3), padding=1, groups=4)
    conv(fam, "conv2d_depthwise_s2", (1, 6, 10, 10), (6, 1, 3, 3), stride=2, padding=1, groups=6,
         bias=False)
    conv(fam, "conv2d_1x1", (3, 8, 5, 5), (6, 8, 1, 1))
    conv(fam, "conv2d_1x1_s2", (1, 8, 7, 7), (4, 8, 1, 1), stride=2, bias=False)
    conv(fam, "conv2d_flip", (1, 2, 7, 6), (3, 2, 3, 2), padding=1, flip=True)
    conv(fam, "conv2d_alexnet_conv1_small", (1, 3, 23, 23), (4, 3, 11, 11), stride=4, padding=2)
    # conv3d
    conv(fam, "conv3d_basic", (1, 2, 5, 6, 6), (3, 2, 3, 3, 3))
    conv(fam, "conv3d_s2_p1_batch3_nobias", (3, 2, 5, 5, 5), (2, 2, 3, 3, 3), stride=2, padding=1,
         bias=False)
    conv(fam, "conv3d_s3_p2_nonsquare", (1, 2, 7, 8, 9), (2, 2, 2, 3, 4), stride=(3, 2, 3),
         padding=(2, 1, 2))
    conv(fam, "conv3d_dilation2", (1, 2, 7, 7, 7), (2, 2, 3, 3, 3), padding=1, dilation=2)
    conv(fam, "conv3d_same_even", (1, 2, 5, 6, 5), (2, 2, 2, 3, 4), padding="same")
    conv(fam, "conv3d_asymmetric_pad", (1, 2, 4, 5, 6), (2, 2, 3, 3, 3), pad=((1, 0, 2), (0, 1, 1)))
    conv(fam, "conv3d_groups2", (2, 4, 4, 5, 5), (4, 2, 3, 3, 3), padding=1, groups=2)
    conv(fam, "conv3d_depthwise", (1, 3, 5, 6, 6), (3, 1, 3, 3, 3), padding=1, groups=3)
    conv(fam, "conv3d_flip", (1, 2, 5, 5, 6), (2, 2, 2, 3, 3), flip=True)
    return fam


# The gradients sum up to N·|O| products (dw, db), longer sums than the forward's: the self-check
# allows more, still an order of magnitude inside the Rust test's 1e-4 + 1e-4·|expected|.
GRAD_CHECK_ABS, GRAD_CHECK_REL = 1e-5, 1e-5
# What the stored gradients are, evaluated with y = the case's call and dy = its grad_output.
BACKWARD = "torch.autograd.grad(y, (x, w, b), dy)"


def gradients(call, tensors, dy):
    """(grad_input, grad_weight, grad_bias) of `call` for the upstream gradient `dy`; the bias
    gradient is None when the call has no bias."""
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in tensors.items()}
    y = eval(call, {"F": F, "torch": torch}, dict(leaves))
    order = [leaves[k] for k in ("x", "w", "b") if k in leaves]
    grads = torch.autograd.grad(y, order, dy.to(y.dtype))
    return tuple(grads) + ((None,) if "b" not in leaves else ())


def conv_grad(fam, name, x_shape, w_shape, **options):
    """A convolution's gradients for a random upstream gradient, checked against float64."""
    record, call, tensors = conv_setup(name, x_shape, w_shape, **options)
    assert all(c["name"] != name for c in fam.cases), f"duplicate case {name}"
    with torch.no_grad():
        y_shape = eval(call, {"F": F, "torch": torch}, dict(tensors)).shape
    # Drawn after x, w and b, so those are exactly what the forward case of the same name holds.
    dy = randn(y_shape)
    got = gradients(call, tensors, dy)
    exact = gradients(call, {k: v.double() for k, v in tensors.items()}, dy.double())
    stored = {"input": tensors["x"], "weight": tensors["w"], "grad_output": dy}
    if "b" in tensors:
        stored["bias"] = tensors["b"]
    for role, g32, g64 in zip(("grad_input", "grad_weight", "grad_bias"), got, exact):
        if g32 is None:
            continue
        error = (g32.double() - g64).abs()
        if not bool((error <= GRAD_CHECK_ABS + GRAD_CHECK_REL * g64.abs()).all()):
            raise AssertionError(f"{name}/{role}: float32 differs from float64 by {error.max().item():.3g}")
        stored[role] = g32
    for role, tensor in stored.items():
        assert tensor.dtype == torch.float32
        assert tensor.numel() <= MAX_ELEMENTS, f"{name}/{role} has {tensor.numel()} elements"
        fam.tensors[f"{name}/{role}"] = tensor.detach().clone().contiguous()
    fam.cases.append({"name": name, "op": record["op"], "call": call, "backward": BACKWARD} | record)


def conv_grad_cases():
    fam = Family("conv_grad")
    conv_grad(fam, "conv1d_grad_basic", (1, 3, 16), (4, 3, 3))
    conv_grad(fam, "conv1d_grad_s2_p1_batch3_nobias", (3, 2, 15), (3, 2, 5), stride=2, padding=1,
              bias=False)
    conv_grad(fam, "conv1d_grad_dilation2_asymmetric_pad", (2, 2, 17), (3, 2, 3), dilation=2,
              pad=(1, 3))
    conv_grad(fam, "conv1d_grad_depthwise", (2, 5, 14), (5, 1, 3), stride=2, padding=1, groups=5)
    conv_grad(fam, "conv2d_grad_basic_batch2", (2, 3, 8, 8), (4, 3, 3, 3))
    conv_grad(fam, "conv2d_grad_s2_p1", (2, 2, 9, 9), (4, 2, 3, 3), stride=2, padding=1)
    conv_grad(fam, "conv2d_grad_nonsquare_mixed", (2, 4, 9, 13), (4, 2, 3, 5), stride=(2, 1),
              padding=(1, 0), dilation=(1, 2), groups=2)
    conv_grad(fam, "conv2d_grad_asymmetric_pad_s2", (2, 2, 8, 8), (3, 2, 3, 2), stride=2,
              pad=((0, 2), (1, 1)))
    conv_grad(fam, "conv2d_grad_depthwise_multiplier2", (2, 4, 9, 9), (8, 1, 3, 3), padding=1,
              groups=4, bias=False)
    conv_grad(fam, "conv2d_grad_1x1_s2", (3, 8, 7, 7), (4, 8, 1, 1), stride=2)
    conv_grad(fam, "conv2d_grad_same_even", (1, 2, 8, 7), (3, 2, 4, 2), padding="same")
    conv_grad(fam, "conv2d_grad_flip", (2, 2, 7, 6), (3, 2, 3, 2), padding=1, flip=True)
    conv_grad(fam, "conv3d_grad_basic", (1, 2, 5, 6, 6), (3, 2, 3, 3, 3))
    conv_grad(fam, "conv3d_grad_s2_p1_batch2", (2, 2, 5, 5, 5), (2, 2, 3, 3, 3), stride=2, padding=1)
    conv_grad(fam, "conv3d_grad_dilation_groups_asymmetric", (2, 4, 5, 6, 7), (4, 2, 2, 3, 2),
              stride=(1, 2, 1), dilation=(2, 1, 2), groups=2, pad=((1, 0, 2), (0, 1, 1)))
    return fam


def pool(fam, name, kind, x_shape, kernel, *, stride=None, padding=0, dilation=1, ceil_mode=False,
         count_include_pad=True, divisor_override=None, negative=False, allow_large=False):
    """A max or average pooling case; `stride` defaults to the kernel, as in PyTorch."""
    torch.manual_seed(case_seed(name))
    n = len(x_shape) - 2
    op = f"{kind}_pool{n}d"
    kernel = per_axis(kernel, n)
    stride = per_axis(stride if stride is not None else kernel, n)
    padding, dilation = per_axis(padding, n), per_axis(dilation, n)
    x = distinct(x_shape, negative) if kind == "max" else randn(x_shape)
    record = {"name": name, "op": op, "kernel": kernel, "stride": stride, "padding_begin": padding,
              "padding_end": padding, "ceil_mode": ceil_mode}
    kwargs = [f"stride={arg(stride)}"]
    if any(padding):
        kwargs.append(f"padding={arg(padding)}")
    if kind == "max":
        assert not (count_include_pad is not True or divisor_override)
        if any(d != 1 for d in dilation):
            kwargs.append(f"dilation={arg(dilation)}")
        record["dilation"] = dilation
    else:
        assert all(d == 1 for d in dilation), "PyTorch's average pooling has no dilation"
        assert divisor_override is None or n > 1, "F.avg_pool1d has no divisor_override"
        record.update(count_include_pad=count_include_pad, divisor_override=divisor_override)
    if ceil_mode:
        kwargs.append("ceil_mode=True")
    if kind == "avg" and not count_include_pad:
        kwargs.append("count_include_pad=False")
    if divisor_override is not None:
        kwargs.append(f"divisor_override={divisor_override}")
    call = f"F.{op}(x, {arg(kernel)}, {', '.join(kwargs)})"
    fam.add(record, call, {"x": x}, allow_large=allow_large)


def adaptive(fam, name, kind, x_shape, output_size, *, is_global=False):
    torch.manual_seed(case_seed(name))
    n = len(x_shape) - 2
    op = f"adaptive_{kind}_pool{n}d"
    output_size = per_axis(output_size, n)
    x = distinct(x_shape) if kind == "max" else randn(x_shape)
    call = f"F.{op}(x, {arg(output_size)})"
    record = {"name": name, "op": op, "output_size": output_size}
    if is_global:
        record["global"] = True
    fam.add(record, call, {"x": x})


def lrn(fam, name, x_shape, size, alpha, beta, k, scale):
    """Local response norm across channels; `scale` sets how much the sum of squares matters."""
    torch.manual_seed(case_seed(name))
    x = randn(x_shape) * scale
    record = {"name": name, "op": "local_response_norm", "size": size, "alpha": alpha, "beta": beta,
              "k": k}
    call = f"F.local_response_norm(x, {size}, alpha={alpha!r}, beta={beta!r}, k={k!r})"
    fam.add(record, call, {"x": x})


def pool_cases():
    fam = Family("pool")
    # 1D
    pool(fam, "max_pool1d_k3_s2_p1", "max", (2, 3, 15), 3, stride=2, padding=1)
    pool(fam, "max_pool1d_dilation2", "max", (1, 2, 16), 3, stride=1, padding=1, dilation=2)
    pool(fam, "max_pool1d_ceil", "max", (1, 3, 10), 3, stride=2, ceil_mode=True)
    pool(fam, "avg_pool1d_k3_s2_p1", "avg", (2, 3, 15), 3, stride=2, padding=1)
    pool(fam, "avg_pool1d_k4_s3_p2_exclude_pad", "avg", (1, 2, 13), 4, stride=3, padding=2,
         count_include_pad=False)
    pool(fam, "avg_pool1d_ceil_include_pad", "avg", (1, 2, 10), 3, stride=2, padding=1,
         ceil_mode=True)
    # 2D max
    pool(fam, "max_pool2d_lenet_k2_s2", "max", (2, 3, 10, 10), 2)
    pool(fam, "max_pool2d_resnet_k3_s2_p1", "max", (2, 2, 12, 12), 3, stride=2, padding=1)
    pool(fam, "max_pool2d_negative_pad", "max", (1, 2, 7, 7), 3, stride=2, padding=1, negative=True)
    pool(fam, "max_pool2d_inception_k3_s1_p1", "max", (1, 3, 7, 7), 3, stride=1, padding=1)
    pool(fam, "max_pool2d_googlenet_ceil_112", "max", (1, 2, 112, 112), 3, stride=2, ceil_mode=True,
         allow_large=True)
    pool(fam, "max_pool2d_googlenet_ceil_14", "max", (2, 3, 14, 14), 3, stride=2, ceil_mode=True)
    pool(fam, "max_pool2d_ceil_pad_drops_last", "max", (1, 2, 5, 6), 2, stride=2, padding=1,
         ceil_mode=True)
    pool(fam, "max_pool2d_nonsquare_mixed", "max", (1, 2, 11, 12), (3, 2), stride=(2, 1),
         padding=(1, 0), dilation=(1, 2))
    pool(fam, "max_pool2d_dilation2", "max", (1, 2, 11, 11), 3, stride=2, padding=1, dilation=2)
    # 2D average
    pool(fam, "avg_pool2d_k2_s2", "avg", (2, 3, 8, 8), 2)
    pool(fam, "avg_pool2d_k3_s2_p1_include_pad", "avg", (2, 2, 9, 9), 3, stride=2, padding=1)
    pool(fam, "avg_pool2d_k3_s2_p1_exclude_pad", "avg", (2, 2, 9, 9), 3, stride=2, padding=1,
         count_include_pad=False)
    pool(fam, "avg_pool2d_ceil_include_pad", "avg", (1, 2, 8, 8), 3, stride=2, padding=1,
         ceil_mode=True)
    pool(fam, "avg_pool2d_ceil_exclude_pad", "avg", (1, 2, 8, 8), 3, stride=2, padding=1,
         ceil_mode=True, count_include_pad=False)
    pool(fam, "avg_pool2d_ceil_no_pad", "avg", (1, 2, 10, 9), 3, stride=2, ceil_mode=True)
    pool(fam, "avg_pool2d_divisor_override", "avg", (1, 3, 8, 8), 2, divisor_override=3)
    pool(fam, "avg_pool2d_divisor_override_pad", "avg", (1, 2, 7, 7), 3, stride=2, padding=1,
         divisor_override=5)
    pool(fam, "avg_pool2d_nonsquare", "avg", (1, 2, 9, 12), (2, 4), stride=(3, 2), padding=(1, 2))
    pool(fam, "avg_pool2d_googlenet_aux_14_to_4", "avg", (1, 4, 14, 14), 5, stride=3)
    # 3D
    pool(fam, "max_pool3d_k2_s2", "max", (1, 2, 6, 6, 6), 2)
    pool(fam, "max_pool3d_k3_s2_p1", "max", (2, 2, 5, 6, 7), 3, stride=2, padding=1)
    pool(fam, "max_pool3d_dilation_ceil", "max", (1, 2, 7, 8, 9), (2, 3, 2), stride=(2, 2, 3),
         dilation=(2, 1, 2), ceil_mode=True)
    pool(fam, "avg_pool3d_k2_s2", "avg", (1, 3, 6, 6, 6), 2)
    pool(fam, "avg_pool3d_k3_s2_p1_exclude_pad", "avg", (1, 2, 5, 6, 7), 3, stride=2, padding=1,
         count_include_pad=False)
    pool(fam, "avg_pool3d_ceil_include_pad", "avg", (1, 2, 6, 5, 7), (3, 2, 3), stride=2,
         padding=(1, 1, 0), ceil_mode=True)
    pool(fam, "avg_pool3d_divisor_override", "avg", (1, 2, 6, 6, 6), 3, stride=2, padding=1,
         divisor_override=10)
    # Adaptive: sizes that do not divide, so windows overlap and differ in size.
    adaptive(fam, "adaptive_avg_pool2d_10_to_3", "avg", (2, 3, 10, 10), 3)
    adaptive(fam, "adaptive_avg_pool2d_7x10_to_4x3", "avg", (1, 3, 7, 10), (4, 3))
    adaptive(fam, "adaptive_max_pool2d_10_to_3", "max", (2, 3, 10, 10), 3)
    adaptive(fam, "adaptive_max_pool2d_7x10_to_4x3", "max", (1, 3, 7, 10), (4, 3))
    adaptive(fam, "adaptive_avg_pool1d_10_to_3", "avg", (2, 3, 10), 3)
    adaptive(fam, "adaptive_max_pool1d_7_to_4", "max", (2, 3, 7), 4)
    adaptive(fam, "adaptive_avg_pool3d_7x10x5_to_4x3x2", "avg", (1, 2, 7, 10, 5), (4, 3, 2))
    adaptive(fam, "global_avg_pool2d_resnet", "avg", (2, 8, 7, 7), 1, is_global=True)
    # Local response norm. PyTorch divides alpha by `size`: b = a / (k + α/n · Σ a²)^β.
    # AlexNet's constants, with activations large enough that the sum of squares matters.
    lrn(fam, "lrn_alexnet", (2, 8, 5, 5), 5, 1e-4, 0.75, 2.0, 40.0)
    lrn(fam, "lrn_strong", (1, 6, 4, 5), 3, 0.5, 0.5, 1.0, 2.0)
    # An even window reaches one channel further back than forward.
    lrn(fam, "lrn_even_size", (1, 7, 3, 4), 4, 0.3, 1.0, 0.5, 1.5)
    return fam


def pool_grad_cases():
    """The input gradients of pooling and local response norm, from `torch.autograd.grad`.

    Each case is set up by the forward helpers above (same seeding, same records), then a random
    `grad_output` is drawn and `grad_input = torch.autograd.grad(call, x, grad_output)` stored
    beside it, checked against float64 like every output; the record adds `backward`.
    """

    class GradFamily(Family):
        backward = "torch.autograd.grad(y, x, dy)"

        def add(self, record, call, tensors, allow_large=False):
            name = record["name"]
            assert all(c["name"] != name for c in self.cases), f"duplicate case {name}"
            scope = {"F": F, "torch": torch}
            x = tensors["x"]
            with torch.no_grad():
                y_shape = eval(call, scope, {"x": x}).shape
            # Drawn after x, so x is exactly what the forward helper's seeding gives.
            dy = randn(y_shape)

            def grad_input(dtype):
                leaf = x.detach().to(dtype).clone().requires_grad_(True)
                y = eval(call, scope, {"x": leaf})
                return torch.autograd.grad(y, leaf, dy.to(dtype))[0]

            got, exact = grad_input(torch.float32), grad_input(torch.float64)
            error = (got.double() - exact).abs()
            if not bool((error <= SELF_CHECK_ABS + SELF_CHECK_REL * exact.abs()).all()):
                raise AssertionError(f"{name}: float32 differs from float64 by {error.max().item():.3g}")
            stored = {"input": x, "grad_output": dy, "grad_input": got}
            for role, tensor in stored.items():
                assert tensor.dtype == torch.float32
                assert tensor.numel() <= MAX_ELEMENTS, f"{name}/{role} has {tensor.numel()} elements"
                self.tensors[f"{name}/{role}"] = tensor.detach().clone().contiguous()
            self.cases.append({"name": name, "op": record["op"], "call": call,
                               "backward": self.backward} | record)

    fam = GradFamily("pool_grad")
    # Max pooling: distinct inputs, so float64 picks the same maxima; overlapping windows make
    # one input collect the gradient of several outputs.
    pool(fam, "max_pool1d_grad_k3_s2_p1", "max", (2, 3, 15), 3, stride=2, padding=1)
    pool(fam, "max_pool2d_grad_resnet_k3_s2_p1", "max", (2, 2, 8, 8), 3, stride=2, padding=1)
    pool(fam, "max_pool2d_grad_dilation2_ceil", "max", (1, 2, 9, 9), 3, stride=2, padding=1,
         dilation=2, ceil_mode=True)
    pool(fam, "max_pool3d_grad_k3_s2_p1", "max", (1, 2, 5, 6, 7), 3, stride=2, padding=1)
    # Average pooling: every divisor rule.
    pool(fam, "avg_pool1d_grad_ceil_include_pad", "avg", (1, 2, 10), 3, stride=2, padding=1,
         ceil_mode=True)
    pool(fam, "avg_pool2d_grad_k3_s2_p1_exclude_pad", "avg", (2, 2, 9, 9), 3, stride=2, padding=1,
         count_include_pad=False)
    pool(fam, "avg_pool2d_grad_ceil_exclude_pad", "avg", (1, 2, 8, 8), 3, stride=2, padding=1,
         ceil_mode=True, count_include_pad=False)
    pool(fam, "avg_pool2d_grad_divisor_override_pad", "avg", (1, 2, 7, 7), 3, stride=2, padding=1,
         divisor_override=5)
    pool(fam, "avg_pool3d_grad_ceil_include_pad", "avg", (1, 2, 6, 5, 7), (3, 2, 3), stride=2,
         padding=(1, 1, 0), ceil_mode=True)
    # Adaptive: overlapping windows of different sizes.
    adaptive(fam, "adaptive_avg_pool2d_grad_7x10_to_4x3", "avg", (1, 3, 7, 10), (4, 3))
    adaptive(fam, "adaptive_avg_pool1d_grad_10_to_3", "avg", (2, 3, 10), 3)
    adaptive(fam, "adaptive_max_pool2d_grad_10_to_3", "max", (2, 3, 10, 10), 3)
    adaptive(fam, "adaptive_max_pool1d_grad_7_to_4", "max", (2, 3, 7), 4)
    adaptive(fam, "global_avg_pool2d_grad_resnet", "avg", (2, 8, 7, 7), 1, is_global=True)
    # Local response norm: AlexNet's constants on activations large enough to matter.
    lrn(fam, "lrn_grad_alexnet", (2, 8, 5, 5), 5, 1e-4, 0.75, 2.0, 40.0)
    lrn(fam, "lrn_grad_even_size", (1, 7, 3, 4), 4, 0.3, 1.0, 0.5, 1.5)
    return fam


def batch_norm(fam, name, x_shape, *, training, affine, momentum=0.1, eps=1e-5):
    """A batch-norm case: output, updated running statistics (training) and all gradients.

    Stores `input`, `weight` / `bias` (affine), the running statistics before (`running_mean`,
    `running_var`) and, in training, after the call (`running_mean_out`, `running_var_out`), a
    random `grad_output` and `grad_input` / `grad_weight` / `grad_bias`, each checked against the
    same call in float64.
    """
    torch.manual_seed(case_seed(name))
    c = x_shape[1]
    # Per-channel offsets and scales, so that the mean subtraction and the variance both matter.
    shape = (1, c) + (1,) * (len(x_shape) - 2)
    x = randn(x_shape) * (torch.rand(shape) * 2 + 0.5) + randn(shape)
    w, b = randn(c), randn(c)
    rm, rv = randn(c) * 0.5, torch.rand(c) + 0.5
    args = "w, b" if affine else "None, None"
    # Evaluated with x, rm, rv, w, b bound to copies of the stored tensors: F.batch_norm updates
    # rm and rv in place when training.
    call = (f"F.batch_norm(x, rm, rv, {args}, training={training}, momentum={momentum!r}, "
            f"eps={eps!r})")
    tensors = {"x": x, "rm": rm, "rv": rv} | ({"w": w, "b": b} if affine else {})
    dy = randn(x_shape)

    def run(dtype):
        leaves = {k: v.detach().to(dtype).clone().requires_grad_(k in ("x", "w", "b"))
                  for k, v in tensors.items()}
        y = eval(call, {"F": F, "torch": torch}, dict(leaves))
        order = [leaves[k] for k in ("x", "w", "b") if k in leaves]
        grads = torch.autograd.grad(y, order, dy.to(dtype))
        return [y.detach(), leaves["rm"].detach(), leaves["rv"].detach(), *grads]

    roles = ["output", "running_mean_out", "running_var_out", "grad_input"]
    roles += ["grad_weight", "grad_bias"] if affine else []
    stored = {"input": x, "running_mean": rm, "running_var": rv, "grad_output": dy}
    if affine:
        stored |= {"weight": w, "bias": b}
    for role, got, exact in zip(roles, run(torch.float32), run(torch.float64)):
        error = (got.double() - exact).abs()
        if not bool((error <= GRAD_CHECK_ABS + GRAD_CHECK_REL * exact.abs()).all()):
            raise AssertionError(f"{name}/{role}: float32 differs from float64 by {error.max().item():.3g}")
        if training or not role.startswith("running"):
            stored[role] = got
    for role, tensor in stored.items():
        assert tensor.dtype == torch.float32
        assert tensor.numel() <= MAX_ELEMENTS, f"{name}/{role} has {tensor.numel()} elements"
        fam.tensors[f"{name}/{role}"] = tensor.detach().clone().contiguous()
    record = {"name": name, "op": "batch_norm", "call": call, "backward": f"torch.autograd.grad(y, {'(x, w, b)' if affine else '(x,)'}, dy)",
              "training": training, "affine": affine, "momentum": momentum, "eps": eps}
    assert all(case["name"] != name for case in fam.cases), f"duplicate case {name}"
    fam.cases.append(record)


def batch_norm_cases():
    fam = Family("batch_norm")
    # BatchNorm1d on [N, C] (after a linear layer) and on [N, C, L].
    batch_norm(fam, "batch_norm1d_train_affine", (8, 5), training=True, affine=True)
    batch_norm(fam, "batch_norm1d_train_ncl_plain", (4, 3, 6), training=True, affine=False)
    batch_norm(fam, "batch_norm1d_eval_affine", (6, 4), training=False, affine=True)
    # BatchNorm2d, the lecture's "batch norm after every conv"; a batch of two small planes.
    batch_norm(fam, "batch_norm2d_train_affine", (4, 3, 5, 5), training=True, affine=True)
    batch_norm(fam, "batch_norm2d_train_plain_batch2", (2, 4, 3, 3), training=True, affine=False)
    batch_norm(fam, "batch_norm2d_eval_affine", (3, 3, 4, 4), training=False, affine=True)
    batch_norm(fam, "batch_norm2d_eval_plain", (2, 2, 3, 5), training=False, affine=False)
    # BatchNorm3d, and a batch of one whose planes still give several values per channel.
    batch_norm(fam, "batch_norm3d_train_affine", (2, 3, 3, 4, 2), training=True, affine=True)
    batch_norm(fam, "batch_norm3d_train_batch1_plain", (1, 2, 2, 3, 3), training=True, affine=False)
    batch_norm(fam, "batch_norm3d_eval_affine", (2, 2, 2, 3, 3), training=False, affine=True)
    return fam


def differences(fam, path):
    """What separates the committed file from what this script generates now, as text lines.

    Cases, inputs, weights and biases must be identical (seeded CPU sampling is the same on every
    machine); outputs may differ by rounding, since another CPU or torch build can sum in
    another order.
    """
    if not path.exists():
        return ["missing"]
    data = path.read_bytes()
    committed = load(data)
    length = int.from_bytes(data[:8], "little")
    metadata = json.loads(data[8:8 + length]).get("__metadata__", {})
    found = []
    if json.loads(metadata.get("cases", "[]")) != fam.cases:
        found.append("the case list differs")
    if set(committed) != set(fam.tensors):
        found.append("the tensor names differ")
    for name in sorted(set(committed) & set(fam.tensors)):
        old, new = committed[name], fam.tensors[name]
        if old.shape != new.shape:
            found.append(f"{name}: shape {tuple(old.shape)}, now {tuple(new.shape)}")
        elif name.endswith("/output") or (
                "/grad_" in name and not name.endswith("/grad_output")):
            if not torch.allclose(old, new, rtol=SELF_CHECK_REL, atol=SELF_CHECK_ABS):
                found.append(f"{name}: differs by up to {(old - new).abs().max().item():.3g}")
        elif not torch.equal(old, new):
            found.append(f"{name}: values differ")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the committed fixtures instead of writing them")
    args = parser.parse_args()
    # One thread: reductions then always run in the same order, so regenerating on one machine
    # gives the same values.
    torch.set_num_threads(1)
    # PyTorch notes that padding="same" with an even kernel copies the input; that is the case meant.
    warnings.filterwarnings("ignore", message="Using padding='same'")
    stale = []
    for fam in (conv_cases(), pool_cases(), conv_grad_cases(), pool_grad_cases(),
                batch_norm_cases()):
        path = FIXTURES / f"{fam.name}.safetensors"
        data = fam.serialize()
        if args.check:
            stale += [f"{path.relative_to(ROOT)}: {why}" for why in differences(fam, path)]
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"{path.relative_to(ROOT)}: {len(fam.cases)} cases, {len(data)} bytes")
    if stale:
        print("\n".join(stale + [f"stale fixtures: run python {GENERATOR}"]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
