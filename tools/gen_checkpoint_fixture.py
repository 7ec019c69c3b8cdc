#!/usr/bin/env python3
"""A torch.nn state_dict saved as safetensors, for stride's checkpoint interoperability test.

Writes crates/nn/tests/fixtures/torch_conv_bn_linear.safetensors: Conv2d(1, 4, 3, bias=False),
BatchNorm2d(4) after one training step (so its running statistics and its int64
num_batches_tracked are not the defaults), Linear(3, 2), with seeded weights. Needs the venv of
tools/README.md.
"""
import os

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, bias=False), torch.nn.BatchNorm2d(4), torch.nn.Linear(3, 2))
model.train()
model[1](torch.randn(2, 4, 5, 5))
state = {k: v.contiguous() for k, v in model.state_dict().items()}
save_file(state, os.path.join(ROOT, "crates/nn/tests/fixtures/torch_conv_bn_linear.safetensors"),
          metadata={"generator": "tools/gen_checkpoint_fixture.py", "torch": torch.__version__})
for k, v in state.items():
    print(k, tuple(v.shape), v.dtype, v.flatten()[:3].tolist())
