"""The data plane's protocol client (docs/data-plane.md), on numpy only.

One `Connection` is one worker's connection to kaiod's data socket: JSON
lines over AF_UNIX, shard descriptors as SCM_RIGHTS on the reply, shards
mapped read-only. `Reader` is one worker's stream of batches of windows.
"""

import array
import errno
import json
import mmap
import os
import socket
import struct
import sys
import time

import numpy as np

MAX_REQUEST = 65536
# A reply hands out at most one fd per window; `max` is at most a batch, and
# the kernel passes at most 253 fds in one message (SCM_MAX_FD).
_MAX_FDS = 253
_HEADER = struct.Struct("<8sIIIIIIQQQ")


class KaioError(RuntimeError):
    """kaiod refused a request, or the protocol was broken."""


class KaioConnectionLost(KaioError):
    """The connection to kaiod closed (kaiod stopped or restarts).

    Takes one message argument so that torch's DataLoader can rebuild it in
    the main process when a worker raises it.
    """


def _token_text(token):
    return "epoch %d window %d" % (token["epoch"], token["window"])


def wait_for_socket(path, timeout, what, quiet=False):
    """Waits up to `timeout` seconds for kaiod to accept on `path`.

    Prints one line to stderr the first time it has to wait (unless `quiet`:
    the caller said it already); raises KaioConnectionLost naming the socket
    when the time is up.
    """
    deadline = time.monotonic() + timeout
    said = False
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(max(0.1, min(5.0, deadline - time.monotonic())))
        try:
            s.connect(path)
            return s
        except OSError as e:
            s.close()
            if e.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN, errno.ETIMEDOUT, None) and not isinstance(
                e, socket.timeout
            ):
                raise KaioError("cannot connect to kaiod's data socket %s: %s" % (path, e)) from e
            if time.monotonic() >= deadline:
                raise KaioConnectionLost(
                    "kaiod did not come back on %s within %g s (%s)" % (path, timeout, what)
                ) from e
            if not said and not quiet:
                print(
                    "kaio: kaiod is not answering on %s (%s): waiting up to %g s for it" % (path, what, timeout),
                    file=sys.stderr,
                    flush=True,
                )
                said = True
            time.sleep(0.1)


class Connection:
    """One connection to the data socket; every call is bounded."""

    def __init__(self, path, timeout=30.0, reconnect_timeout=60.0, what="kaio client"):
        self.path = path
        self.timeout = timeout
        self.sock = wait_for_socket(path, reconnect_timeout, what)
        self.sock.settimeout(timeout)
        self._buf = b""

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, cmd, args=None, timeout=None):
        """Sends one request; returns (result, fds). Raises KaioError for an
        error reply, KaioConnectionLost when the connection is gone."""
        if self.sock is None:
            raise KaioConnectionLost("connection to %s is closed" % self.path)
        line = json.dumps({"v": 1, "cmd": cmd, "args": args or {}}, separators=(",", ":")).encode() + b"\n"
        if len(line) > MAX_REQUEST:
            raise KaioError("request %s is %d bytes, over kaiod's %d" % (cmd, len(line), MAX_REQUEST))
        self.sock.settimeout(timeout if timeout is not None else self.timeout)
        try:
            self.sock.sendall(line)
            reply, fds = self._read_line()
        except socket.timeout as e:
            self.close()
            raise KaioError("kaiod did not answer %s on %s in time" % (cmd, self.path)) from e
        except (ConnectionError, BrokenPipeError) as e:
            self.close()
            raise KaioConnectionLost("lost kaiod on %s during %s: %s" % (self.path, cmd, e)) from e
        try:
            msg = json.loads(reply)
        except ValueError as e:
            for fd in fds:
                os.close(fd)
            raise KaioError("kaiod sent a reply that is not JSON to %s: %r" % (cmd, reply[:200])) from e
        if not msg.get("ok"):
            for fd in fds:
                os.close(fd)
            raise KaioError(str(msg.get("error", "kaiod refused %s without saying why" % cmd)))
        return msg.get("result", {}), fds

    def _read_line(self):
        fds = []
        while b"\n" not in self._buf:
            data, anc, flags, _ = self.sock.recvmsg(
                1 << 16, socket.CMSG_SPACE(_MAX_FDS * 4), socket.MSG_CMSG_CLOEXEC
            )
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(payload[: len(payload) - len(payload) % a.itemsize])
                    fds.extend(a)
            if flags & socket.MSG_CTRUNC:
                for fd in fds:
                    os.close(fd)
                raise KaioError("kaiod sent more descriptors than fit in one reply (%s)" % self.path)
            if not data:
                for fd in fds:
                    os.close(fd)
                raise ConnectionResetError("kaiod closed the connection")
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return line, fds


