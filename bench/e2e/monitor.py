#!/usr/bin/env python3
"""Runs one command and watches it (bench/e2e.sh): every 20 ms the bytes on
disk under the given folders (st_blocks, as kaio's budget counts them) and the
resident memory of the command's whole process tree; every 0.5 s kaio-hub's
bytes sent (so the download rate is measured the same way for kaiod and the
baseline) and, for kaiod, `kaioctl status --json`.

Usage: monitor.py --out SAMPLES.jsonl --summary SUMMARY.json --dir D [--dir D]
                  [--hub URL] [--kaioctl PATH --socket PATH] -- COMMAND...
With --stall-seconds N, a kaiod whose status shows no progress (samples
trained, files done, clips decoded or deleted) for N seconds is stopped with
SIGTERM and the monitor exits with 3 after saying where it stood: a stall is a
failure, not a slow run.
Otherwise exits with the command's exit status. The summary holds wall seconds, peak
disk bytes and peak RSS bytes: the highest sampled sum of VmRSS over the tree,
or the command's own maximum RSS from wait4 when that is higher (it catches a
peak between samples).
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request


def disk_bytes(dirs):
    total = 0
    stack = list(dirs)
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # deleted between listing and stat
                    total += st.st_blocks * 512
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
        except (FileNotFoundError, NotADirectoryError):
            continue
    return total


def tree(pid):
    pids, stack = [], [pid]
    while stack:
        p = stack.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except (FileNotFoundError, ProcessLookupError):
            pass
    return pids


def rss_bytes(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
                        break
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--summary", required=True)
    ap.add_argument("--dir", action="append", default=[])
    ap.add_argument("--hub")
    ap.add_argument("--kaioctl")
    ap.add_argument("--socket")
    ap.add_argument("--interval", type=float, default=0.02)
    ap.add_argument("--status-interval", type=float, default=0.5)
    ap.add_argument("--stall-seconds", type=float, default=0)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        sys.exit("monitor: no command given")

    out = open(args.out, "w")
    lock = threading.Lock()
    start = time.monotonic()
    proc = subprocess.Popen(cmd)
    done = threading.Event()

    def write(record):
        with lock:
            out.write(json.dumps(record) + "\n")

    stalled = []  # the last status, once no progress was seen for --stall-seconds
    progress = {"key": None, "since": time.monotonic()}

    def watch_progress(st):
        key = (st["train"]["samples"], st["files"]["done"], st["clips"]["ready"] + st["clips"]["consumed"],
               st["clips"]["deleted"], st["state"] == "done")
        now = time.monotonic()
        if key != progress["key"]:
            progress.update(key=key, since=now)
        elif args.stall_seconds and now - progress["since"] > args.stall_seconds and not stalled:
            stalled.append(st)
            proc.terminate()

    def slow_sampler():
        while not done.is_set():
            record = {"t": round(time.monotonic() - start, 3)}
            if args.hub:
                try:
                    with urllib.request.urlopen(args.hub + "/_kaio/stats", timeout=2) as r:
                        record["hub_bytes_sent"] = json.load(r)["bytes_sent"]
                except OSError:
                    pass
            if args.kaioctl:
                r = subprocess.run([args.kaioctl, "--socket", args.socket, "status", "--json"],
                                   capture_output=True, text=True)
                if r.returncode == 0:
                    try:
                        record["status"] = json.loads(r.stdout)
                        watch_progress(record["status"])
                    except (ValueError, KeyError):
                        pass
            write(record)
            done.wait(args.status_interval)

    slow = threading.Thread(target=slow_sampler, daemon=True)
    slow.start()
    peak_disk = peak_rss = 0
    while True:
        pid_done, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid_done:
            break
        t = round(time.monotonic() - start, 3)
        disk = disk_bytes(args.dir)
        rss = rss_bytes(tree(proc.pid))
        peak_disk, peak_rss = max(peak_disk, disk), max(peak_rss, rss)
        write({"t": t, "disk": disk, "rss": rss})
        time.sleep(args.interval)
    wall = time.monotonic() - start
    done.set()
    slow.join()
    disk = disk_bytes(args.dir)  # what is left behind counts too
    peak_disk = max(peak_disk, disk)
    code = os.waitstatus_to_exitcode(status)
    if stalled:
        st = stalled[0]
        print(f"monitor: no progress for {args.stall_seconds:.0f} s, stopped: state {st['state']}"
              f"{': ' + st['state_detail'] if st['state_detail'] else ''}, {st['train']['samples']} samples trained, "
              f"files {st['files']['done']}/{st['files']['total']} done, clips {json.dumps(st['clips'])}, "
              f"reserved {st['reserved_bytes']} of {st['budget_bytes']} B", file=sys.stderr)
        code = 3
    summary = {"command": cmd, "exit": code, "stalled": stalled[0] if stalled else None, "wall_s": round(wall, 3), "peak_disk_bytes": peak_disk,
               "final_disk_bytes": disk, "peak_rss_sampled_bytes": peak_rss,
               "maxrss_bytes": usage.ru_maxrss * 1024, "peak_rss_bytes": max(peak_rss, usage.ru_maxrss * 1024)}
    with open(args.summary, "w") as f:
        json.dump(summary, f, indent=1)
    out.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
