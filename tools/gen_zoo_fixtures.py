#!/usr/bin/env python3
"""PyTorch golden fixtures for the model zoo: seeded networks, an input, and PyTorch's output.

Writes crates/zoo/tests/fixtures/<case>.safetensors for four cases that together cover every
building block of the zoo's networks at a size fit for the repository:

- lenet5:          the LeNet-5 of `stride train lenet5` (tools/bench_lenet.py's network), [2, 1, 28, 28]
- resnet20:        He et al.'s CIFAR ResNet-20 with option-A shortcuts, [2, 3, 32, 32]
- inception3a:     torchvision's GoogLeNet Inception block (192 → 256 channels), [1, 192, 8, 8]
- resnet50_layer1: torchvision's resnet50().layer1 (three bottlenecks, 64 → 256 channels), [1, 64, 8, 8]

Each file holds the network's state_dict under `weights.<torchvision name>` (batch norm running
statistics set to seeded random values, so evaluation mode is really exercised), `input` and
`output` (the network in eval mode), all float32 except int64 batch counters, and the metadata
`generator`, `torch`, `torchvision`, `case`. crates/zoo/tests/golden.rs loads the weights by name
into stride's network and compares. Needs the venv of tools/README.md plus torchvision.
"""
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from torchvision.models import resnet50
from torchvision.models.googlenet import Inception

from bench_lenet import lenet5  # the network of `stride train lenet5`, defined once

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "crates/zoo/tests/fixtures")


class CifarBlock(nn.Module):
    """He et al. §4.2 basic block; option A: a parameter-free shortcut that subsamples by 2 and
    pads the new channels with zeros, half before and half after."""

    def __init__(self, inp, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.pad = (planes - inp) // 2 if (stride != 1 or inp != planes) else None

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.pad is None else F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    def __init__(self, n, classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, inp = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(CifarBlock(inp, planes, stride if i == 0 else 1))
                inp = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(64, classes)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def randomise_statistics(model, generator):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=generator) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=generator) * 0.1)
            m.num_batches_tracked.fill_(7)


def write(case, model, input_shape, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        randomise_statistics(model, generator)
        model.eval()
        x = torch.randn(input_shape, generator=generator)
        y = model(x)
    tensors = {f"weights.{k}": v.contiguous() for k, v in model.state_dict().items()}
    tensors["input"] = x.contiguous()
    tensors["output"] = y.contiguous()
    meta = {"generator": "tools/gen_zoo_fixtures.py", "torch": torch.__version__,
            "torchvision": torchvision.__version__, "case": case}
    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, f"{case}.safetensors"), metadata=meta)
    params = sum(v.numel() for k, v in model.state_dict().items())
    print(f"{case}: {params} values, input {tuple(x.shape)} → output {tuple(y.shape)}")


def main():
    torch.manual_seed(0)
    write("lenet5", lenet5(), (2, 1, 28, 28), 1)
    torch.manual_seed(0)
    write("resnet20", CifarResNet(3), (2, 3, 32, 32), 2)
    torch.manual_seed(0)
    write("inception3a", Inception(192, 64, 96, 128, 16, 32, 32), (1, 192, 8, 8), 3)
    torch.manual_seed(0)
    write("resnet50_layer1", resnet50().layer1, (1, 64, 8, 8), 4)


if __name__ == "__main__":
    main()
