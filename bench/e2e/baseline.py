#!/usr/bin/env python3
"""The sequential baseline kaiod is compared with in bench/e2e.sh: a streaming
loop written the way it usually is in Python. Per batch of files:

  list the repo through the Hub API -> download a batch of archives that fits
  the budget with urllib (one after another) -> extract them with tarfile ->
  decode every clip with PyAV (same fps sampling, crop, size and windows as
  kaio's decode/video.cpp) -> hand the windows to the same trainer step
  (kaio-train-pipe, built from the same config) -> checkpoint -> delete ->
  repeat. No stage overlaps another.

Usage: baseline.py CONFIG.json TRAIN_PIPE WORK_DIR
Files go under WORK_DIR/cache and WORK_DIR/state (the disk sampler watches
both). Prints one JSON line: files, clips, windows, steps, seconds per stage.
"""
import json
import os
import random
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.parse
import urllib.request

import av
import numpy as np


# Python's own guard against hostile members, where this Python has it (3.11.4+).
SAFE_EXTRACT = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def list_files(endpoint, repo, revision):
    """Every file of the repo, through the paginated tree API (Link: next)."""
    url = f"{endpoint}/api/datasets/{repo}/tree/{urllib.parse.quote(revision)}?recursive=true"
    files = []
    while url:
        with urllib.request.urlopen(url) as resp:
            files.extend(e for e in json.load(resp) if e["type"] == "file")
            link = resp.headers.get("Link", "")
        url = link[link.find("<") + 1:link.find(">")] if 'rel="next"' in link else None
    return files


def download(endpoint, repo, revision, path, out):
    url = f"{endpoint}/datasets/{repo}/resolve/{urllib.parse.quote(revision)}/{urllib.parse.quote(path)}"
    with urllib.request.urlopen(url) as resp, open(out, "wb") as f:  # follows the CDN redirect
        shutil.copyfileobj(resp, f, 1 << 20)


def decode_clip(path, spec):
    """kaio's sampling (decode/video.cpp): sample k shows the last frame whose
    time is at or before k/fps; windows of T samples every S samples; each
    sampled frame centre-cropped to a square and scaled to size x size RGB."""
    fps, size, frames, stride = spec["fps"], spec["size"], spec["frames"], spec["stride"]
    samples = []
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_count = spec["codec_threads"]
        start = stream.start_time or 0
        tb = float(stream.time_base)
        nominal = 1.0 / float(stream.average_rate or 30)
        prev, prev_t, prev_dur, converted = None, 0.0, 0.0, None
        k = 0

        def emit_until(end):
            nonlocal k, converted
            while k / fps < end - 1e-9:
                if converted is None:
                    w, h = prev.width, prev.height
                    sw, sh = (round(w * size / h), size) if w >= h else (size, round(h * size / w))
                    rgb = prev.to_ndarray(width=sw, height=sh, format="rgb24", interpolation="BILINEAR")
                    x, y = (sw - size) // 2, (sh - size) // 2
                    converted = np.ascontiguousarray(rgb[y:y + size, x:x + size])
                samples.append(converted)
                k += 1

        for frame in container.decode(stream):
            t = (frame.pts - start) * tb if frame.pts is not None else prev_t + nominal
            if prev is not None and t <= prev_t:
                continue
            if prev is not None:
                emit_until(t)
            prev, prev_t, converted = frame, t, None
            duration = getattr(frame, "duration", None)  # PyAV 10 has no frame.duration
            prev_dur = float(duration * tb) if duration else nominal
        if prev is not None:
            emit_until(prev_t + prev_dur)
    count = 0 if len(samples) < frames else (len(samples) - frames) // stride + 1
    return [np.stack(samples[i * stride:i * stride + frames]) for i in range(count)]


