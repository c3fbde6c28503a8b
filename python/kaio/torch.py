"""PyTorch on kaio's data plane: KaioDataset and KaioLoader.

    ds = kaio.torch.KaioDataset(socket="/run/kaio/data.sock", consumer="clipnet")
    loader = kaio.torch.KaioLoader(ds, batch_size=8, num_workers=2)
    loader.load_state_dict(ckpt["loader"])          # when resuming
    while not loader.done:
        for batch in loader:                        # one epoch
            ...; save({"loader": loader.state_dict(), ...}); loader.commit(state)

Batches come whole from each worker (worker k of K reads the rank's batches
b0+k, b0+k+K, ..., the order DataLoader takes them in), so the token counts
the batches the loop received, never the ones workers prefetched.
"""

import ctypes
import os
import signal
import sys
import warnings

import torch
import torch.utils.data as tud
from torch.utils.data._utils.collate import default_collate

from kaio.client import KaioConnectionLost, KaioError, Reader, _token_text, commit as _commit, wait_for_socket

__all__ = ["KaioDataset", "KaioLoader", "KaioError", "KaioConnectionLost"]

FIELDS = ("frames", "caption", "meta")
_META = ("clip", "archive", "member", "window", "epoch", "index", "global", "time")


def _rank_and_world(node_local):
    if node_local:
        return int(os.environ.get("LOCAL_RANK", "0")), int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _tensor(frames):
    # A view of the read-only mapping: torch warns that it is not writable
    # (writing to it would fault); the view is what makes it zero-copy.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(frames)


def _item(w, fields):
    item = {}
    if "frames" in fields:
        item["frames"] = _tensor(w["frames"])
    if "caption" in fields:
        item["caption"] = w.get("caption") or ""
    if "meta" in fields:
        item["meta"] = {k: w[k] for k in _META if k in w}
    return item


def _die_with_parent(_worker_id=None):
    # A worker blocked on kaiod must not outlive a consumer killed with -9:
    # its connection would keep the worker's slot attached.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class KaioDataset(tud.IterableDataset):
    """Windows of kaiod's plan for this rank, as dicts of `fields`.

    `frames`: uint8 tensor [T, H, W, 3] viewing the mapped shard (no copy);
    `caption`: str; `meta`: clip, archive, member, window (in the clip),
    epoch, index (rank-local), global, time. Iterated alone it reads from the
    rank's committed token (or the loader's); KaioLoader is the usual way.
    """

    def __init__(self, socket, consumer, fields=FIELDS, batch_size=1, node_local=False,
                 timeout=30.0, reconnect_timeout=60.0, wait_ms=1000):
        unknown = set(fields) - set(FIELDS)
        if unknown:
            raise ValueError("unknown fields %s; KaioDataset has %s" % (sorted(unknown), FIELDS))
        self.socket = str(socket)
        self.consumer = consumer
        self.fields = tuple(fields)
        self.batch_size = batch_size
        self.node_local = node_local
        self.timeout = timeout
        self.reconnect_timeout = reconnect_timeout
        self.wait_ms = wait_ms
        self.token = None  # set by KaioLoader; None: the rank's committed token
        self.commit_from = False
        self.rank, self.world = None, None

    def _placement(self):
        if self.rank is None:
            self.rank, self.world = _rank_and_world(self.node_local)
        info = tud.get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def _reader(self):
        worker, workers = self._placement()
        return Reader(self.socket, self.consumer, self.rank, self.world, worker, workers, self.batch_size,
                      self.token, self.timeout, self.reconnect_timeout, self.wait_ms,
                      commit_from=self.commit_from and worker == 0)

    def __iter__(self):
        # Alone (no KaioLoader), a lost kaiod is waited for here: re-attach
        # with the same `from`'s batch base, skipping what was yielded.
        reader = self._reader()
        seen = set()
        try:
            while True:
                try:
                    for windows, _ in reader.batches():
                        for w in windows:
                            key = (w["epoch"], w["index"])
                            if key in seen:
                                continue
                            seen.add(key)
                            yield _item(w, self.fields)
                    return
                except KaioConnectionLost:
                    reader.detach()
                    wait_for_socket(self.socket, self.reconnect_timeout, reader.who()).close()
        finally:
            reader.detach()


