#!/usr/bin/env python3
"""Builds the PyTorch reference for tests/train/model_reference_test.cpp.

The script owns the inputs: it draws the initial weights and the batch with
numpy (seed 0), mirrors kaio's tube mask (splitmix64 + partial Fisher-Yates,
train/model.cpp), runs the same model in PyTorch (fp32, GELU tanh, LayerNorm
eps 1e-5, targets normalised per tubelet with biased variance and eps 1e-6),
and writes inputs and results to data/reference_tiny.safetensors:
param.<name>, windows, loss, grad.<name>, and the losses of 10 AdamW steps.
Needs python3-torch (Debian); CI only reads the committed file.
Run: python3 tests/train/make_reference.py
"""
import json, math, os, struct
import numpy as np
import torch
import torch.nn.functional as F

CFG = dict(dim=64, depth=2, heads=4, tt=2, ts=8, frames=4, size=32, batch=2, seed=7, mask_ratio=0.75,
           lr=1e-3, warmup=3, max_steps=10, weight_decay=0.05, grad_clip=0.5, steps=10)
MASK64 = (1 << 64) - 1


class SplitMix:
    def __init__(self, a, b, c):
        self.state = (a * 0x9E3779B97F4A7C15 + b * 0xBF58476D1CE4E5B9 + c * 0x94D049BB133111EB) & MASK64

    def next(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
        return z ^ (z >> 31)


def tube_mask(step):
    gt, gs = CFG["frames"] // CFG["tt"], CFG["size"] // CFG["ts"]
    spatial = gs * gs
    masked = min(max(int(math.floor(CFG["mask_ratio"] * spatial + 0.5)), 0), spatial)
    out = np.zeros((CFG["batch"], gt * spatial), dtype=np.uint8)
    for b in range(CFG["batch"]):
        rng, order = SplitMix(CFG["seed"], step, b), list(range(spatial))
        for i in range(masked):
            j = i + rng.next() % (spatial - i)
            order[i], order[j] = order[j], order[i]
        for i in range(masked):
            for t in range(gt):
                out[b, t * spatial + order[i]] = 1
    return torch.from_numpy(out.astype(bool))


def param_shapes():
    d, pd = CFG["dim"], CFG["tt"] * CFG["ts"] * CFG["ts"] * 3
    n = (CFG["frames"] // CFG["tt"]) * (CFG["size"] // CFG["ts"]) ** 2
    shapes = [("patch_embed.weight", (d, pd)), ("patch_embed.bias", (d,)), ("pos_embed", (n, d)), ("mask_token", (d,))]
    for l in range(CFG["depth"]):
        b = f"blocks.{l}."
        shapes += [(b + "norm1.weight", (d,)), (b + "norm1.bias", (d,)), (b + "attn.qkv.weight", (3 * d, d)),
                   (b + "attn.qkv.bias", (3 * d,)), (b + "attn.proj.weight", (d, d)), (b + "attn.proj.bias", (d,)),
                   (b + "norm2.weight", (d,)), (b + "norm2.bias", (d,)), (b + "mlp.fc1.weight", (4 * d, d)),
                   (b + "mlp.fc1.bias", (4 * d,)), (b + "mlp.fc2.weight", (d, 4 * d)), (b + "mlp.fc2.bias", (d,))]
    return shapes + [("norm.weight", (d,)), ("norm.bias", (d,)), ("head.weight", (pd, d)), ("head.bias", (pd,))]


def patchify(windows):
    b, t, s, _, c = windows.shape
    tt, ts = CFG["tt"], CFG["ts"]
    x = windows.float() / 255.0
    x = (x - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    x = x.reshape(b, t // tt, tt, s // ts, ts, s // ts, ts, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, -1, tt * ts * ts * c)


def forward(p, windows, mask):
    d, h = CFG["dim"], CFG["heads"]
    patches = patchify(windows)
    x = patches @ p["patch_embed.weight"].T + p["patch_embed.bias"]
    x = torch.where(mask[..., None], p["mask_token"].expand_as(x), x) + p["pos_embed"]
    bsz, n, _ = x.shape
    for l in range(CFG["depth"]):
        k = f"blocks.{l}."
        y = F.layer_norm(x, (d,), p[k + "norm1.weight"], p[k + "norm1.bias"], 1e-5)
        qkv = (y @ p[k + "attn.qkv.weight"].T + p[k + "attn.qkv.bias"]).reshape(bsz, n, 3, h, d // h)
        q, kk, v = qkv.permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ kk.transpose(-1, -2) / math.sqrt(d // h), dim=-1) @ v
        att = att.transpose(1, 2).reshape(bsz, n, d)
        x = x + att @ p[k + "attn.proj.weight"].T + p[k + "attn.proj.bias"]
        y = F.layer_norm(x, (d,), p[k + "norm2.weight"], p[k + "norm2.bias"], 1e-5)
        y = F.gelu(y @ p[k + "mlp.fc1.weight"].T + p[k + "mlp.fc1.bias"], approximate="tanh")
        x = x + y @ p[k + "mlp.fc2.weight"].T + p[k + "mlp.fc2.bias"]
    x = F.layer_norm(x, (d,), p["norm.weight"], p["norm.bias"], 1e-5)
    pred = x @ p["head.weight"].T + p["head.bias"]
    mean = patches.mean(-1, keepdim=True)
    var = patches.var(-1, unbiased=False, keepdim=True)
    target = (patches - mean) / torch.sqrt(var + 1e-6)
    return ((pred - target) ** 2)[mask].mean()


def learning_rate(step):
    if step < CFG["warmup"]:
        return CFG["lr"] * (step + 1) / CFG["warmup"]
    progress = min(1.0, (step - CFG["warmup"]) / max(1, CFG["max_steps"] - CFG["warmup"]))
    return 0.5 * CFG["lr"] * (1 + math.cos(math.pi * progress))


def write_safetensors(path, tensors, metadata):
    header, blobs, offset = {"__metadata__": metadata}, [], 0
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dtype = {np.dtype("float32"): "F32", np.dtype("float64"): "F64", np.dtype("uint8"): "U8"}[arr.dtype]
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + arr.nbytes]}
        blobs.append(arr.tobytes())
        offset += arr.nbytes
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def main():
    torch.manual_seed(0)
    rng = np.random.RandomState(0)
    params = {}
    for name, shape in param_shapes():
        if "norm" in name and name.endswith(".weight"):
            value = 1.0 + 0.1 * rng.randn(*shape)
        elif name.endswith(".bias"):
            value = 0.01 * rng.randn(*shape)
        else:
            value = 0.02 * rng.randn(*shape)
        params[name] = torch.tensor(value, dtype=torch.float32, requires_grad=True)
    windows = torch.from_numpy(rng.randint(0, 256, size=(CFG["batch"], CFG["frames"], CFG["size"], CFG["size"], 3)).astype(np.uint8))
    out = {"param." + k: v.detach().numpy().copy() for k, v in params.items()}
    out["windows"] = windows.numpy()

    loss = forward(params, windows, tube_mask(0))
    loss.backward()
    out["loss"] = np.array([loss.item()], dtype=np.float64)
    for k, v in params.items():
        out["grad." + k] = v.grad.numpy().copy()
        v.grad = None

    decay = [v for k, v in params.items() if k.endswith(".weight") and "norm" not in k]
    no_decay = [v for k, v in params.items() if not (k.endswith(".weight") and "norm" not in k)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": CFG["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}], lr=CFG["lr"], betas=(0.9, 0.95), eps=1e-8)
    losses = []
    for step in range(CFG["steps"]):
        opt.zero_grad()
        loss = forward(params, windows, tube_mask(step))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), CFG["grad_clip"])
        for group in opt.param_groups:
            group["lr"] = learning_rate(step)
        opt.step()
        losses.append(loss.item())
    out["losses"] = np.array(losses, dtype=np.float64)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "reference_tiny.safetensors")
    write_safetensors(path, out, {k: str(v) for k, v in CFG.items()} | {"torch": torch.__version__})
    print(f"wrote {path}: loss {out['loss'][0]:.6f}, losses {[round(x, 6) for x in losses]}")


if __name__ == "__main__":
    main()
