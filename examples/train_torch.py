#!/usr/bin/env python3
"""A small video-caption model trained from kaiod's data plane.

A tiny 3D-conv video encoder and a bag-of-words caption encoder, trained
contrastively (CLIP-style) on the windows kaiod hands out. The lines marked
`# kaio` are the whole integration: the loader, its state in the checkpoint,
and the commit once the checkpoint is durable. Kill it with -9 at any point
and start it again: it resumes from its latest checkpoint, and the windows
after that come again in the same order (deterministic on CPU).

    kaiod --config my.json          # with "train": {"backend": "external"}
    python3 examples/train_torch.py --socket /run/kaio/data.sock --ckpt-dir ckpt
"""

import argparse
import os
import sys
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--socket", default="/run/kaio/data.sock", help="kaiod's control.data_socket")
    p.add_argument("--consumer", default="clipnet", help="consumer name (one per training job)")
    p.add_argument("--ckpt-dir", default="ckpt", help="folder for checkpoints (latest.pt)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    p.add_argument("--checkpoint-every", type=int, default=2, help="steps between checkpoints")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: deterministic and polite)")
    p.add_argument("--reconnect-timeout", type=float, default=60.0,
                   help="seconds to wait for a restarting kaiod")
    p.add_argument("--trace", help="append each step's windows to this file (tests)")
    return p.parse_args()


VOCAB = 512


def words(caption):
    # Hashed bag of words: no vocabulary file to ship; crc32 is stable across runs.
    ids = [zlib.crc32(w.encode()) % VOCAB for w in caption.lower().split()] or [0]
    return ids


def build_model(torch):
    nn = torch.nn

    class ClipNet(nn.Module):
        def __init__(self, dim=32):
            super().__init__()
            self.video = nn.Sequential(
                nn.Conv3d(3, 8, kernel_size=3, stride=2, padding=1), nn.ReLU(),
                nn.Conv3d(8, 16, kernel_size=3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(16, dim))
            self.text = nn.EmbeddingBag(VOCAB, dim, mode="mean")
            self.scale = nn.Parameter(torch.tensor(2.0))

        def forward(self, frames, captions):
            # frames: [B, T, H, W, 3] uint8 -> [B, 3, T, H, W] float
            x = frames.permute(0, 4, 1, 2, 3).float().div_(255.0)
            v = nn.functional.normalize(self.video(x), dim=-1)
            ids = [words(c) for c in captions]
            flat = torch.tensor([i for c in ids for i in c], dtype=torch.long)
            offsets = torch.tensor([0] + [len(c) for c in ids[:-1]], dtype=torch.long).cumsum(0)
            t = nn.functional.normalize(self.text(flat, offsets), dim=-1)
            logits = v @ t.t() * self.scale.exp()
            target = torch.arange(len(captions))
            return (nn.functional.cross_entropy(logits, target) + nn.functional.cross_entropy(logits.t(), target)) / 2

    return ClipNet()


def save_durably(torch, obj, path):
    # temp, fsync, rename, fsync the folder: a kill leaves the old or the new one.
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def main():
    args = parse_args()
    import torch
    import kaio.torch

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)

    model = build_model(torch)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    dataset = kaio.torch.KaioDataset(socket=args.socket, consumer=args.consumer,  # kaio
                                     fields=("frames", "caption", "meta"),
                                     reconnect_timeout=args.reconnect_timeout)
    loader = kaio.torch.KaioLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)  # kaio
    os.makedirs(args.ckpt_dir, exist_ok=True)
    latest = os.path.join(args.ckpt_dir, "latest.pt")
    step = 0
    if os.path.exists(latest):
        ckpt = torch.load(latest)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        torch.set_rng_state(ckpt["rng"])
        step = ckpt["step"]
        loader.load_state_dict(ckpt["loader"])  # kaio: resume where the checkpoint is
        print("resumed at step %d from %s (token %s)" % (step, latest, ckpt["loader"]["token"]), flush=True)

    saved = None

    def checkpoint():
        nonlocal saved
        state = loader.state_dict()  # kaio: counts the batches trained so far
        if (step, state["token"]) == saved:
            return
        saved = (step, state["token"])
        save_durably(torch, {"model": model.state_dict(), "opt": opt.state_dict(),
                             "rng": torch.get_rng_state(), "step": step, "loader": state}, latest)
        loader.commit(state)  # kaio: durable now; kaiod may delete what it covers
        print("checkpoint step %d token %d/%d committed" % (step, state["token"]["epoch"],
                                                            state["token"]["window"]), flush=True)

    while not loader.done:  # kaio: each `for` is one epoch, until train.epochs
        for batch in loader:
            loss = model(batch["frames"], batch["caption"])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            meta = batch["meta"]
            print("step %d epoch %d loss %.9g" % (step, int(meta["epoch"][0]), loss.item()), flush=True)
            if args.trace:
                with open(args.trace, "a") as f:
                    f.write("step %d loss %.9g windows %s\n" % (step, loss.item(), " ".join(
                        "%s:%d" % (c, int(w)) for c, w in zip(meta["clip"], meta["window"]))))
            if step % args.checkpoint_every == 0:
                checkpoint()
        # kaiod starts the next epoch once every rank committed this one's end.
        if step > 0:
            checkpoint()
    print("done: %d steps" % step, flush=True)


if __name__ == "__main__":
    main()
