"""What the Python tests share: a kaio-mkdata dataset served by kaio-hub, a
real kaiod with the external backend, consumers as child processes, bounded
waits. Paths of the build's programs come from CMake on the command line.

Every wait is bounded; every child is killed when the test ends.
"""

import argparse
import atexit
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(SOURCE, "python"))

_children = []


def _kill_all():
    for p in _children:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except OSError:
                pass
            p.wait()


atexit.register(_kill_all)


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def skip(reason):
    print("skipped: " + reason, flush=True)
    sys.exit(0)


def need_torch():
    try:
        import torch  # noqa: F401
    except ImportError as e:
        skip("no torch for %s (%s); Debian: apt-get install python3-torch" % (sys.executable, e))


def args(extra=None):
    p = argparse.ArgumentParser()
    p.add_argument("--build", required=True, help="the CMake build folder")
    p.add_argument("--work", help="scratch folder (default: a temp folder, kept on failure)")
    if extra:
        extra(p)
    a = p.parse_args()
    a.build = os.path.abspath(a.build)
    a.kaiod = os.path.join(a.build, "daemon", "kaiod")
    a.hub = os.path.join(a.build, "tools", "kaio-hub", "kaio-hub")
    a.mkdata = os.path.join(a.build, "tools", "kaio-mkdata", "kaio-mkdata")
    for prog in (a.kaiod, a.hub, a.mkdata):
        if not os.access(prog, os.X_OK):
            fail("%s is not built" % prog)
    if not a.work:
        a.work = tempfile.mkdtemp(prefix="kaio-py-")
    else:
        shutil.rmtree(a.work, ignore_errors=True)  # a previous run's kaiod state would be resumed
    os.makedirs(a.work, exist_ok=True)
    return a


def log(msg):
    print("[%7.2f] %s" % (time.monotonic() - _T0, msg), flush=True)


_T0 = time.monotonic()


def wait_until(what, cond, timeout, proc=None, poll=0.05):
    """Waits for cond() to be true, up to timeout; fails naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if proc is not None and proc.poll() is not None:
            fail("%s: the process ended (exit %s) first" % (what, proc.returncode))
        if time.monotonic() > deadline:
            fail("%s: not within %g s" % (what, timeout))
        time.sleep(poll)


def _dataset_key(mkdata_args):
    """tests/support/datasets.h's key (FNV-1a of the arguments), so C++ and
    Python tests share one cache of kaio-mkdata datasets per build folder."""
    h = 1469598103934665603
    for c in mkdata_args.encode():
        h = ((h ^ c) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return "%016x" % h


def dataset(a, clips=12, per_archive=6, seconds=4, seed=7):
    """A kaio-mkdata repo, made once per build folder (deterministic)."""
    mkdata_args = "--seed %d --clips %d --clips-per-archive %d --seconds %d --width 160 --height 96 --fps 8" % (
        seed, clips, per_archive, seconds)
    repo = os.path.join(a.build, "test-datasets", _dataset_key(mkdata_args))
    if not os.path.exists(os.path.join(repo, ".complete")):
        tmp = "%s.tmp-%d" % (repo, os.getpid())
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(os.path.dirname(tmp), exist_ok=True)
        cmd = [a.mkdata, "--layout", "llava", "--out", tmp] + mkdata_args.split()
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=300)
        check(r.returncode == 0, "kaio-mkdata failed: %s" % r.stdout.decode(errors="replace"))
        with open(os.path.join(tmp, ".complete"), "w") as f:
            f.write(mkdata_args + "\n")
        try:
            os.rename(tmp, repo)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another test made it first
    return repo


def start(epochs, name="kaiod"):
    """What most tests start with: arguments, torch, the default dataset on
    kaio-hub, and one kaiod serving it. Returns (args, hub, kaiod)."""
    a = args()
    need_torch()
    hub = Hub(a, dataset(a))
    return a, hub, Kaiod(a, hub, name, epochs=epochs).start()


def test_consumer(a, kd, name, flags, out=None):
    """tests/python/consumer.py as `name` on kd's data socket, its output in the work folder."""
    cmd = [sys.executable, os.path.join(HERE, "consumer.py"), "--socket", kd.socket, "--consumer", name] + flags
    return Consumer(cmd, out or os.path.join(a.work, name + ".out"))


