"""Results on disk: one JSON file per finished cell, written atomically; resumable."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from .common import environment, write_json
from .config import Config

__all__ = ["ConfigMismatch", "Store"]


class ConfigMismatch(ValueError):
    """The output folder holds results of another configuration."""


class Store:
    """The output folder of a run.

    ``DIR/config.json`` records the configuration; ``DIR/cells/<kind>/<name>.json`` holds
    one finished piece of work each. A run started again with the same configuration
    skips every cell already on disk; a different configuration is refused (or, with
    ``restart=True``, the old results are removed).
    """

    def __init__(self, root: str | Path, cfg: Config, *, restart: bool = False):
        self.root = Path(root)
        self.cfg = cfg
        record = self.root / "config.json"
        if restart and self.root.exists():
            for sub in ("cells", "checkpoints", "figures"):
                shutil.rmtree(self.root / sub, ignore_errors=True)
            record.unlink(missing_ok=True)
        if record.exists():
            old = json.loads(record.read_text())
            if old.get("digest") != cfg.digest():
                changed = sorted(k for k, v in cfg.to_dict().items() if old.get("config", {}).get(k) != v)
                raise ConfigMismatch(
                    f"{self.root} holds results of another configuration (differs in: {', '.join(changed)}); "
                    "use another --out, or --restart to discard them"
                )
        else:
            env = environment(cfg.device)
            write_json(record, {"digest": cfg.digest(), "config": cfg.to_dict(), "environment": env})
        self.computed: list[str] = []

    def path(self, kind: str, name: str) -> Path:
        return self.root / "cells" / kind / f"{name}.json"

    def checkpoint(self, name: str) -> Path:
        return self.root / "checkpoints" / f"{name}.pt"

    def figure(self, name: str) -> Path:
        p = self.root / "figures" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def has(self, kind: str, name: str) -> bool:
        return self.path(kind, name).exists()

    def get(self, kind: str, name: str) -> dict:
        return json.loads(self.path(kind, name).read_text())

    def cell(self, kind: str, name: str, compute: Callable[[], dict]) -> dict:
        """The cell's result: from disk if finished before, else computed and saved."""
        if self.has(kind, name):
            return self.get(kind, name)
        start = time.perf_counter()
        result = compute()
        result = {
            **result,
            "seconds": time.perf_counter() - start,
            "seed": self.cfg.seed,
            "device": self.cfg.device,
            "config_digest": self.cfg.digest(),
        }
        write_json(self.path(kind, name), result)
        self.computed.append(f"{kind}/{name}")
        return result

    def cells(self, kind: str) -> dict[str, dict]:
        """Every finished cell of a kind, by name."""
        folder = self.root / "cells" / kind
        if not folder.exists():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}
