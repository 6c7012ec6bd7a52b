"""What a run cost: the seconds its cells took, by kind, whatever the sessions."""

from __future__ import annotations

import json

from ..store import Store

__all__ = ["compute_seconds", "untimed_networks"]


def compute_seconds(store: Store) -> dict[str, float]:
    """Seconds spent computing the cells this run used, summed by kind (training: its own clock).

    Unlike the sessions' times in ``runs.json``, this counts the work of a session cut
    off before it could record its time (kill -9, a machine restarted). A network read
    from a checkpoint whose training cell is gone (``--restart``) counts no training
    time: ``untimed_networks`` says how many.
    """
    total: dict[str, float] = {}
    for kind, cells in store.used.items():
        for name, result in cells.items():
            if kind == "train":  # a network read from its checkpoint has no training time of its own
                total["train"] = total.get("train", 0.0) + (result.get("train_seconds") or 0.0)
                continue
            try:
                seconds = json.loads(store.path(kind, name).read_text()).get("seconds")
            except (OSError, ValueError):
                seconds = None
            total[kind] = total.get(kind, 0.0) + (seconds or 0.0)
    return dict(sorted(total.items()))


def untimed_networks(store: Store) -> int:
    """The networks this run used whose training time is not recorded (see ``compute_seconds``)."""
    cells = store.used.get("train", {}).values()
    return sum(r.get("source") == "trained" and r.get("train_seconds") is None for r in cells)
