#!/usr/bin/env python3
"""Counts the matrix-product FLOPs of one training step of the PyTorch
reference model (make_reference.py's forward and its backward), for
tests/train/flops_test.cpp to compare against kaio's own formula.

Debian 12's torch (1.13) has no torch.utils.flop_counter.FlopCounterMode, so
this counts the way it does: a dispatch mode sees every aten.mm, aten.addmm
and aten.bmm that autograd runs and adds 2*m*n*k for each.
Usage: count_flops.py DIM DEPTH HEADS TUBELET_FRAMES TUBELET_SIZE FRAMES SIZE BATCH [...]
(any number of such groups of 8). Prints one integer count a line, a line a group.
"""
import math, os, sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_reference as ref  # noqa: E402

aten = torch.ops.aten


class MatmulFlops(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.flops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        packet = getattr(func, "overloadpacket", None)
        if packet in (aten.mm, aten.bmm):
            a, b = args[0], args[1]
            self.flops += 2 * math.prod(a.shape) * b.shape[-1]
        elif packet is aten.addmm:
            a, b = args[1], args[2]
            self.flops += 2 * math.prod(a.shape) * b.shape[-1]
        return out


def count(dim, depth, heads, tt, ts, frames, size, batch):
    ref.CFG.update(dim=dim, depth=depth, heads=heads, tt=tt, ts=ts, frames=frames, size=size, batch=batch,
                   mask_ratio=0.5)
    torch.manual_seed(0)
    params = {name: (0.02 * torch.randn(*shape)).requires_grad_() for name, shape in ref.param_shapes()}
    windows = torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8)
    counter = MatmulFlops()
    with counter:
        ref.forward(params, windows, ref.tube_mask(0)).backward()
    return counter.flops


def main():
    values = [int(v) for v in sys.argv[1:]]
    for i in range(0, len(values) - 7, 8):
        print(count(*values[i:i + 8]))


if __name__ == "__main__":
    main()