class _Batches(tud.IterableDataset):
    """What KaioLoader's DataLoader iterates: whole collated batches, then
    one marker saying how this worker's stream ended."""

    def __init__(self, ds):
        self.ds = ds

    def __iter__(self):
        reader = self.ds._reader()
        try:
            for windows, info in reader.batches():
                batch = default_collate([_item(w, self.ds.fields) for w in windows])
                del windows
                batch["_kaio"] = info
                yield batch
            yield {"_kaio": {"marker": True, "end_of_epoch": reader.end_of_epoch, "done": reader.done,
                             "epochs": reader.attach_result.get("epochs"),
                             "from": reader.attach_result.get("from")}}
        finally:
            reader.detach()


class KaioLoader:
    """A torch DataLoader over a KaioDataset, with the rank's token.

    `state_dict()` holds the token of the batches yielded so far; save it in
    your checkpoint, and after the checkpoint is durable call
    `commit(state)`. `load_state_dict(state)` resumes there; the first
    attach then commits it (it came from a durable checkpoint).
    One `for batch in loader` is one epoch; `done` is True after the last.
    """

    def __init__(self, dataset, batch_size=1, num_workers=0, pin_memory=False, node_local=None,
                 prefetch_factor=2, **dataloader_args):
        if not isinstance(dataset, KaioDataset):
            raise TypeError("KaioLoader needs a KaioDataset, got %s" % type(dataset).__name__)
        if not 1 <= batch_size <= 4096:
            raise ValueError("batch_size must be 1 to 4096")
        self.dataset = dataset
        if node_local is not None:
            dataset.node_local = node_local
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.prefetch_factor = prefetch_factor
        self.dataloader_args = dataloader_args
        self.token = None  # None until known: the rank's committed token
        self.done = False
        self.epochs = None
        self._commit_pending = False

    # -- the rank -----------------------------------------------------------
    def _place(self):
        self.dataset.rank, self.dataset.world = _rank_and_world(self.dataset.node_local)
        return self.dataset.rank, self.dataset.world

    def _who(self):
        return 'consumer "%s" rank %s' % (self.dataset.consumer, self.dataset.rank)

    # -- checkpoint state ---------------------------------------------------
    def state_dict(self):
        rank, world = self._place()
        if self.token is None:
            raise KaioError("%s: no token yet (iterate the loader first, or load_state_dict)" % self._who())
        return {"kaio": 1, "consumer": self.dataset.consumer, "rank": rank, "world": world,
                "batch_size": self.batch_size, "token": dict(self.token)}

    def load_state_dict(self, state):
        rank, world = self._place()
        if state.get("kaio") != 1 or "token" not in state:
            raise KaioError("not a KaioLoader state: %r" % (state,))
        if state["consumer"] != self.dataset.consumer:
            raise KaioError('state is of consumer "%s", this loader is consumer "%s"'
                            % (state["consumer"], self.dataset.consumer))
        if state["world"] != world:
            raise KaioError('state of consumer "%s" was saved with world %d, this run has world %d: '
                            "another world size needs a new consumer name" % (state["consumer"], state["world"], world))
        self.token = {"epoch": int(state["token"]["epoch"]), "window": int(state["token"]["window"])}
        self.done = False
        self._commit_pending = True

    def commit(self, state):
        """Tells kaiod the windows below state's token are durably trained."""
        ds = self.dataset
        final = self.done and self.epochs is not None and state["token"] == {"epoch": self.epochs, "window": 0}
        try:
            # kaiod stops once every consumer committed the last epoch, so the
            # final commit may find it gone: wait only briefly for that one.
            return _commit(ds.socket, ds.consumer, state["rank"], state["token"], ds.timeout,
                           min(5.0, ds.reconnect_timeout) if final else ds.reconnect_timeout)
        except KaioConnectionLost:
            if not final:
                raise
            print("kaio: kaiod on %s is gone after the last epoch (it stops once every consumer committed it); "
                  "%s at %s not confirmed" % (ds.socket, self._who(), _token_text(state["token"])),
                  file=sys.stderr, flush=True)
            return {"committed": dict(state["token"]), "released_clips": 0, "confirmed": False}
        except KaioError as e:
            if "were delivered" not in str(e):
                raise
        # A kaiod restarted since these windows were delivered knows only what
        # its ledger has: an attach from the token tells it they were (the
        # doc's `from` ahead of committed), then the commit goes through.
        reader = Reader(ds.socket, ds.consumer, state["rank"], state["world"], 0, 1, state["batch_size"],
                        state["token"], ds.timeout, ds.reconnect_timeout, commit_from=False)
        try:
            reader.attach()
            result, _ = reader.conn.request(
                "commit", {"consumer": ds.consumer, "rank": state["rank"], "token": state["token"]})
            return result
        except KaioError as e:
            raise KaioError("commit of %s at %s on %s failed after re-attaching: %s"
                            % (self._who(), _token_text(state["token"]), ds.socket, e)) from None
        finally:
            reader.detach()

    # -- iteration ------------------------------------------------------------
    def _dataloader(self):
        ds = self.dataset
        ds.batch_size = self.batch_size
        ds.token = self.token
        ds.commit_from = self._commit_pending
        args = dict(self.dataloader_args)
        if self.num_workers > 0:
            args.setdefault("prefetch_factor", self.prefetch_factor)
            args.setdefault("worker_init_fn", _die_with_parent)
        return tud.DataLoader(_Batches(ds), batch_size=None, num_workers=self.num_workers,
                              pin_memory=self.pin_memory, **args)

    def __iter__(self):
        self._place()
        # Waiting here (one message) rather than in each worker.
        wait_for_socket(self.dataset.socket, self.dataset.reconnect_timeout, self._who()).close()
        while True:
            it = iter(self._dataloader())
            # Worker 0 commits the loaded token right after its attach; the
            # workers have their copy of the flag now.
            self._commit_pending = False
            markers = []
            try:
                for batch in it:
                    info = batch.pop("_kaio")
                    if info.get("marker"):
                        markers.append(info)
                        continue
                    if self.token is not None and (info["epoch"], info["start"]) != (self.token["epoch"], self.token["window"]):
                        raise KaioError("%s: kaiod's batch starts at epoch %d window %d, the loader is at %s"
                                        % (self._who(), info["epoch"], info["start"], self.token))
                    self.token = ({"epoch": info["epoch"] + 1, "window": 0} if info["last"]
                                  else {"epoch": info["epoch"], "window": info["end"]})
                    yield batch
            except KaioConnectionLost as e:
                # In order: every batch before the lost one was yielded, so the
                # workers re-attach from the token (ahead of committed is fine).
                _shutdown(it)
                print("kaio: lost kaiod on %s (%s); waiting up to %g s for it, then re-attaching %s from %s"
                      % (self.dataset.socket, str(e).strip().splitlines()[-1][:200], self.dataset.reconnect_timeout,
                         self._who(), _token_text(self.token) if self.token else "its committed token"),
                      file=sys.stderr, flush=True)
                wait_for_socket(self.dataset.socket, self.dataset.reconnect_timeout, self._who(), quiet=True).close()
                continue
            finally:
                _shutdown(it)
            if markers:
                self.epochs = markers[0].get("epochs")
                if self.token is None and markers[0].get("from"):
                    self.token = dict(markers[0]["from"])  # no batch this time: where kaiod started us
                # A last batch that filled up is only known to be the last
                # once the workers hear end_of_epoch.
                if all(m["end_of_epoch"] for m in markers) and self.token is not None and self.token["window"] != 0:
                    self.token = {"epoch": self.token["epoch"] + 1, "window": 0}
                self.done = any(m["done"] for m in markers)
            return


def _shutdown(it):
    shutdown = getattr(it, "_shutdown_workers", None)
    if shutdown is not None:
        shutdown()
