"""The main job: ``python -m benchmarks [--out DIR] [options]``.

On the embedded digits (default) it trains an ODE network and SDE networks with normalized
noise 0.1, 0.25, 0.5 and 0.75 identically, then measures

* attribution sensitivity (the paper's Tables 1-3 protocol) with CIs and paired tests,
* rank robustness (Kendall's tau, top-k intersection) under random noise and attack,
* localisation on procedurally generated shapes with object masks,
* Theorem 1's bound against the measured amplification, and the paper's ODE-vs-SDE claim,
* completeness residuals per attribution method and solver,
* the noise sweep, and attribution figures,

and writes ``DIR/results.json``, ``DIR/tables.md`` and ``DIR/figures/*.png`` (default
``results/``). Every finished piece is saved at once: an interrupted run, started again
with the same options, resumes without recomputing it.

ImageNet protocol (GPU):

    python -m benchmarks --arch resnet50 --data /path/to/imagenet/val \\
        --weights resnet50.pth --train-data /path/to/imagenet/train --device cuda

fine-tunes the ODE twin and its SDE twin from the weights identically (Adam 1e-4), or
takes ``--sde-weights FILE`` instead of ``--train-data``, and runs the paper's protocol
(100 images x 5 repetitions) beside the paper's published values.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from .common import GpuMonitor, write_json
from .config import parse_args
from .figures import run_figures
from .report import write
from .sensitivity import correct_pool, run_localisation, run_robustness, run_sensitivity
from .store import ConfigMismatch, Store
from .theorem1 import SDE_SOLVERS, SOLVERS, run_completeness, run_theorem1
from .train import load_data, trained_model

ALL_PARTS = ("train", "sensitivity", "robustness", "localisation", "theorem1", "completeness", "figures", "report")


def _log_run(store: Store, argv, seconds: float, status: str) -> None:
    path = store.root / "runs.json"
    import json

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


def run(argv: list[str] | None = None, parts=ALL_PARTS, description: str = "") -> dict | None:
    """Run the named parts of the benchmark; returns the results (None if interrupted)."""
    argv = sys.argv[1:] if argv is None else argv
    cfg, args = parse_args(argv, description or __doc__.split("\n\n")[0])
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
        pair = {"ode": models["ode"], cfg.table_sde: models[cfg.table_sde]}
        n_cells = (
            ("sensitivity" in parts) * len(models) * len(cfg.methods) * cfg.repetitions
            + ("robustness" in parts) * len(models) * len(cfg.robust_methods)
            + ("theorem1" in parts) * len(models)
            + ("completeness" in parts) * (len(SOLVERS) + len(SDE_SOLVERS))
            + ("figures" in parts) * len(cfg.methods) * (1 + cfg.shapes)
            + ("localisation" in parts and cfg.shapes) * 2 * len(cfg.methods)
        )
        bar = tqdm(total=n_cells, desc="measurements", file=sys.stderr)
        if "sensitivity" in parts:
            before = len(store.computed)
            with GpuMonitor(cfg.device) as monitor:
                run_sensitivity(cfg, store, models, data, pool, bar)
            if len(store.computed) > before:
                store.cell("profile", f"sensitivity-{len(store.computed)}", monitor.record)
        if "robustness" in parts:
            run_robustness(cfg, store, models, data, pool, attack_models=list(pair), bar=bar)
        if "theorem1" in parts:
            run_theorem1(cfg, store, models, data, pool, bar)
        if "completeness" in parts:
            run_completeness(cfg, store, pair, data, pool, bar)
        if "figures" in parts:
            run_figures(
                cfg,
                store,
                data.name,
                {"ODE": pair["ode"], f"SDE σ={cfg.table_sigma:g}": pair[cfg.table_sde]},
                data,
                pool,
                bar,
            )
        if cfg.shapes and ("localisation" in parts or "figures" in parts):
            shape_data = load_data(cfg, "shapes")
            shape_models = {
                n: trained_model(cfg, store, n, shape_data, epochs=cfg.shapes_epochs)
                for n in ("shapes-ode", f"shapes-sde-{cfg.table_sigma:g}")
            }
            if "localisation" in parts:
                run_localisation(cfg, store, shape_models, shape_data, bar)
            if "figures" in parts:
                shape_pool = correct_pool(shape_models, shape_data.test, cfg.device)
                named = dict(zip(("ODE", f"SDE σ={cfg.table_sigma:g}"), shape_models.values()))
                run_figures(cfg, store, "shapes", named, shape_data, shape_pool, bar)
        bar.close()
        results = write(store) if "report" in parts else None
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


def main(argv: list[str] | None = None) -> None:
    run(argv)


if __name__ == "__main__":
    main()