class Shard:
    """One clip's shard file, mapped read-only (docs/data-formats.md)."""

    def __init__(self, fd, clip):
        self.clip = clip
        try:
            self.map = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        finally:
            os.close(fd)  # the mapping keeps the file; the fd is not needed
        magic, version, t, h, w, c, n, window_bytes, _, _ = _HEADER.unpack_from(self.map, 0)
        if magic != b"KAIOSHRD" or version != 1:
            self.map.close()
            raise KaioError("shard of clip %s is not a version 1 kaio shard" % clip)
        self.shape = (t, h, w, c)
        self.windows = n
        self.window_bytes = window_bytes

    def frames(self, offset, shape):
        count = shape[0] * shape[1] * shape[2] * shape[3]
        if offset + count > len(self.map):
            raise KaioError(
                "window at offset %d of clip %s runs past its shard (%d bytes)" % (offset, self.clip, len(self.map))
            )
        return np.frombuffer(self.map, dtype=np.uint8, count=count, offset=offset).reshape(shape)

    def try_close(self):
        """Unmaps unless arrays still view the mapping; True when unmapped."""
        try:
            self.map.close()
            return True
        except BufferError:
            return False


class Reader:
    """One worker's stream of batches (docs/data-plane.md, attach and next).

    `batches()` yields (windows, info): `windows` a list of dicts (the reply's
    window plus `frames`, a numpy view of the shard), `info` the batch's
    epoch, rank-local window range and whether it ends the epoch.
    """

    def __init__(self, socket_path, consumer, rank, world, worker, workers, batch_size, token,
                 timeout=30.0, reconnect_timeout=60.0, wait_ms=1000, commit_from=False):
        self.path = socket_path
        self.consumer = consumer
        self.rank, self.world = rank, world
        self.worker, self.workers = worker, workers
        self.batch_size = batch_size
        self.token = dict(token) if token else None
        self.timeout = timeout
        self.reconnect_timeout = reconnect_timeout
        self.wait_ms = wait_ms
        self.commit_from = commit_from
        self.conn = None
        self.shards = {}  # clip -> Shard mapped by this connection
        self.unmapped = []  # clips to report with the next `next`
        self.attach_result = None
        self.last_waiting = ""

    def who(self):
        return 'consumer "%s" rank %d worker %d of %d' % (self.consumer, self.rank, self.worker, self.workers)

    def attach(self):
        self.conn = Connection(self.path, self.timeout, self.reconnect_timeout, self.who())
        args = {
            "consumer": self.consumer, "rank": self.rank, "world": self.world,
            "worker": self.worker, "workers": self.workers, "batch_size": self.batch_size,
            "from": self.token,
        }
        # A killed predecessor's connection may not be seen closed yet: its
        # slot frees within moments, so "already attached" is retried, bounded.
        deadline = time.monotonic() + self.reconnect_timeout
        while True:
            try:
                result, fds = self.conn.request("attach", args)
                break
            except KaioError as e:
                if "already attached" not in str(e) or time.monotonic() > deadline:
                    self.conn.close()
                    raise KaioError("attach of %s to %s failed: %s" % (self.who(), self.path, e)) from None
                time.sleep(0.2)
        for fd in fds:
            os.close(fd)
        self.attach_result = result
        if self.token is None:
            self.token = dict(result["from"])
        self.shape = (result["frames"], result["height"], result["width"], result.get("channels", 3))
        if self.commit_from:
            # The token came from a durable checkpoint whose commit may never
            # have reached kaiod (attach `from` ahead of committed).
            committed = result.get("committed")
            if committed is None or (committed["epoch"], committed["window"]) < (self.token["epoch"], self.token["window"]):
                self.conn.request("commit", {"consumer": self.consumer, "rank": self.rank, "token": self.token})
            self.commit_from = False
        return result

    def detach(self):
        if self.conn is not None:
            try:
                self.conn.request("detach", timeout=5)
            except KaioError:
                pass  # closing the socket is a detach too
            self.conn.close()
            self.conn = None
        self.release(keep=())

    def release(self, keep):
        """Unmaps every shard not in `keep` that no array views any more."""
        for clip in list(self.shards):
            if clip not in keep and self.shards[clip].try_close():
                del self.shards[clip]
                self.unmapped.append(clip)

    def next(self, max_windows):
        args = {"max": max_windows, "wait_ms": self.wait_ms}
        if self.unmapped:
            args["unmapped"] = self.unmapped
        result, fds = self.conn.request("next", args, timeout=self.timeout + self.wait_ms / 1000.0)
        self.unmapped = []
        try:
            for w in result.get("windows", []):
                if w.get("fd") is not None:
                    if w["fd"] >= len(fds) or fds[w["fd"]] < 0:
                        raise KaioError("kaiod's reply names descriptor %s of %d (%s)" % (w["fd"], len(fds), self.who()))
                    old = self.shards.pop(w["clip"], None)
                    if old is not None:
                        old.try_close()
                    self.shards[w["clip"]] = Shard(fds[w["fd"]], w["clip"])
                    fds[w["fd"]] = -1
                elif w["clip"] not in self.shards:
                    raise KaioError(
                        "kaiod gave window %d of clip %s without its shard, and this connection has none (%s)"
                        % (w.get("index", -1), w["clip"], self.who())
                    )
        finally:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
        return result

    def batches(self):
        """Yields this worker's batches of the current epoch, in order."""
        if self.conn is None:
            self.attach()
        B = self.batch_size
        pending = []
        while True:
            self.release(keep={w["clip"] for w in pending})
            want = B - len(pending)
            result = self.next(want)
            self.last_waiting = result.get("waiting", "")
            for w in result.get("windows", []):
                if pending and w["index"] // B != pending[0]["index"] // B:
                    raise KaioError(
                        "kaiod's window %d is not in the batch of window %d (%s)" % (w["index"], pending[0]["index"], self.who())
                    )
                w["frames"] = self.shards[w["clip"]].frames(w["offset"], self.shape)
                pending.append(w)
            end = bool(result.get("end_of_epoch")) or bool(result.get("done"))
            if pending and (len(pending) == B or end):
                first = pending[0]
                info = {"epoch": first["epoch"], "start": first["index"], "end": pending[-1]["index"] + 1,
                        "last": end}
                batch, pending = pending, []
                yield batch, info
            if end:
                self.end_of_epoch = bool(result.get("end_of_epoch"))
                self.done = bool(result.get("done"))
                return


def commit(socket_path, consumer, rank, token, timeout=30.0, reconnect_timeout=60.0):
    """Commits `token` for (consumer, rank) on a short connection; waits
    (bounded) for a restarting kaiod."""
    what = 'commit of consumer "%s" rank %d at %s' % (consumer, rank, _token_text(token))
    deadline = time.monotonic() + reconnect_timeout
    while True:
        conn = Connection(socket_path, timeout, max(0.1, deadline - time.monotonic()), what)
        try:
            result, fds = conn.request("commit", {"consumer": consumer, "rank": rank, "token": token})
            for fd in fds:
                os.close(fd)
            return result
        except KaioConnectionLost:
            if time.monotonic() > deadline:
                raise
        except KaioError as e:
            raise KaioError("%s on %s failed: %s" % (what, socket_path, e)) from None
        finally:
            conn.close()
