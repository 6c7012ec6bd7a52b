"""A run's results, summarised from its cells: the contents of ``results.json``.

Means with confidence intervals, paired tests of the SDE networks against the ODE
network, Theorem 1's bounds against the measured amplification, completeness residuals
and the noise sweep, all computed from the cells on disk; nothing is typed in by hand.
"""

from __future__ import annotations

import json
import math

from neuralsde.metrics import mean_ci, paired_test

from .common import environment
from .config import Config, sigma_of
from .paper import PAPER_SENSITIVITY
from .store import Store

__all__ = ["ACCURACY_GAP", "build"]

#: Networks whose test accuracies differ by more than this are flagged as not comparable.
ACCURACY_GAP = 0.02


def _models(store: Store) -> dict:
    out = {}
    for name, cell in store.cells("train").items():
        out[name] = {
            "sigma": sigma_of(name),
            "test_accuracy": cell["test_accuracy"],
            "source": cell.get("source"),
            "train_seconds": cell.get("train_seconds"),
            "epochs": len(cell.get("history", [])),
        }
    return out


def _comparable(models: dict, a: str, b: str) -> dict:
    acc_a, acc_b = models.get(a, {}).get("test_accuracy"), models.get(b, {}).get("test_accuracy")
    if acc_a is None or acc_b is None:
        return {"comparable": None, "gap": None}
    gap = acc_b - acc_a
    return {"comparable": abs(gap) <= ACCURACY_GAP, "gap": gap}


def _sensitivity(cfg: Config, store: Store, models: dict) -> dict:
    cells = store.cells("sensitivity")
    values: dict[str, dict[str, dict[int, list[float]]]] = {}
    seconds: dict[str, float] = {}
    images: dict[str, int] = {}
    for cell in cells.values():
        values.setdefault(cell["model"], {}).setdefault(cell["method"], {})[cell["rep"]] = cell["values"]
        seconds[cell["method"]] = seconds.get(cell["method"], 0.0) + cell["seconds"]
        images[cell["method"]] = images.get(cell["method"], 0) + len(cell["values"])
    per_model = {
        m: {
            meth: {
                **mean_ci([v for r in sorted(reps) for v in reps[r]]),
                "rep_means": [sum(reps[r]) / len(reps[r]) for r in sorted(reps)],
            }
            for meth, reps in by_method.items()
        }
        for m, by_method in values.items()
    }
    comparisons = {}
    for sde in [n for n in values if n.startswith("sde")]:
        comp = {"accuracy": _comparable(models, "ode", sde), "methods": {}}
        for method in cfg.methods:
            ode_reps, sde_reps = values.get("ode", {}).get(method), values[sde].get(method)
            if not ode_reps or not sde_reps:
                continue
            reps = sorted(set(ode_reps) & set(sde_reps))
            a = [v for r in reps for v in sde_reps[r]]
            b = [v for r in reps for v in ode_reps[r]]
            test = paired_test(a, b)  # SDE - ODE, paired by repetition and image
            comp["methods"][method] = {
                "ode": per_model["ode"][method],
                "sde": per_model[sde][method],
                "paired": test,
                "sde_lower": test["ci_high"] < 0,
                "sde_higher": test["ci_low"] > 0,
            }
        comparisons[sde] = comp
    paper = PAPER_SENSITIVITY.get(cfg.arch) if cfg.imagenet else None
    return {
        "per_model": per_model,
        "comparisons": comparisons,
        "paper": paper,
        # Wall time of one image's max-sensitivity (all its perturbations), per method.
        "seconds_per_image": {m: seconds[m] / max(images[m], 1) for m in seconds},
        "images_per_cell": cfg.n_images,
        "repetitions": cfg.repetitions,
    }


def _robustness(cfg: Config, store: Store) -> dict:
    out: dict = {}
    raw: dict = {}
    for cell in store.cells("robustness").values():
        entry = {}
        for setting in ("random", "attack"):
            if setting in cell:
                entry[setting] = {m: mean_ci(cell[setting][m]) for m in ("kendall", "topk")}
                raw.setdefault(cell["method"], {}).setdefault(setting, {})[cell["model"]] = cell[setting]
        out.setdefault(cell["model"], {})[cell["method"]] = {**entry, "k": cell["k"], "epsilon": cell["epsilon"]}
    comparisons = {}
    for method, settings in raw.items():
        for setting, by_model in settings.items():
            if "ode" in by_model and cfg.table_sde in by_model:
                comparisons.setdefault(method, {})[setting] = {
                    m: paired_test(by_model[cfg.table_sde][m], by_model["ode"][m]) for m in ("kendall", "topk")
                }
    return {"per_model": out, "comparisons": comparisons}


