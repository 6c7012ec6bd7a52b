"""How a benchmark run goes: the networks, then the parts it is given, then its record.

A part is a ``Part``: a name, the options of the cells it writes and what it does at
each stage of the run. The run trains (or reuses) every network once per training seed on
its data set and finds, per seed, the test images every network of that seed classifies
correctly; each part then measures them (``on_main``); if a part works on the shapes with
masks, the shapes networks are trained per seed and each such part measures them
(``on_shapes``); last, the report summarises the store (``benchmarks.report.write``).

This module imports no part: the entry points (``python -m benchmarks``, ``python -m
benchmarks.sensitivity``, ...) hand their parts to ``run``, which runs them in the
order of ``benchmarks.registry``. Each measurement seeds its own random draws (see ``benchmarks.store``), so the
parts' order does not change their numbers.

Under torchrun a run is one job of many ranks (``benchmarks.ranks``): each trains its
share of the networks and computes its share of the cells, and rank 0 writes the report
from every rank's cells. The same cells and networks come out whatever the number of ranks.

A run checks its options, its input files and its output folder before it trains
anything, and ends with one line, not a traceback, when one of them does not do. Ctrl-C
and SIGTERM stop it the same way, and so does a full disk: what is finished is kept, the
run is recorded in ``runs.json`` and the folder's lock is released, so the same command
resumes it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

from torch import nn

from . import ranks as _ranks
from .cli import parse_args, threads
from .common import progress_bar, write_json
from .config import Config
from .context import Cell, Context, Part
from .data import Data, load_data
from .networks import Network
from .ranks import RankFailed, Ranks, RankStopped
from .registry import NAMES
from .report import console_summary
from .report import write as write_report
from .store import FolderUnusable, OtherOptions, Store
from .train import (
    accuracy,
    check_inputs,
    correct_pool,
    ddp_training,
    fingerprint,
    open_store,
    starting_accuracy,
    trained_model,
)

__all__ = ["Cell", "Context", "Part", "run"]


class NothingToMeasure(RuntimeError):
    """No test image is classified correctly by every network of a seed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, which a run handles as it handles Ctrl-C."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Within the block, SIGTERM raises ``Terminated`` (once: a second one ends the process)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        signal.signal(signal.SIGTERM, previous)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _disk_full(err: OSError) -> bool:
    return err.errno in (errno.ENOSPC, errno.EDQUOT)


def _read_runs(store: Store) -> list:
    """The run log; a damaged one is set aside (``runs.json.damaged``), with one line saying so."""
    path = store.root / "runs.json"
    if not path.exists():
        return []
    try:
        runs = json.loads(path.read_text())
        problem = None if isinstance(runs, list) else f"not a list of runs but a {type(runs).__name__}"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        runs, problem = [], f"unreadable (truncated or damaged: {type(err).__name__})"
    if problem is None:
        return runs
    aside = path.with_name("runs.json.damaged")
    n = 1
    while aside.exists():
        aside, n = path.with_name(f"runs.json.damaged.{n}"), n + 1
    os.replace(path, aside)
    store.log(store.relative(path), f"{problem}; kept as {aside.name}, a new run log begins")
    return []


def _log_run(store: Store, argv, seconds: float, status: str) -> None:
    path = store.root / "runs.json"
    runs = _read_runs(store)
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
    unknown = [p.name for p in parts if p.name not in NAMES]
    if unknown:
        raise ValueError(f"unknown parts {unknown}; valid: {', '.join(NAMES)}")
    return sorted(parts, key=lambda p: NAMES.index(p.name))


