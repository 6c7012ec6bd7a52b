"""Results on disk that verify what they reuse.

``DIR/cells/<kind>/s<seed>/<name>.json`` holds one finished measurement each, and
``DIR/checkpoints/s<seed>/<network>.pt`` one network. A cell records its key, the
digest of everything it depends on (the training options of its networks, the
measurement options of its kind, the images it measured), the versions of torch,
torchvision, captum, torchdiffeq and torchsde it was computed under, and a checksum of
all of that and of its result. It is reused only if all of them match; otherwise, and
when it is truncated, unreadable or its contents no longer match its checksum, it is
recomputed, with one line naming the file and the reason. A checkpoint carries the
digest of the training options it depends on and a checksum of its contents
(``neuralsde.train.save_checkpoint``), and is retrained when it is missing, damaged,
foreign or does not fit the network.

A network is never replaced by one trained under other options unless the run asks for
it (``retrain``): a run whose training options differ from a checkpoint's in the folder
is refused before anything is trained (``OtherOptions``).

Cells measured under other library versions are recomputed; checkpoints trained under
other versions are reused, with a warning (the weights are a valid training run; the
measurements are then all made under the current versions).

Every cell is computed with torch's and NumPy's generators seeded from its key, so its
numbers do not depend on what ran before it: a run that is interrupted and started again
gives the same results as one that was not. One run at a time may use a folder: a second
one is refused while the first holds its lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from neuralsde.train import CheckpointDamaged, load_checkpoint

from .common import environment, save_png, write_json
from .config import LATER_TRAIN_OPTIONS, Config, digest
from .damaged import RejectLog, not_a_file, say, set_aside
from .networks import Network
from .registry import KINDS as PART_KINDS
from .verify import checksum, seeded, shape_problem, versions

__all__ = ["KINDS", "FolderBusy", "FolderUnusable", "OtherOptions", "Store", "checksum", "seeded", "versions"]


#: Every kind of result a store holds: the measurements', the networks' training records,
#: the starting weights' accuracy, and the GPU profiles of the sensitivity cells.
KINDS = frozenset({*PART_KINDS, "accuracy", "train", "start_accuracy", "profile"})


class FolderBusy(RuntimeError):
    """Another run holds the output folder's lock."""


class FolderUnusable(RuntimeError):
    """The output folder cannot be used: it is a file, or it cannot be written."""


class OtherOptions(RuntimeError):
    """The folder holds networks trained under other options, which the run would replace."""


def _changes(old: dict, new: dict) -> str:
    keys = sorted(set(old) | set(new), key=str)
    old, new = ({k: d.get(k, LATER_TRAIN_OPTIONS.get(k)) for k in keys} for d in (old, new))  # absent: the default
    diff = [f"{k}: {old[k]!r} → {new[k]!r}" for k in keys if old[k] != new[k]]
    return ", ".join(diff[:4]) + (" ..." if len(diff) > 4 else "")