def _localisation(cfg: Config, store: Store, models: dict) -> dict:
    cells = store.cells("localisation")
    if not cells:
        return {}
    per_model: dict = {}
    raw: dict = {}
    share = None
    for cell in cells.values():
        per_model.setdefault(cell["model"], {})[cell["method"]] = mean_ci(cell["values"])
        raw.setdefault(cell["method"], {})[cell["model"]] = cell["values"]
        share = mean_ci(cell["object_share"])["mean"]
    sde = f"shapes-sde-{cfg.table_sigma:g}"
    comparisons = {m: paired_test(v[sde], v["shapes-ode"]) for m, v in raw.items() if sde in v and "shapes-ode" in v}
    return {
        "per_model": per_model,
        "comparisons": comparisons,
        "object_share": share,
        "accuracy": _comparable(models, "shapes-ode", sde),
    }


def _theorem1(cfg: Config, store: Store) -> dict:
    per_model = {}
    amps: dict = {}
    for name, cell in store.cells("theorem1").items():
        rows = []
        for st in cell["stages"]:
            measured = max(st["max"]) if st["max"] else math.nan
            rows.append(
                {
                    "stage": st["stage"],
                    "L": st["L"],
                    "C": st["C"],
                    "T": st["T"],
                    "h": st["h"],
                    "bound": st["bound"],
                    "bound_max_C": st["bound_max_C"],
                    "bound_onesided": st["bound_onesided"],
                    "measured_max": measured,
                    "measured_mean": mean_ci(st["max"])["mean"],
                    "random_max": max(st["random"]),
                    "power_max": max(st["power"]),
                    "pgd_max": max(st["pgd"]),
                    "jacobian_norm_max": max(st["jacobian_norm"]),
                    "holds": measured <= st["bound_onesided"] <= st["bound"],
                }
            )
            amps.setdefault(name, {})[st["stage"]] = st["max"]
        per_model[name] = rows
    claim = {}
    for sde in [n for n in amps if n.startswith("sde")]:
        claim[sde] = {}
        for stage, ode_vals in amps.get("ode", {}).items():
            if stage in amps[sde]:
                test = paired_test(ode_vals, amps[sde][stage])  # ODE - SDE
                claim[sde][stage] = {
                    **test,
                    "ode_mean": mean_ci(ode_vals)["mean"],
                    "sde_mean": mean_ci(amps[sde][stage])["mean"],
                    "holds": test["ci_low"] > 0,
                    "contradicted": test["ci_high"] < 0,
                }
    return {
        "per_model": per_model,
        "claim": claim,
        "all_hold": all(r["holds"] for rows in per_model.values() for r in rows),
    }


def _completeness(store: Store) -> dict:
    out: dict = {}
    for cell in store.cells("completeness").values():
        entry = {
            m: {"residual": mean_ci(v["residual"]), "relative": mean_ci(v["relative"])}
            for m, v in cell["methods"].items()
        }
        change = next(iter(cell["methods"].values()))["output_change"]
        entry["output_change"] = mean_ci([abs(c) for c in change])
        out.setdefault(cell["model"], {})[cell["solver"]] = entry
    return out


def _sweep(cfg: Config, models: dict, sens: dict, th: dict) -> list[dict]:
    rows = []
    for name in sorted((n for n in models if not n.startswith("shapes")), key=sigma_of):
        by_method = sens["per_model"].get(name, {})
        row = {
            "model": name,
            "sigma": sigma_of(name),
            "test_accuracy": models[name]["test_accuracy"],
            "sensitivity": {m: by_method[m]["mean"] for m in cfg.methods if m in by_method},
            "amplification": {r["stage"]: r["measured_mean"] for r in th["per_model"].get(name, [])},
        }
        rows.append(row)
    return rows


def build(store: Store) -> dict:
    """Every summary of the run, from its cells."""
    cfg = store.cfg
    models = _models(store)
    sens = _sensitivity(cfg, store, models)
    th = _theorem1(cfg, store)
    return {
        "config": cfg.to_dict(),
        "digest": cfg.digest(),
        "environment": json.loads((store.root / "config.json").read_text()).get("environment", environment()),
        "models": models,
        "sensitivity": sens,
        "robustness": _robustness(cfg, store),
        "localisation": _localisation(cfg, store, models),
        "theorem1": th,
        "completeness": _completeness(store),
        "noise_sweep": _sweep(cfg, models, sens, th),
        "figures": {k: v["path"] for k, v in store.cells("figures").items()},
    }
