"""How a benchmark run goes: the networks, then the parts it is given, then its record.

A part is a ``Part``: a name and what it does at each stage of the run. The run
trains (or reuses) the networks on its data set and finds the test images every one of
them classifies correctly; each part then measures them (``on_main``); if a part works
on the shapes with masks, the shapes networks are trained and each such part measures
them (``on_shapes``); last, a part may summarise the store (``finish``, the report).

This module knows no part: the part modules define theirs and the entry points
(``python -m benchmarks``, ``python -m benchmarks.sensitivity``, ...) hand them to
``run``.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from torch import nn
from tqdm import tqdm

from .common import write_json
from .config import Config, parse_args
from .store import ConfigMismatch, Store
from .train import Data, correct_pool, load_data, trained_model

__all__ = ["ALL_PARTS", "Context", "Part", "run"]

#: Every part of the main job, in the order they run. The order is fixed whatever order
#: the parts are handed over in, since some measurements draw from torch's global
#: generator, whose state the parts before them leave.
ALL_PARTS = ("sensitivity", "robustness", "localisation", "theorem1", "completeness", "figures", "report")


@dataclass
class Context:
    """What the parts of a run measure: its configuration, store, data and networks."""

    cfg: Config
    store: Store
    data: Data
    models: dict[str, nn.Module]
    pool: list[int]  # test images every network classifies correctly
    bar: tqdm | None = None
    shape_data: Data | None = None  # the shapes with masks, once a part asks for them
    shape_models: dict[str, nn.Module] | None = None

    @property
    def pair(self) -> dict[str, nn.Module]:
        """The ODE network and the SDE network of the main tables."""
        return {"ode": self.models["ode"], self.cfg.table_sde: self.models[self.cfg.table_sde]}


def _no_cells(ctx: Context) -> int:
    return 0


@dataclass(frozen=True)
class Part:
    """One part of a benchmark run.

    Attributes:
        name: one of ``ALL_PARTS``.
        cells: the number of measurements it adds to the progress bar.
        on_main: measures ``ctx.models`` on ``ctx.data``.
        on_shapes: measures ``ctx.shape_models`` on ``ctx.shape_data``.
        finish: runs after every measurement; what it returns, the run returns.
    """

    name: str
    cells: Callable[[Context], int] = _no_cells
    on_main: Callable[[Context], None] | None = None
    on_shapes: Callable[[Context], None] | None = None
    finish: Callable[[Context], dict] | None = None


def _log_run(store: Store, argv, seconds: float, status: str) -> None:
    path = store.root / "runs.json"
    runs = json.loads(path.read_text()) if path.exists() else []
    runs.append(
        {
            "argv": list(argv),
            "seconds": round(seconds, 2),
            "status": status,
            "computed": list(store.computed),
            "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
    )
    write_json(path, runs)


def _in_order(parts: Sequence[Part]) -> list[Part]:
    unknown = [p.name for p in parts if p.name not in ALL_PARTS]
    if unknown:
        raise ValueError(f"unknown parts {unknown}; valid: {', '.join(ALL_PARTS)}")
    return sorted(parts, key=lambda p: ALL_PARTS.index(p.name))


def _measure(ctx: Context, parts: list[Part]) -> dict | None:
    cfg, store = ctx.cfg, ctx.store
    ctx.bar = tqdm(total=sum(p.cells(ctx) for p in parts), desc="measurements", file=sys.stderr)
    for part in parts:
        if part.on_main is not None:
            part.on_main(ctx)
    on_shapes = [p for p in parts if p.on_shapes is not None]
    if cfg.shapes and on_shapes:
        ctx.shape_data = load_data(cfg, "shapes")
        ctx.shape_models = {
            n: trained_model(cfg, store, n, ctx.shape_data, epochs=cfg.shapes_epochs)
            for n in ("shapes-ode", f"shapes-sde-{cfg.table_sigma:g}")
        }
        for part in on_shapes:
            part.on_shapes(ctx)
    ctx.bar.close()
    results = None
    for part in parts:
        if part.finish is not None:
            results = part.finish(ctx)
    return results


def run(argv: list[str] | None, parts: Sequence[Part], description: str = "") -> dict | None:
    """Run the given parts of the benchmark; returns what the last ``finish`` returns.

    Args:
        argv: the command line (default ``sys.argv[1:]``), see ``benchmarks.config.parse_args``.
        parts: the parts to run (in ``ALL_PARTS`` order, whatever their order here).
        description: the command's help text.
    """
    argv = sys.argv[1:] if argv is None else argv
    parts = _in_order(parts)
    cfg, args = parse_args(argv, description)
    try:
        store = Store(args.out, cfg, restart=args.restart)
    except ConfigMismatch as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    start = time.perf_counter()
    status = "interrupted"
    try:
        data = load_data(cfg)
        models = {}
        for name in tqdm(cfg.model_names(), desc="networks", file=sys.stderr):
            models[name] = trained_model(cfg, store, name, data)
        pool = correct_pool(models, data.test, cfg.device)
        if len(pool) < cfg.n_images:
            print(
                f"warning: only {len(pool)} test images are classified correctly by every network "
                f"(asked for {cfg.n_images})",
                file=sys.stderr,
            )
        results = _measure(Context(cfg, store, data, models, pool), parts)
        status = "finished"
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished results are kept in {store.root}; run the same command again to resume",
            file=sys.stderr,
        )
        raise SystemExit(130) from None
    finally:
        _log_run(store, argv, time.perf_counter() - start, status)
    took = time.perf_counter() - start
    print(f"{len(store.computed)} results computed, the rest reused; {took:.0f} s")
    if results is not None:
        print(f"wrote {store.root}/results.json, {store.root}/tables.md and {store.root}/figures/")
    return results
