"""Where a forward pass's time goes: two models' operators side by side (torch.profiler, CPU).

What ``python -m benchmarks.speed --profile`` adds for each ratio of the forward line:
the self CPU time of every operator per call of each model, the operators whose time
differs most between the two, the sum over all operators, the wall time per call (timed
without the profiler) and the time outside operators (wall less sum: Python, dispatch,
freeing tensors). A ratio above its target is thus split into the operators that
make it and the time no operator accounts for.

The profiler adds a few microseconds to each operator it records, so the operator sums
are slightly high and the time outside operators slightly low; both models carry the
same overhead per operator.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from .common import round_order

__all__ = ["compare", "lines", "op_times"]


@contextlib.contextmanager
def _quiet_stderr():
    """Standard error closed at the descriptor: the profiler's library prints two lines per session there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def op_times(run: Callable[[], object], calls: int) -> dict[str, float]:
    """Operator -> self CPU milliseconds per call of ``run``, over ``calls`` profiled calls."""
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            run()
    return {e.key: e.self_cpu_time_total / calls / 1e3 for e in prof.key_averages() if e.self_cpu_time_total > 0}


def _wall_ms(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return (time.perf_counter() - start) * 1e3


def compare(
    runs: dict[str, Callable[[], object]], pairs: list[tuple[str, str]], *, calls: int = 3, top: int = 8
) -> dict:
    """The operators of each pair of ``runs`` side by side, and the time outside them.

    Each callable is called once untimed; then, in ``calls`` rounds whose order is shuffled
    (as in ``paired_ratios``, so that drifts of the machine hit every model alike), each
    is timed once without the profiler and profiled once. Every figure is a mean over the
    rounds, so that the time outside operators is the mean wall time less the mean sum.

    Returns:
        ``{"calls": n, "wall_ms": {name: ms}, "op_ms": {name: ms}, "pairs": {"a/b": {"ops":
        [[op, a_ms, b_ms], ...], "op_ms": [a, b], "wall_ms": [a, b], "outside_ms": [a, b],
        "only_ms": [a, b]}}}``, per call; ``ops`` are the ``top`` operators whose times differ
        most, largest difference first; ``only_ms`` the time in the operators one calls and
        the other does not.
    """
    if calls < 1:
        raise ValueError(f"calls must be at least 1, got {calls}")
    torch.manual_seed(0)  # the SDE twin's draws: the same in every run of the profile
    names = list(runs)
    for name in names:
        runs[name]()
    ops: dict[str, dict[str, float]] = {name: {} for name in names}
    walls: dict[str, list[float]] = {name: [] for name in names}
    for r in range(calls):
        for name in round_order(names, r):
            walls[name].append(_wall_ms(runs[name]))
            for op, ms in op_times(runs[name], 1).items():
                ops[name][op] = ops[name].get(op, 0.0) + ms / calls
    wall = {name: statistics.fmean(t) for name, t in walls.items()}
    out = {
        "calls": calls,
        "wall_ms": wall,
        "op_ms": {name: sum(t.values()) for name, t in ops.items()},
        "pairs": {},
    }
    for a, b in pairs:
        keys = sorted(set(ops[a]) | set(ops[b]), key=lambda k: (-abs(ops[a].get(k, 0.0) - ops[b].get(k, 0.0)), k))
        out["pairs"][f"{a}/{b}"] = {
            "ops": [[k, ops[a].get(k, 0.0), ops[b].get(k, 0.0)] for k in keys[:top]],
            "op_ms": [out["op_ms"][a], out["op_ms"][b]],
            "wall_ms": [wall[a], wall[b]],
            "outside_ms": [wall[a] - out["op_ms"][a], wall[b] - out["op_ms"][b]],
            # What each calls that the other does not (a finiteness check, a noise draw).
            "only_ms": [
                sum(t for k, t in ops[a].items() if k not in ops[b]),
                sum(t for k, t in ops[b].items() if k not in ops[a]),
            ],
        }
    return out


def lines(arch: str, profile_: dict) -> list[str]:
    """The printed tables: per pair, the operators that differ most, their sum, wall and outside time."""
    out = []
    for pair, p in profile_["pairs"].items():
        a, b = pair.split("/")
        out.append(
            f"{arch:10} where the time goes in {pair}, forward pass (ms per call, {profile_['calls']} profiled calls)"
        )
        out.append(f"{'':10} {'':32} {a[:10]:>10} {b[:11]:>11} {'difference':>10}")
        rows = [(k, x, y) for k, x, y in p["ops"]]
        rows += [
            ("operators the other does not call", *p["only_ms"]),
            ("all operators", *p["op_ms"]),
            ("wall (no profiler)", *p["wall_ms"]),
            ("outside operators", *p["outside_ms"]),
        ]
        for k, x, y in rows:
            out.append(f"{'':10} {k[:32]:32} {x:10.2f} {y:11.2f} {x - y:+10.2f}")
    return out