class Store:
    """The output folder of a run.

    Args:
        root: the folder.
        cfg: the run's configuration (recorded in ``config.json``).
        restart: discard every stored measurement (cells, figures); networks are kept.
        retrain: discard the stored networks too.
        lock: hold the folder's lock (refuse a second concurrent run). Processes of one
            distributed run other than rank 0 pass ``False``.
        networks: the ``(Network, seed)`` of every network the run trains or reuses: checked
            before anything else is done (unless ``retrain``).
        measure: whether this process measures: it records its machine in
            ``config.json``. A report alone passes ``False`` and keeps the machine of the
            run that measured (its thread count, its device).

    Raises:
        FolderBusy: another run holds the folder.
        FolderUnusable: ``root`` is a file, or cannot be written (the message names it).
        OtherOptions: a checkpoint of ``networks`` was trained under other options.
    """

    def __init__(
        self,
        root: str | Path,
        cfg: Config,
        *,
        restart: bool = False,
        retrain: bool = False,
        lock: bool = True,
        networks: list[tuple[Network, int]] = (),
        measure: bool = True,
    ):
        self.root = Path(root)
        self.cfg = cfg
        self._lock = None
        self.log = RejectLog()
        self._prepare_folder()
        if lock:
            self._acquire()
        if not retrain:
            try:
                self._check_networks(networks)
            except OtherOptions:
                self.close()
                raise
        for sub, wanted in (("cells", restart or retrain), ("figures", restart or retrain), ("checkpoints", retrain)):
            if wanted:
                shutil.rmtree(self.root / sub, ignore_errors=True)
        if restart or retrain:
            (self.root / "manifest.json").unlink(missing_ok=True)
        self.previous = self._manifest()
        self.versions = versions()
        if measure:  # the machine that measures; a report alone keeps the one that measured
            write_json(
                self.root / "config.json",
                {"digest": cfg.digest(), "config": cfg.to_dict(), "environment": environment(cfg.device)},
            )
        self.computed: list[str] = []
        self.used: dict[str, dict[str, dict]] = {}  # kind -> name -> result, for this run's report
        self.digests: dict[str, str] = {}  # key -> digest of every cell this run used
        self._warned_versions = False
        self._warned_unverified = False

    # -- the folder's lock -------------------------------------------------------------
    def _prepare_folder(self) -> None:
        """Make the folder and check that files can be written in it."""
        if self.root.exists() and not self.root.is_dir():
            raise FolderUnusable(f"--out {self.root} is a file, not a folder; name a folder (new or existing)")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.root):
                pass
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                problem = "cannot be written (permission denied or a read-only file system)"
            else:
                problem = f"cannot be used ({err.strerror or type(err).__name__})"
            raise FolderUnusable(f"--out {self.root} {problem}; name a folder this user can write to") from None

    def _acquire(self) -> None:
        path = self.root / ".lock"
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise FolderBusy(
                f"{self.root} is in use by another run ({holder}); wait for it to finish or use another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        fh.flush()
        self._lock = fh

    def close(self) -> None:
        """Release the folder (also done when the process ends)."""
        self.log.close()
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _check_networks(self, networks) -> None:
        """Refuse to go on if a checkpoint of ``networks`` was trained under other options."""
        differ = []
        for network, seed in networks:
            name = network.name
            path = self.checkpoint(name, seed)
            if not path.is_file():
                continue
            try:  # only the metadata is wanted: the tensors stay on disk
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                meta = state["meta"]
                old = dict(meta["network"])
            except Exception:  # damaged or foreign: retrained later, with its line
                continue
            identity = self.cfg.network(network, seed)
            if old.get("network") != name or old.get("seed") != seed or meta.get("digest") == digest(identity):
                continue
            differ.append(f"{self.relative(path)}: {_changes(old, identity)}")
        if differ:
            more = f"; and {len(differ) - 1} more" if len(differ) > 1 else ""
            raise OtherOptions(
                f"{self.root} holds networks trained with other options ({differ[0]}{more}); "
                "a run never replaces them: use another --out, or --retrain to train them again"
            )

    # -- paths -------------------------------------------------------------------------
    def path(self, kind: str, name: str) -> Path:
        return self.root / "cells" / kind / f"{name}.json"

    def checkpoint(self, name: str, seed: int) -> Path:
        return self.root / "checkpoints" / f"s{seed}" / f"{name}.pt"

    def figure(self, name: str) -> Path:
        p = self.root / "figures" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def save_figure(self, fig, name: str) -> str:
        """Save a matplotlib figure as ``figures/NAME`` (atomically, then closed); its path in the run's folder."""
        path = self.figure(name)
        save_png(fig, path)
        return str(path.relative_to(self.root))

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    # -- cells -------------------------------------------------------------------------
    def _valid(self, kind: str, name: str, depends: dict) -> tuple[dict | None, str | None]:
        """The stored result if it may be reused, else (None, why not); (None, None) if absent."""
        path = self.path(kind, name)
        if not path.exists():
            return None, None
        if not path.is_file():
            return None, f"{not_a_file(path)}; set aside as {set_aside(path).name}"
        try:
            content = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
            return None, f"unreadable (truncated or damaged: {type(err).__name__})"
        if not isinstance(content, dict) or not isinstance(content.get("result"), dict) or "digest" not in content:
            return None, "not a result of this benchmark"
        if "checksum" not in content:
            return None, "no checksum (written by an older version)"
        if content["checksum"] != checksum(content):
            return None, "damaged (its checksum does not match its contents: edited or corrupted)"
        if content.get("key") != f"{kind}/{name}":
            return None, f"written for another result ({content.get('key')})"
        if content["digest"] != digest(depends):
            old = content.get("depends", {})
            what = _changes(old.get("options", {}), depends.get("options", {}))
            if not what and old.get("networks") != depends.get("networks"):
                what = "its networks were trained again with other options"
            return None, f"made with other options ({what or 'other images'})"
        if content.get("versions") != self.versions:
            return (
                None,
                f"measured under other library versions ({_changes(content.get('versions') or {}, self.versions)})",
            )
        problem = shape_problem(content["result"])
        if problem:
            return None, f"wrongly shaped ({problem})"
        return {**content["result"], "seconds": content.get("seconds")}, None

    def reusable(self, kind: str, name: str, depends: dict) -> bool:
        """Whether the stored cell verifies (``cell`` would reuse it)."""
        return self._valid(kind, name, depends)[0] is not None

    def cell(self, kind: str, name: str, compute: Callable[[], dict], *, depends: dict, rng: str | None = None) -> dict:
        """The cell's result: reused from disk if it verifies, else computed and saved.

        Args:
            kind: the kind of measurement (a folder of ``cells/``).
            name: the cell's name within its kind (``s<seed>/...``).
            compute: makes the result (a JSON-serialisable dict).
            depends: everything the result depends on (``options``, ``networks``, ``images``...).
            rng: the key the generators are seeded from (default ``kind/name``); cells
                that must draw the same random numbers share one.
        """
        key = f"{kind}/{name}"
        result, reason = self._valid(kind, name, depends)
        if result is None and reason is None and key in self.previous:
            reason = "missing"
        if result is None:
            if reason is not None:
                self.log(self.relative(self.path(kind, name)), f"{reason}; recomputing", group=f"cells/{kind}")
            start = time.perf_counter()
            with seeded(rng or key, self.cfg.device), self._autocast():
                result = compute()
            seconds = time.perf_counter() - start
            self.put(kind, name, result, depends=depends, seconds=seconds)
            result = {**result, "seconds": seconds}
        self.used.setdefault(kind, {})[name] = result
        self.digests[key] = digest(depends)
        return result

    def _autocast(self):
        """``--amp``: measurements under torch.autocast (bfloat16 on CPU, float16 on CUDA)."""
        if not self.cfg.amp:
            return contextlib.nullcontext()
        device = torch.device(self.cfg.device).type
        return torch.autocast(device, dtype=torch.bfloat16 if device == "cpu" else torch.float16)

    def put(self, kind: str, name: str, result: dict, *, depends: dict, seconds: float | None = None) -> None:
        """Save a result unconditionally (it counts as computed by this run)."""
        self.computed.append(f"{kind}/{name}")
        record = {
            "key": f"{kind}/{name}",
            "digest": digest(depends),
            "depends": depends,
            "versions": self.versions,
            "device": self.cfg.device,
            "seconds": seconds,
            "result": result,
        }
        write_json(self.path(kind, name), {**record, "checksum": checksum(record)})

    def results(self, kind: str) -> dict[str, dict]:
        """The results of a kind that this run used (or, for a report alone, the last run), by key.

        Sorted, so that every summary, down to the order of its sums and bars, is the
        same whether the cells were just computed or read back from the manifest.

        Raises:
            ValueError: ``kind`` is no kind of result (a misspelt kind would read as none measured).
        """
        if kind not in KINDS:
            raise ValueError(f"no kind of result {kind!r}; kinds: {', '.join(sorted(KINDS))}")
        return dict(sorted(self.used.get(kind, {}).items()))

    def write_manifest(self) -> None:
        """Record which cells the run used, for ``python -m benchmarks.report``."""
        write_json(self.root / "manifest.json", self.digests)

    def _manifest(self) -> dict[str, str]:
        try:
            content = json.loads((self.root / "manifest.json").read_text())
        except (OSError, json.JSONDecodeError):
            return {}
        return content if isinstance(content, dict) else {}

    def load_manifest(self) -> None:
        """Reuse the cells the last finished run used (for a report without a run)."""
        path = self.root / "manifest.json"
        if not path.exists():
            raise ValueError(f"{path} does not exist: no run has finished in {self.root}")
        for key, want in json.loads(path.read_text()).items():
            kind, name = key.split("/", 1)
            where = self.relative(self.path(kind, name))
            try:
                content = json.loads(self.path(kind, name).read_text())
            except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                self.log(where, "missing or unreadable; left out of the report", group=f"cells/{kind}")
                continue
            if not isinstance(content, dict) or content.get("digest") != want or content.get("key") != key:
                self.log(where, "changed since the run; left out of the report", group=f"cells/{kind}")
            elif "checksum" not in content:
                self.log(
                    where, "no checksum (written by an older version); left out of the report", group=f"cells/{kind}"
                )
            elif content["checksum"] != checksum(content) or not isinstance(content.get("result"), dict):
                self.log(
                    where,
                    "damaged (its checksum does not match its contents); left out of the report",
                    group=f"cells/{kind}",
                )
            else:
                self.used.setdefault(kind, {})[name] = {**content["result"], "seconds": content.get("seconds")}

    # -- checkpoints -------------------------------------------------------------------
    def verified_checkpoint(self, name: str, seed: int, identity: dict) -> dict | None:
        """The checkpoint of network ``name`` with ``seed`` if it is this benchmark's for ``identity``.

        A damaged or foreign checkpoint is removed, with one line saying why; None means
        train (again). A checkpoint written before checkpoints carried a checksum is
        reused, with a warning.

        Raises:
            OtherOptions: it is this network's, trained under other options (the run
                checks this before it trains anything: see ``networks``).
        """
        path = self.checkpoint(name, seed)
        if not path.exists():
            return None
        if not path.is_file():
            self.log(self.relative(path), f"{not_a_file(path)}; set aside as {set_aside(path).name}; "
                     "training again")  # fmt: skip
            return None
        try:
            state = load_checkpoint(path)
        except CheckpointDamaged:
            return self.reject(path, "damaged (its checksum does not match its contents)")
        except Exception as err:  # truncated zip, pickle error, not a torch file...
            return self.reject(path, f"unreadable (truncated or damaged: {type(err).__name__})")
        if not isinstance(state, dict) or not isinstance(state.get("meta"), dict) or "model" not in state:
            return self.reject(path, "not a checkpoint of this benchmark")
        meta = state["meta"]
        old = meta.get("network") if isinstance(meta.get("network"), dict) else {}
        if old.get("network") != name or old.get("seed") != seed:
            return self.reject(path, f"written for another network ({_changes(old, identity)})")
        if meta.get("digest") != digest(identity):
            raise OtherOptions(
                f"{self.relative(path)} was trained with other options ({_changes(old, identity)}); "
                "use another --out, or --retrain to train it again"
            )
        if "checksum" not in state and not self._warned_unverified:
            self._warned_unverified = True
            say(
                f"warning: {self.relative(path)} and maybe other networks carry no checksum (written by an older "
                "version); they are reused unverified"
            )
        if meta.get("versions") != self.versions and not self._warned_versions:
            self._warned_versions = True
            say(
                f"warning: {self.relative(path)} and maybe other networks were trained under other library versions "
                f"({_changes(meta.get('versions') or {}, self.versions)}); they are reused"
            )
        return state

    def reject(self, path: Path, reason: str) -> None:
        """Remove a checkpoint that cannot be used, with one line saying why."""
        self.log(self.relative(path), f"{reason}; training again")
        path.unlink(missing_ok=True)
        return None