def _train(
    cfg: Config, store: Store, ranks: Ranks, sets: dict[str, tuple[Data, list[Network]]], quiet: bool
) -> dict[tuple[int, Network], nn.Module]:
    """Train (or reuse) this process's share of every network of the run; then wait for the other ranks'.

    Every (seed, network) is trained once: in a job of many ranks, the ``i``-th (seeds
    outer) by rank ``i`` modulo their number, whole, as one process would; the ImageNet
    fine-tuning by every rank together (DistributedDataParallel), one network at a time.
    The test accuracy of each network of the tables (not of the parts' own) is measured
    where it is trained. Returns the networks this process trained or loaded, by
    ``(seed, network)``.
    """
    tables = {*cfg.table_networks(), *cfg.shape_networks()}
    order = [(seed, net, which) for seed in cfg.seeds for which, (_, nets) in sets.items() for net in nets]
    ddp = ranks.many and ddp_training(cfg)
    mine = [(seed, net, which) for i, (seed, net, which) in enumerate(order) if ddp or ranks.trains(i)]
    epochs = not quiet and ranks.lead and sys.stderr.isatty()  # a bar per epoch only where it redraws in place
    models = {}
    desc = "networks" if not ranks.many or ddp else f"networks (rank {ranks.rank}'s {len(mine)} of {len(order)})"
    with progress_bar(len(mine), desc, quiet=quiet or not ranks.lead) as bar:
        for seed, net, which in mine:
            data = sets[which][0]
            model = trained_model(cfg, store, net, seed, data, progress=epochs, distributed=ddp)
            if net in tables and (ranks.lead or not ddp):
                accuracy(cfg, store, net, seed, model, data)
            models[(seed, net)] = model
            bar.update(1)
    ranks.post("networks")
    if ranks.lead:  # the others wait for rank 0 alone, which hands out the images once every network is there
        ranks.wait("networks")
    return models


def _networks(cfg: Config, store: Store, data: Data, networks: list[Network], trained: dict):
    """Every one of ``networks`` for every seed (trained above, or from its checkpoint); returns (nets, prints).

    Both are keyed by seed, then by the network's name (its key in the store).
    """
    nets: dict[int, dict[str, nn.Module]] = {}
    prints: dict[int, dict[str, str]] = {}
    for seed in cfg.seeds:
        nets[seed], prints[seed] = {}, {}
        for net in networks:
            model = trained.get((seed, net))
            if model is None:
                model = trained_model(cfg, store, net, seed, data, progress=False)
                accuracy(cfg, store, net, seed, model, data)
            nets[seed][net.name] = model
            prints[seed][net.name] = fingerprint(model)
    return nets, prints


def _pools(cfg: Config, store: Store, ranks: Ranks, sets: dict[str, tuple[Data, dict]]) -> dict[str, dict]:
    """Rank 0: per data set and seed, the test images every network of the seed classifies correctly.

    It hands them to the other ranks (``_shared_pools``), which measure on the same images.
    """
    pools = {
        which: {seed: correct_pool(nets[seed], data.test, cfg.device) for seed in cfg.seeds}
        for which, (data, nets) in sets.items()
    }
    empty = [seed for seed, pool in pools["main"].items() if not pool]
    if empty:
        raise NothingToMeasure(
            f"no test image is classified correctly by every network of seed {empty[0]}, so there is nothing to "
            f"measure; the networks are kept in {store.root}: train them longer (--epochs) or give them more "
            "test images (--eval-images)"
        )
    ranks.post("pools", pools=pools)
    return pools


def _shared_pools(ranks: Ranks) -> dict[str, dict]:
    """A rank but 0: rank 0's images, once it has them (and so once every rank's networks are trained)."""
    shared = ranks.wait("pools", ranks=[0])[0]["pools"]  # JSON: the seeds come back as strings
    return {which: {int(seed): pool for seed, pool in by_seed.items()} for which, by_seed in shared.items()}


def _measure(ctx: Context, parts: list[Part], quiet: bool = False, report: bool = True) -> dict | None:
    """Every part's cells; then, on rank 0, every rank's cells collected and (``report``) the report written."""
    store, ranks = ctx.store, ctx.ranks
    ctx.bar = progress_bar(sum(p.cells(ctx) for p in parts), "measurements", quiet=quiet or not ranks.lead)
    ranks.track("measurements", ctx.bar)
    try:  # the bar ends its line before anything else is said, a failure included
        for part in parts:
            if part.on_main is not None:
                part.on_main(ctx)
        if ctx.shape_data is not None:
            for part in parts:
                if part.on_shapes is not None:
                    part.on_shapes(ctx)
        ranks.post("measured", last=not ranks.lead, computed=list(store.computed))
        if not ranks.lead:
            return None
        others = ranks.wait("measured")
        ranks.show()
    finally:
        ranks.track("measurements", None)
        ctx.bar.close()
    _collect(ctx, others)
    if not report:
        return None
    results = write_report(ctx.store)
    print(console_summary(results))
    return results