class Hub:
    """kaio-hub on loopback serving the dataset as kaio-test/data."""

    def __init__(self, a, repo):
        root = os.path.join(a.work, "hub")
        os.makedirs(os.path.join(root, "kaio-test"), exist_ok=True)
        link = os.path.join(root, "kaio-test", "data")
        if not os.path.islink(link):
            os.symlink(repo, link)
        port_file = os.path.join(a.work, "hub.port")
        if os.path.exists(port_file):
            os.unlink(port_file)
        out = open(os.path.join(a.work, "hub.log"), "ab")
        self.proc = subprocess.Popen([a.hub, "--root", root, "--port", "0", "--port-file", port_file],
                                     stdout=out, stderr=out, start_new_session=True)
        _children.append(self.proc)
        wait_until("kaio-hub's port file", lambda: os.path.exists(port_file), 60, self.proc)
        self.port = int(open(port_file).read().split()[0])
        self.url = "http://127.0.0.1:%d" % self.port


class Kaiod:
    """A real kaiod with train.backend external, in its own folder."""

    def __init__(self, a, hub, name, epochs=1, budget="64MB", batch_size=4, seed=3, shuffle_clips=4):
        self.a = a
        self.dir = os.path.join(a.work, name)
        os.makedirs(self.dir, exist_ok=True)
        self.cache = os.path.join(self.dir, "cache")
        self.socket = os.path.join(self.dir, "data.sock")
        self.control = os.path.join(self.dir, "kaiod.sock")
        self.config = os.path.join(self.dir, "kaiod.json")
        self.log = os.path.join(self.dir, "kaiod.log")
        c = {
            "source": {"endpoint": hub.url, "repo": "kaio-test/data", "include": ["**/*.tar.gz"],
                       "captions": ["**/*_cap_processed.json"]},
            "fetch": {"max_backoff": "2s", "stall_timeout": "5s", "connect_timeout": "5s"},
            "storage": {"cache_dir": self.cache, "state_dir": os.path.join(self.dir, "state"), "budget": budget,
                        "free_disk_floor": "10MB"},
            "decode": {"frames": 8, "stride": 8, "fps": 4, "size": 32, "workers": 1},
            "train": {"backend": "external", "batch_size": batch_size, "shuffle_clips": shuffle_clips,
                      "epochs": epochs, "seed": seed, "threads": 1},
            "control": {"socket": self.control, "data_socket": self.socket},
            "log": {"level": "info"},
        }
        with open(self.config, "w") as f:
            json.dump(c, f, indent=2)
        self.proc = None

    def start(self):
        out = open(self.log, "ab")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "NOTIFY_", "WATCHDOG_"))}
        env["HOME"] = self.dir
        self.proc = subprocess.Popen([self.a.kaiod, "--config", self.config], stdout=out, stderr=out, env=env,
                                     start_new_session=True)
        _children.append(self.proc)
        wait_until("kaiod's data socket %s (log %s)" % (self.socket, self.log), self._answers, 60, self.proc)
        return self

    def _answers(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2)
        try:
            s.connect(self.socket)
            return True
        except OSError:
            return False
        finally:
            s.close()

    def kill9(self):
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def status(self):
        """kaiod's status object, asked on the control socket; None if no answer."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect(self.control)
            s.sendall(b'{"v":1,"cmd":"status","args":{}}\n')
            buf = b""
            while b"\n" not in buf:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
            r = json.loads(buf)
            return r.get("result") if r.get("ok") else None
        except (OSError, ValueError):
            return None
        finally:
            s.close()


def read_shards(cache):
    """Every shard file under cache/work: {(archive, member, window): sha256 of its frames}."""
    found = {}
    work = os.path.join(cache, "work")
    for name in sorted(os.listdir(work)) if os.path.isdir(work) else []:
        if not name.endswith(".shard"):
            continue
        with open(os.path.join(work, name), "rb") as f:
            data = f.read()
        magic, version, t, h, w, c, n, wb, meta_off, meta_bytes = struct.unpack_from("<8sIIIIIIQQQ", data, 0)
        assert magic == b"KAIOSHRD", name
        pos = meta_off
        for i in range(n):
            (first_time,) = struct.unpack_from("<d", data, pos)
            pos += 8
            strings = []
            for _ in range(3):
                (ln,) = struct.unpack_from("<I", data, pos)
                strings.append(data[pos + 4:pos + 4 + ln].decode())
                pos += 4 + ln
            frames = data[64 + i * wb:64 + i * wb + t * h * w * c]
            found[(strings[0], strings[1], i)] = {"sha": hashlib.sha256(frames).hexdigest(), "caption": strings[2],
                                                  "time": first_time}
    return found


class Consumer:
    """A consumer process (tests/python/consumer.py or the example), its
    stdout read line by line so kills follow observed progress."""

    def __init__(self, cmd, log_path, env=None):
        self.log_path = log_path
        self.err = open(log_path + ".err", "ab")
        e = dict(os.environ)
        e["PYTHONPATH"] = os.path.join(SOURCE, "python") + os.pathsep + e.get("PYTHONPATH", "")
        e["OMP_NUM_THREADS"] = "1"
        e.update(env or {})
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.err, env=e, start_new_session=True,
                                     cwd=SOURCE)
        _children.append(self.proc)
        self.lines = []
        os.set_blocking(self.proc.stdout.fileno(), False)
        self._partial = b""

    def poll_lines(self):
        try:
            chunk = self.proc.stdout.read()
        except (OSError, ValueError):
            chunk = None
        if chunk:
            self._partial += chunk
            *full, self._partial = self._partial.split(b"\n")
            for line in full:
                text = line.decode(errors="replace")
                self.lines.append(text)
                with open(self.log_path, "a") as f:
                    f.write(text + "\n")
        return self.lines

    def wait_line(self, what, pred, timeout):
        def seen():
            for line in self.poll_lines():
                if pred(line):
                    return line
            return None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = seen()
            if line:
                return line
            if self.proc.poll() is not None:
                line = seen()
                if line:
                    return line
                fail("%s: consumer exited %s first; stderr:\n%s" % (what, self.proc.returncode, self.stderr()[-3000:]))
            time.sleep(0.02)
        fail("%s: not within %g s; stderr:\n%s" % (what, timeout, self.stderr()[-3000:]))

    def stderr(self):
        self.err.flush()
        with open(self.log_path + ".err", errors="replace") as f:
            return f.read()

    def kill9(self):
        # The whole group: its DataLoader workers too, as a machine crash would.
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.poll_lines()

    def finish(self, timeout):
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            fail("consumer did not finish within %g s; stderr:\n%s" % (timeout, self.stderr()[-3000:]))
        time.sleep(0.05)
        self.poll_lines()
        if self._partial:
            self.lines.append(self._partial.decode(errors="replace"))
            self._partial = b""
        check(self.proc.returncode == 0,
              "consumer exited %s; stderr:\n%s" % (self.proc.returncode, self.stderr()[-3000:]))
        return self.lines


def records(lines):
    """The JSON lines a consumer printed."""
    out = []
    for line in lines:
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def commit_end(kd, consumer, token, rank=0):
    """Commits the end of the last epoch. kaiod stops once every consumer has
    (the data plane is done), and may be gone before it replies: that counts
    when it exited 0 saying so."""
    import kaio.client
    try:
        r = kaio.client.commit(kd.socket, consumer, rank, token, timeout=10, reconnect_timeout=3)
        check(r.get("committed") == token, "commit of %s at %s: %s" % (consumer, token, r))
    except kaio.client.KaioConnectionLost:
        try:
            kd.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            fail("commit of %s at %s: no reply, and kaiod still runs" % (consumer, token))
        check(kd.proc.returncode == 0 and "data plane done" in open(kd.log).read(),
              "commit of %s at %s: no reply, kaiod exited %s (log %s)" % (consumer, token, kd.proc.returncode, kd.log))
        log("commit of %s at %s: kaiod stopped, done, before replying" % (consumer, token))
