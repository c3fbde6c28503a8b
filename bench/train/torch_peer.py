#!/usr/bin/env python3
"""PyTorch CPU peer for bench/train.sh: the same model as kaio's trainer
(built by tests/train/make_reference.py's forward), AdamW + clipping, timed
per step. Usage: torch_peer.py MODEL FRAMES SIZE BATCH STEPS THREADS"""
import json, os, sys, time
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "train"))
import make_reference as ref  # noqa: E402

SPECS = {"tiny": (64, 2, 4, 2, 8), "small": (384, 12, 6, 2, 16), "base": (768, 12, 12, 2, 16)}


def main():
    model, frames, size, batch, steps, threads = sys.argv[1], *map(int, sys.argv[2:7])
    torch.set_num_threads(threads)
    dim, depth, heads, tt, ts = SPECS[model]
    ref.CFG.update(dim=dim, depth=depth, heads=heads, tt=tt, ts=ts, frames=frames, size=size, batch=batch,
                   mask_ratio=0.9)
    params = {name: torch.tensor(0.02 * np.random.RandomState(0).randn(*shape), dtype=torch.float32, requires_grad=True)
              for name, shape in ref.param_shapes()}
    opt = torch.optim.AdamW(list(params.values()), lr=1e-4, betas=(0.9, 0.95))
    windows = torch.from_numpy(np.random.RandomState(1).randint(0, 256, (batch, frames, size, size, 3)).astype(np.uint8))
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        opt.zero_grad()
        loss = ref.forward(params, windows, ref.tube_mask(step))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        if step >= 2:
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    print(json.dumps({"model": model, "ms": times[len(times) // 2], "threads": threads, "torch": torch.__version__}))


if __name__ == "__main__":
    main()