def _collect(ctx: Context, others: dict[int, dict]) -> None:
    """Rank 0: every cell of the other ranks, read back and verified (one missing is computed here)."""
    store = ctx.store
    for kind, name, compute, depends, rng in ctx.deferred:
        path = store.path(kind, name)
        if not path.exists():
            where, group = store.relative(path), f"cells/{kind}"
            store.log(where, "not written by the rank it fell to; computing it here", group=group)
        store.cell(kind, name, compute, depends=depends, rng=rng)
    ctx.deferred.clear()
    for state in others.values():
        store.computed.extend(state.get("computed", []))


def run(argv: list[str] | None, parts: Sequence[Part], description: str = "", *, report: bool = True) -> dict | None:
    """Run the given parts of the benchmark, then write the report; returns the report's results.

    Args:
        argv: the command line (default ``sys.argv[1:]``), see ``benchmarks.cli.parse_args``.
        parts: the parts to run (in ``benchmarks.registry`` order, whatever their order here); of
            them, only those named by ``--parts`` run.
        description: the command's help text.
        report: write ``results.json``, ``tables.md`` and the figures at the end (returning
            None without).
    """
    argv = sys.argv[1:] if argv is None else argv
    parts = _in_order(parts)
    cfg, args = parse_args(argv, description)
    parts = [p for p in parts if p.name in cfg.parts]  # --parts chooses among them
    check_inputs(cfg)
    sets = {"main": cfg.table_networks() + [net for p in parts if p.networks is not None for net in p.networks(cfg)]}
    if cfg.shapes and any(p.on_shapes is not None for p in parts):
        sets["shapes"] = cfg.shape_networks()
    ranks, cfg.device = _ranks.join(cfg.device, args.rank_timeout)
    try:
        with threads(cfg.threads):  # before the store records the machine
            networks = [(net, seed) for seed in cfg.seeds for nets in sets.values() for net in nets]
            store = _open(args, cfg, ranks, networks)
            with _sigterm_as_interrupt():
                return _run(cfg, store, ranks, argv, parts, sets, args.quiet, report)
    finally:
        _ranks.leave()