def main():
    config_path, train_pipe, work = sys.argv[1], sys.argv[2], sys.argv[3]
    config = json.load(open(config_path))
    src, dec, stor = config["source"], config.get("decode", {}), config["storage"]
    spec = {"fps": float(dec.get("fps", 4)), "size": int(dec.get("size", 224)), "frames": int(dec.get("frames", 16)),
            "stride": int(dec.get("stride", 16)), "codec_threads": int(dec.get("codec_threads", 1))}
    budget = int(stor["budget"])  # bench/e2e.sh writes it in bytes
    endpoint, repo, revision = src["endpoint"], src["repo"], src.get("revision", "main")
    cache, state = os.path.join(work, "cache"), os.path.join(work, "state")
    os.makedirs(cache, exist_ok=True)
    os.makedirs(state, exist_ok=True)

    trainer = subprocess.Popen([train_pipe, config_path], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    checkpoint_bytes = int(json.loads(trainer.stdout.readline())["checkpoint_bytes"])
    t = {"list": 0.0, "download": 0.0, "extract": 0.0, "decode": 0.0, "train": 0.0, "delete": 0.0}
    mark = time.monotonic()

    def lap(stage):
        nonlocal mark
        now = time.monotonic()
        t[stage] += now - mark
        mark = now

    files = sorted((f for f in list_files(endpoint, repo, revision) if f["path"].endswith(".tar.gz")),
                   key=lambda f: f["path"])
    lap("list")
    # A batch's archives and their extracted members (about the same bytes:
    # tar.gz of mp4 barely compresses) plus two checkpoints (the new one is
    # written before the old one goes) must fit the budget; 5% is left for
    # block rounding and tar's padding (without it a run went 0.1 MB over).
    room = int((budget - 2 * checkpoint_bytes) * 0.95) // 2
    batches, batch, held = [], [], 0
    for f in files:
        if f["size"] > room:
            sys.exit(f"baseline: {f['path']} ({f['size']} B) cannot fit the budget of {budget} B next to its extraction")
        if held + f["size"] > room:
            batches.append(batch)
            batch, held = [], 0
        batch.append(f)
        held += f["size"]
    if batch:
        batches.append(batch)

    rng = random.Random(config.get("train", {}).get("seed", 0))
    clips = windows = 0
    previous_checkpoint = None
    for n, batch in enumerate(batches):
        local = []
        for f in batch:
            out = os.path.join(cache, os.path.basename(f["path"]))
            download(endpoint, repo, revision, f["path"], out)
            local.append(out)
        lap("download")
        extracted = os.path.join(cache, "extracted")
        for archive in local:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(extracted, **SAFE_EXTRACT)
        lap("extract")
        batch_windows = []
        for root, _, names in os.walk(extracted):
            for name in sorted(names):
                if name.endswith(".mp4"):
                    batch_windows.extend(decode_clip(os.path.join(root, name), spec))
                    clips += 1
        rng.shuffle(batch_windows)
        lap("decode")
        for w in batch_windows:
            trainer.stdin.write(b"W")
            trainer.stdin.write(w.tobytes())
        checkpoint = os.path.join(state, f"checkpoint-{n}.bin")
        trainer.stdin.write(b"C" + checkpoint.encode() + b"\n")
        trainer.stdin.flush()
        if trainer.stdout.readline().strip() != b"ok":
            sys.exit("baseline: kaio-train-pipe failed to checkpoint")
        windows += len(batch_windows)
        lap("train")
        if previous_checkpoint:
            os.remove(previous_checkpoint)
        previous_checkpoint = checkpoint
        shutil.rmtree(extracted)
        for archive in local:
            os.remove(archive)
        lap("delete")
    trainer.stdin.close()
    summary = json.loads(trainer.stdout.readline())
    if trainer.wait() != 0:
        sys.exit("baseline: kaio-train-pipe failed")
    lap("train")
    print(json.dumps({"files": len(files), "batches": len(batches), "clips": clips, "windows": windows,
                      "steps": summary["steps"], "samples": summary["samples"], "loss": summary["loss"],
                      "seconds": {k: round(v, 3) for k, v in t.items()}}))


if __name__ == "__main__":
    main()
