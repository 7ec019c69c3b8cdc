#!/usr/bin/env python3
"""Writes crates/zoo/assets/imagenet_classes.txt: the 1000 ImageNet class names, one per line in
class-index order, as torchvision's pretrained weights label them
(`ResNet50_Weights.IMAGENET1K_V1.meta["categories"]`). `stride predict --model M --weights FILE`
prints these names. Needs torchvision in the venv of tools/README.md."""
import os

from torchvision.models import ResNet50_Weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
assert len(categories) == 1000
with open(os.path.join(ROOT, "crates/zoo/assets/imagenet_classes.txt"), "w") as f:
    f.write("\n".join(categories) + "\n")
