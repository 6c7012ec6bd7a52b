"""The ranks of one benchmark job: many processes, GPUs or machines sharing one ``--out``.

    torchrun --nproc_per_node=N -m benchmarks --out DIR [options]

starts N processes (ranks) of one job. Each trains its share of the networks (every
(seed, network) once, in turn across the ranks; the ImageNet fine-tuning, one network at
a time with DistributedDataParallel across all of them); rank 0 waits for every rank's
networks and hands out the test images to measure, which the others wait for; each then
computes the measurement cells whose key falls to it (a hash of the key modulo the
number of ranks) and writes each into the one store. Rank 0 then reads every cell back,
verified, and writes the report. Every cell is seeded from its own key and every network
is trained as it would be alone, so the results do not depend on the number of ranks.

The ranks talk through ``torch.distributed`` once, at the start (rank 0 opens the store,
holding the folder's lock for the whole job, and tells the others whether they may go on),
and otherwise through small files in ``DIR/.ranks/<job>/``: each rank's phase, its count
of finished cells and a heartbeat. A rank that waits for another gives up when that one's
heartbeat has not moved for ``--rank-timeout`` seconds (killed, stopped, its machine gone)
or when it reports a failure, and the job ends with one line saying to run the same
command again, which resumes: nothing finished is computed twice.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import socket
import sys
import threading
import time
from pathlib import Path

import torch
import torch.distributed as dist

from .common import write_json

__all__ = ["PHASES", "RankFailed", "RankLost", "RankStopped", "Ranks", "init_group", "join", "leave", "share"]

#: What a rank has finished, in order.
PHASES = ("started", "networks", "pools", "measured")


class RankFailed(RuntimeError):
    """Another rank of the job stopped, or has not been heard from for the timeout."""


class RankStopped(RankFailed):
    """Another rank stopped and said why (it has printed its own line)."""


class RankLost(RankFailed):
    """Another rank's heartbeat has not moved for the timeout: killed, stopped, or its machine gone."""


def _env_int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def world_size() -> int:
    """The number of processes of the job, as torchrun (or SLURM + torchrun) says: 1 outside one."""
    return max(_env_int("WORLD_SIZE", 1), 1)