def _open(args, cfg: Config, ranks: Ranks, networks: list[tuple[Network, int]]) -> Store:
    """The run's store: rank 0 opens it (and holds its lock for the job); the others follow, or stop with it."""
    if not ranks.many:
        return open_store(args, cfg, networks)
    store, code, job = None, None, None
    if ranks.lead:
        try:
            store = open_store(args, cfg, networks)  # a refusal prints its one line on rank 0
        except SystemExit as exit_:
            code = exit_.code
        else:
            job = _ranks.new_job()
            ranks.clean(store.root)
            ranks.start(store.root, job)
    code, job = _ranks.share(ranks, (code, job))
    if code is not None:
        raise SystemExit(code)
    if store is None:
        try:
            store = Store(args.out, cfg, lock=False, measure=False)
        except (FolderUnusable, OSError) as err:  # rank 0 could use it: this machine cannot
            print(f"error: rank {ranks.rank}: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        if not (store.root / ".ranks" / job).is_dir():
            store.close()
            print(
                f"error: rank {ranks.rank}: --out {args.out} is not the folder rank 0 writes to; the ranks of a job "
                "need one folder on a file system every machine shares",
                file=sys.stderr,
            )
            raise SystemExit(2)
        ranks.start(store.root, job)
    return store


def _run(
    cfg: Config, store: Store, ranks: Ranks, argv, parts: list[Part], sets: dict, quiet: bool, report: bool
) -> dict | None:
    start = time.perf_counter()
    status = "interrupted"
    failure = None
    quiet_failure = False  # a rank but 0 whose failure another rank has reported
    try:
        data = load_data(cfg)
        shape_data = load_data(cfg, "shapes") if "shapes" in sets else None
        if ranks.lead:
            starting_accuracy(cfg, store, data)
        with_data = {"main": (data, sets["main"]), **({"shapes": (shape_data, sets["shapes"])} if shape_data else {})}
        trained = _train(cfg, store, ranks, with_data, quiet)
        shared = None if ranks.lead else _shared_pools(ranks)
        nets, prints = _networks(cfg, store, data, cfg.table_networks(), trained)
        shape_nets, shape_prints = (
            _networks(cfg, store, shape_data, sets["shapes"], trained) if shape_data else ({}, {})
        )
        nets_of = {"main": (data, nets), **({"shapes": (shape_data, shape_nets)} if shape_data else {})}
        pools = _pools(cfg, store, ranks, nets_of) if ranks.lead else shared
        for seed, pool in pools["main"].items():
            if len(pool) < cfg.n_images and ranks.lead:
                print(
                    f"warning: only {len(pool)} test images are classified correctly by every network of seed "
                    f"{seed} (asked for {cfg.n_images})",
                    file=sys.stderr,
                )
        kinds = {kind: value for part in parts for kind, value in part.kinds().items()}
        ctx = Context(cfg, store, data, nets, prints, pools["main"], ranks=ranks, kinds=kinds)
        if shape_data is not None:
            ctx.shape_data, ctx.shape_nets, ctx.shape_prints = shape_data, shape_nets, shape_prints
            ctx.shape_pools = pools["shapes"]
        results = _measure(ctx, parts, quiet, report)
        if ranks.lead:
            store.write_manifest()
        status = "finished"
    except KeyboardInterrupt as err:
        status, code = ("terminated", 143) if isinstance(err, Terminated) else ("interrupted", 130)
        what = "terminated (SIGTERM)" if code == 143 else "interrupted"
        failure = f"\n{what}: finished results are kept in {store.root}; run the same command again to resume", code
        quiet_failure = True
    except OtherOptions as err:  # checked before training; only a concurrent change of the folder gets here
        status, failure = "refused", (f"error: {err}", 2)
    except NothingToMeasure as err:
        status, failure = "nothing to measure", (f"error: {err}", 1)
    except RankFailed as err:
        status = "a rank was lost"
        quiet_failure = isinstance(err, RankStopped)
        failure = (
            f"error: {err}; finished results are kept in {store.root}: run the same command again to resume",
            1,
        )
    except OSError as err:
        if not _disk_full(err):
            ranks.fail(f"{type(err).__name__}: {err}")
            raise
        status = "disk full"
        where = f" writing {err.filename}" if err.filename else ""
        failure = (
            f"error: no space left on the device{where}; finished results are kept in {store.root}: "
            "free some space and run the same command again to resume",
            1,
        )
    except Exception as err:  # a failure of this process: the other ranks stop waiting for it
        ranks.fail(f"{type(err).__name__}: {err}")
        raise
    finally:
        if failure is not None:
            ranks.fail(failure[0].strip().removeprefix("error: "))
        ranks.close()
        if ranks.lead and status == "finished":
            ranks.clean(store.root)
        store.log.close()
        if ranks.lead:
            try:
                _log_run(store, argv, time.perf_counter() - start, status)
            except OSError as err:
                if not _disk_full(err):
                    raise
                if failure is None:  # finished (or failing otherwise): only its record is lost
                    failure = (f"error: no space left on the device; the run is not recorded in {err.filename}", 1)
                else:
                    failure = (failure[0] + " (the run could not be recorded in runs.json)", failure[1])
        store.close()
    if failure is not None:
        if ranks.lead or not quiet_failure:  # the other ranks' own lines, where rank 0 has said it already
            print(failure[0], file=sys.stderr)
        raise SystemExit(failure[1])
    took = time.perf_counter() - start
    if not ranks.lead:
        print(f"rank {ranks.rank}: {len(store.computed)} results computed; rank 0 writes the report", file=sys.stderr)
        return None
    used = sum(len(cells) for cells in store.used.values())
    reused = max(used - len(store.computed), 0)
    print(f"{len(store.computed)} results computed, {reused} reused; {took:.0f} s")
    if results is not None:
        print(f"wrote {store.root}/results.json, {store.root}/tables.md and {store.root}/figures/")
    return results