class Ranks:
    """This process's place in its job, and what it knows of the other ranks.

    Args:
        rank: this process's rank (0 writes the report).
        size: the number of ranks.
        timeout: seconds without a heartbeat after which a rank is taken as gone.
    """

    def __init__(self, rank: int = 0, size: int = 1, timeout: float = 600.0):
        self.rank, self.size, self.timeout = rank, size, timeout
        self.folder: Path | None = None
        self.done: dict[str, int] = {}  # stage -> this rank's finished items
        self._state: dict = {}
        self._bar = None
        self._stage: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_log = self._written = time.monotonic()

    @property
    def lead(self) -> bool:
        """Whether this is rank 0, which holds the folder's lock and writes the report."""
        return self.rank == 0

    @property
    def many(self) -> bool:
        return self.size > 1

    def owns(self, key: str) -> bool:
        """Whether the cell ``key`` falls to this rank (a hash of the key modulo the number of ranks)."""
        if self.size == 1:
            return True
        return int(hashlib.sha256(key.encode()).hexdigest()[:15], 16) % self.size == self.rank

    def trains(self, index: int) -> bool:
        """Whether the ``index``-th network of the run (seeds outer, names inner) is this rank's to train."""
        return index % self.size == self.rank

    # -- the job's files -------------------------------------------------------------
    def start(self, root: Path, job: str) -> None:
        """Begin writing this rank's file and heartbeat in ``root/.ranks/<job>/``."""
        if not self.many:
            return
        self.folder = root / ".ranks" / job
        self.folder.mkdir(parents=True, exist_ok=True)
        self._state = {
            "rank": self.rank,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "phase": "started",
            "beat": 0,
            "done": {},
        }
        self._write()
        self._thread = threading.Thread(target=self._beat, name=f"rank-{self.rank}-heartbeat", daemon=True)
        self._thread.start()

    def _path(self, rank: int) -> Path:
        return self.folder / f"rank-{rank}.json"

    def _write(self) -> None:
        with self._lock:
            self._written = time.monotonic()
            self._state["done"] = dict(self.done)
            try:
                write_json(self._path(self.rank), self._state)
            except OSError:  # a full disk or a vanished folder: the next beat tries again
                pass

    def _read(self, rank: int) -> dict | None:
        try:
            content = json.loads(self._path(rank).read_text())
        except (OSError, ValueError):
            return None
        return content if isinstance(content, dict) else None

    def _interval(self) -> float:
        return max(min(5.0, self.timeout / 4), 0.05)

    def _beat(self) -> None:
        while not self._stop.wait(self._interval()):
            self._state["beat"] += 1
            self._write()
            try:
                self.show()
            except Exception:  # a progress display never stops a run
                pass

    def show(self) -> None:
        """Rank 0: move the bar to every rank's count; the others: a line at most every 30 s off a terminal."""
        stage = self._stage
        if stage is None:
            return
        if self.lead and self._bar is not None:
            total = self.done.get(stage, 0)
            for r in range(1, self.size):
                state = self._read(r) or {}
                total += int((state.get("done") or {}).get(stage, 0))
            if total > self._bar.n:
                self._bar.update(total - self._bar.n)
        elif not self.lead and not sys.stderr.isatty() and time.monotonic() - self._last_log >= 30:
            self._last_log = self._written = time.monotonic()
            print(f"rank {self.rank} of {self.size}: {self.done.get(stage, 0)} {stage} done", file=sys.stderr)

    def track(self, stage: str, bar=None) -> None:
        """Count finished items of ``stage`` from now on; rank 0 shows every rank's on ``bar``."""
        self._stage, self._bar = stage, bar
        self.done.setdefault(stage, 0)

    def tick(self, stage: str, n: int = 1) -> None:
        """Count ``n`` finished items of ``stage``; the others see the count within a second."""
        self.done[stage] = self.done.get(stage, 0) + n
        if self.many and self.folder is not None and time.monotonic() - self._written >= 1.0:
            self._write()

    def post(self, phase: str, last: bool = False, **payload) -> None:
        """Say that this rank has finished ``phase`` (one of ``PHASES``), with what the others need of it.

        ``last``: nothing follows; the heartbeat stops first, so that this is the rank's last write.
        """
        if not self.many:
            return
        if last:
            self.close()
        with self._lock:
            self._state.update(payload, phase=phase)
        self._write()

    def fail(self, message: str) -> None:
        """Say that this rank stops, and why, so that the others stop waiting for it."""
        if self.many and self.folder is not None:
            self.post("failed", last=True, message=message)

    def wait(self, phase: str, ranks=None) -> dict[int, dict]:
        """Wait until ``ranks`` (default: all others) have finished ``phase``; returns their files.

        Raises:
            RankFailed: one of them failed, or its heartbeat has not moved for the timeout.
        """
        if not self.many:
            return {}
        want = PHASES.index(phase)
        ranks = [r for r in (range(self.size) if ranks is None else ranks) if r != self.rank]
        seen = {r: (None, time.monotonic()) for r in ranks}
        while True:
            states = {}
            for r in ranks:
                state = self._read(r)
                beat = None if state is None else (state.get("phase"), state.get("beat"))
                if beat != seen[r][0]:
                    seen[r] = (beat, time.monotonic())
                if state is not None and state.get("phase") == "failed":
                    raise RankStopped(f"rank {r} ({_where(state)}) stopped: {state.get('message', 'no reason given')}")
                if state is not None and state.get("phase") in PHASES and PHASES.index(state["phase"]) >= want:
                    states[r] = state
                elif time.monotonic() - seen[r][1] > self.timeout:
                    last = f"last heard: {state.get('phase')}" if state else "never heard from"
                    where = f" ({_where(state)})" if state else ""
                    raise RankLost(
                        f"rank {r}{where} has not been heard from for {self.timeout:g} s ({last}); "
                        "it was killed, stopped or lost its machine"
                    )
            if len(states) == len(ranks):
                return states
            # A file read per rank waited for: fewer rounds for many ranks, at most one every 5 s.
            time.sleep(min(max(0.2, len(ranks) / 50), 5.0, self._interval()))

    def close(self) -> None:
        """Stop the heartbeat (this rank's file stays, with its last phase)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def clean(self, root: Path) -> None:
        """Rank 0, holding the lock: remove the files of every job, this one's included."""
        folder = root / ".ranks"
        for old in folder.glob("*") if folder.is_dir() else ():
            shutil.rmtree(old, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.rmdir()  # when empty


def _where(state: dict) -> str:
    return f"{state.get('host', '?')}, pid {state.get('pid', '?')}"


def join(device: str, timeout: float) -> tuple[Ranks, str]:
    """This process's ``Ranks`` and device: the process group of a torchrun job, if it is one.

    Outside torchrun (no ``WORLD_SIZE`` above 1) this is rank 0 of 1 and starts nothing. In
    a job, the process group is initialised (``init_group``) and a CUDA run computes on the
    GPU of its ``LOCAL_RANK``.
    """
    size = world_size()
    if size == 1:
        return Ranks(), device
    device = init_group(device, timeout)
    return Ranks(dist.get_rank(), dist.get_world_size(), timeout), device


def init_group(device: str, timeout: float) -> str:
    """Initialise the process group of a torchrun job (once); the device this process computes on.

    gloo on CPUs; for a CUDA run NCCL for CUDA tensors beside gloo for the job's own
    messages, and the GPU of ``LOCAL_RANK``. Every collective call times out after
    ``timeout`` seconds (at least 60: the ranks of a job start within seconds of each other,
    not at once).
    """
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if device.startswith("cuda") else "gloo"
        wait = datetime.timedelta(seconds=max(timeout, 60.0))
        rank, size = _env_int("RANK", 0), world_size()
        dist.init_process_group(backend, store=_store(rank, size, wait), rank=rank, world_size=size, timeout=wait)
    if device.startswith("cuda"):
        device = f"cuda:{_env_int('LOCAL_RANK', 0)}"
        torch.cuda.set_device(device)
    return device


def _store(rank: int, size: int, wait: datetime.timedelta) -> dist.Store:
    """The job's key-value store, with keys of its own for each start of the group.

    torchrun's agent hosts the store (``TORCHELASTIC_USE_AGENT_STORE``) and keeps it across
    the restarts of ``--max-restarts``; a restarted group that read the addresses its
    killed predecessor left there would connect to processes that are gone. Each start
    (``TORCHELASTIC_RESTART_COUNT``) therefore writes and reads under its own prefix.
    Started without torchrun's agent, rank 0 hosts the store.
    """
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(
        os.environ.get("MASTER_ADDR", "127.0.0.1"),
        _env_int("MASTER_PORT", 29500),
        size,
        is_master=not agent and rank == 0,
        timeout=wait,
    )
    return dist.PrefixStore(f"neuralsde/start-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def share(ranks: Ranks, value):
    """Rank 0's ``value`` on every rank (a collective call: every rank must make it)."""
    if not ranks.many:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0, device=torch.device("cpu"))
    return box[0]


def new_job() -> str:
    """A name for this job's files: a new one for every start, so a restarted group never reads an old one's."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{socket.gethostname()}-{os.getpid()}"


def leave() -> None:
    """Leave the process group, if this process joined one."""
    with contextlib.suppress(Exception):
        if dist.is_initialized():
            dist.destroy_process_group()
