"""A run's results, summarised from its cells: the contents of ``results.json``.

The unit of replication is the training seed. Each seed's ODE and SDE networks start
from the same weights and see the same data order and the same test images, so an
effect (SDE against ODE) is formed within each seed first; whether a claim holds is
decided by the 95% Student-t interval over the seeds' effects (``seed_effect``). The
interval over images pooled across seeds, which ignores training-run variation, is kept
beside it for comparison. Nothing here is typed in by hand.
"""

from __future__ import annotations

import json
import math
import statistics

from neuralsde.metrics import mean_ci, paired_test

from .common import environment
from .config import METHOD_TITLES, Config, sigma_of
from .explain import local_bounds, mechanism
from .paper import PAPER_SENSITIVITY
from .store import Store

__all__ = ["ACCURACY_GAP", "COMPLETENESS_TOLERANCE", "build", "seed_effect", "verdict"]

#: A pair of networks (one seed) whose test accuracies differ by more than this is
#: flagged: the paper compares networks at equal accuracy.
ACCURACY_GAP = 0.02
#: Completeness holds where the mean residual is at most this fraction of the mean
#: output change it accounts for.
COMPLETENESS_TOLERANCE = 0.01


def verdict(low: float, high: float, sign: int) -> str:
    """``holds`` if [low, high] lies on the claimed side of 0 (``sign`` ±1), ``fails`` if on the other side.

    Otherwise, and for an undefined interval, ``depends``.
    """
    if any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return "depends"
    if (sign < 0 and high < 0) or (sign > 0 and low > 0):
        return "holds"
    if (sign < 0 and low > 0) or (sign > 0 and high < 0):
        return "fails"
    return "depends"


def seed_effect(a: dict[int, list[float]], b: dict[int, list[float]], *, sign: int, relative: bool = True) -> dict:
    """The effect of ``a`` against ``b`` (paired by seed and image), decided over seeds.

    Args:
        a, b: seed -> values of the same images, in the same order.
        sign: the claimed direction of ``a - b`` (-1: ``a`` lower).
        relative: the per-seed effect is ``mean(a) / mean(b) - 1`` (else ``mean(a) - mean(b)``).

    Returns:
        ``per_seed`` (each seed's means and effect), ``effect`` (mean, 95% CI over seeds,
        ``sd`` the seed-to-seed spread, ``n`` seeds), ``agree`` (seeds whose effect has the
        claimed sign), ``image`` (the paired test over images pooled across seeds, in the
        units of ``a - b``) and ``verdict``. With one seed the verdict follows the image
        interval (``level`` says which).
    """
    seeds = sorted(set(a) & set(b))
    per_seed = []
    for s in seeds:
        ma, mb = _mean(a[s]), _mean(b[s])
        eff = (ma / mb - 1.0 if mb else math.nan) if relative else ma - mb
        per_seed.append({"seed": s, "a": ma, "b": mb, "effect": eff})
    effects = [p["effect"] for p in per_seed]
    ci = mean_ci(effects)
    image = paired_test([v for s in seeds for v in a[s]], [v for s in seeds for v in b[s]])
    if len(seeds) >= 2:
        level, v = "seeds", verdict(ci["low"], ci["high"], sign)
    else:
        level, v = "images", verdict(image["ci_low"], image["ci_high"], sign)
    return {
        "per_seed": per_seed,
        "effect": ci,
        "relative": relative,
        "agree": sum(1 for e in effects if e * sign > 0),
        "seeds": len(seeds),
        "image": image,
        "level": level,
        "verdict": v,
    }


def _mean(values) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def _models(store: Store) -> dict:
    """Per network: the accuracy of each seed, its mean and spread, and the training record."""
    out: dict = {}
    trained = store.results("train")
    for key, cell in store.results("accuracy").items():
        seed = int(key.split("/")[0][1:])
        entry = out.setdefault(
            cell["model"], {"sigma": cell["sigma"], "accuracy": {}, "train_seconds": {}, "epochs": None}
        )
        entry["accuracy"][seed] = cell["test_accuracy"]
        rec = trained.get(key, {})
        entry["train_seconds"][seed] = rec.get("train_seconds")
        entry["epochs"] = rec.get("epochs")
        entry["source"] = rec.get("source")
    for entry in out.values():
        acc = list(entry["accuracy"].values())
        entry["test_accuracy"] = mean_ci(acc)
        entry["accuracy"] = {str(s): v for s, v in sorted(entry["accuracy"].items())}
        entry["train_seconds"] = {str(s): v for s, v in sorted(entry["train_seconds"].items())}
    return out


def _accuracy_flags(models: dict, a: str, b: str) -> list[int]:
    """Seeds whose networks ``a`` and ``b`` differ in accuracy by more than ACCURACY_GAP."""
    acc_a, acc_b = models.get(a, {}).get("accuracy", {}), models.get(b, {}).get("accuracy", {})
    return [int(s) for s in acc_a if s in acc_b and abs(acc_a[s] - acc_b[s]) > ACCURACY_GAP]


def _by_seed(cells: dict, model: str, method: str | None = None, field: str = "values") -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for cell in cells.values():
        if cell["model"] == model and (method is None or cell.get("method") == method):
            out.setdefault(cell["seed"], []).extend(cell[field])
    return out


def _sensitivity(cfg: Config, store: Store, models: dict) -> dict:
    cells = store.results("sensitivity")
    # Repetitions of one seed are concatenated in repetition order, for every network alike.
    cells = dict(sorted(cells.items(), key=lambda kv: (kv[1]["seed"], kv[1]["rep"])))
    names = sorted({c["model"] for c in cells.values()}, key=sigma_of)
    per_model = {}
    for m in names:
        per_model[m] = {}
        for method in cfg.methods:
            vals = _by_seed(cells, m, method)
            if vals:
                seed_means = [_mean(v) for v in vals.values()]
                per_model[m][method] = {
                    **mean_ci(seed_means),
                    "images": mean_ci([x for v in vals.values() for x in v]),
                    "seed_means": seed_means,
                }
    comparisons = {}
    for sde in [n for n in names if n.startswith("sde")]:
        comp = {"accuracy_flags": _accuracy_flags(models, "ode", sde), "methods": {}}
        for method in cfg.methods:
            a, b = _by_seed(cells, sde, method), _by_seed(cells, "ode", method)
            if a and b:
                comp["methods"][method] = {
                    "ode": per_model["ode"][method],
                    "sde": per_model[sde][method],
                    **seed_effect(a, b, sign=-1),
                }
        comparisons[sde] = comp
    seconds: dict[str, float] = {}
    images: dict[str, int] = {}
    for cell in cells.values():
        seconds[cell["method"]] = seconds.get(cell["method"], 0.0) + (cell.get("seconds") or 0.0)
        images[cell["method"]] = images.get(cell["method"], 0) + len(cell["values"])
    return {
        "per_model": per_model,
        "comparisons": comparisons,
        "paper": PAPER_SENSITIVITY.get(cfg.arch) if cfg.imagenet else None,
        # Wall time of one image's max-sensitivity (all its perturbations), per method.
        "seconds_per_image": {m: seconds[m] / max(images[m], 1) for m in seconds},
        "images_per_cell": cfg.n_images,
        "repetitions": cfg.repetitions,
    }


def _robustness(cfg: Config, store: Store) -> dict:
    cells = store.results("robustness")
    per_model: dict = {}
    comparisons: dict = {}
    for method in cfg.robust_methods:
        for setting in ("random", "attack"):
            for metric in ("kendall", "topk"):
                series = {}
                for cell in cells.values():
                    if cell["method"] == method and setting in cell:
                        series.setdefault(cell["model"], {}).setdefault(cell["seed"], []).extend(cell[setting][metric])
                for model, vals in series.items():
                    entry = per_model.setdefault(model, {}).setdefault(method, {}).setdefault(setting, {})
                    entry[metric] = mean_ci([_mean(v) for v in vals.values()])
                if "ode" in series and cfg.table_sde in series:
                    comparisons.setdefault(method, {}).setdefault(setting, {})[metric] = seed_effect(
                        series[cfg.table_sde], series["ode"], sign=1, relative=False
                    )
    k = next((c["k"] for c in cells.values()), None)
    eps = next((c["epsilon"] for c in cells.values()), None)
    return {"per_model": per_model, "comparisons": comparisons, "k": k, "epsilon": eps}


def _localisation(cfg: Config, store: Store, models: dict) -> dict:
    cells = store.results("localisation")
    if not cells:
        return {}
    ode, sde = cfg.shape_names()
    per_model: dict = {}
    comparisons = {}
    for method in cfg.methods:
        a, b = _by_seed(cells, sde, method), _by_seed(cells, ode, method)
        for name, vals in ((ode, b), (sde, a)):
            if vals:
                per_model.setdefault(name, {})[method] = mean_ci([_mean(v) for v in vals.values()])
        if a and b:
            comparisons[method] = seed_effect(a, b, sign=1, relative=False)
    share = [x for c in cells.values() for x in c["object_share"]]
    return {
        "per_model": per_model,
        "comparisons": comparisons,
        "object_share": _mean(share),
        "accuracy_flags": _accuracy_flags(models, ode, sde),
    }


def _theorem1(cfg: Config, store: Store) -> dict:
    cells = store.results("theorem1")
    per_model: dict = {}
    amps: dict = {}  # model -> stage -> seed -> per-image amplification
    ratios = []
    for cell in cells.values():
        for st in cell["stages"]:
            measured = max(st["max"]) if st["max"] else math.nan
            holds = measured <= st["bound_onesided"] <= st["bound"]
            row = per_model.setdefault(cell["model"], {}).setdefault(
                st["stage"], {"stage": st["stage"], "seeds": {}, "holds": True}
            )
            row["seeds"][str(cell["seed"])] = {
                "L": st["L"],
                "C": st["C"],
                "T": st["T"],
                "bound": st["bound"],
                "bound_max_C": st["bound_max_C"],
                "bound_onesided": st["bound_onesided"],
                "measured_max": measured,
                "measured_mean": _mean(st["max"]),
            }
            row["holds"] = row["holds"] and holds
            ratios.append(st["bound"] / measured if measured else math.nan)
            amps.setdefault(cell["model"], {}).setdefault(st["stage"], {})[cell["seed"]] = st["max"]
    for rows in per_model.values():
        for row in rows.values():
            seeds = list(row["seeds"].values())
            for key in ("bound", "bound_onesided", "measured_max", "measured_mean"):
                row[key] = mean_ci([s[key] for s in seeds])
            row["bound_over_measured"] = [s["bound"] / s["measured_max"] for s in seeds]
    claim = {}
    for sde in [n for n in amps if n.startswith("sde")]:
        stages = {}
        for stage, ode_vals in amps.get("ode", {}).items():
            if stage in amps[sde]:
                stages[stage] = seed_effect(amps[sde][stage], ode_vals, sign=-1)
        claim[sde] = {"stages": stages, "network": _across_stages(amps[sde], amps.get("ode", {}))}
    return {
        "per_model": {m: list(rows.values()) for m, rows in sorted(per_model.items(), key=lambda kv: sigma_of(kv[0]))},
        "claim": claim,
        "all_hold": all(r["holds"] for rows in per_model.values() for r in rows.values()),
        "bound_over_measured": {"min": min(ratios, default=math.nan), "max": max(ratios, default=math.nan)},
    }


def _across_stages(sde: dict, ode: dict) -> dict:
    """The SDE's amplification relative to the ODE's, as the geometric mean over stages, decided over seeds."""
    stages = [s for s in sde if s in ode]
    seeds = sorted(set.intersection(*(set(sde[s]) & set(ode[s]) for s in stages))) if stages else []
    effects = []
    for seed in seeds:
        logs = [math.log(_mean(sde[s][seed]) / _mean(ode[s][seed])) for s in stages]
        effects.append(math.exp(sum(logs) / len(logs)) - 1.0)
    ci = mean_ci(effects)
    return {
        "effect": ci,
        "per_seed": effects,
        "agree": sum(1 for e in effects if e < 0),
        "seeds": len(effects),
        "verdict": verdict(ci["low"], ci["high"], -1) if len(effects) >= 2 else "depends",
    }


def _completeness(store: Store) -> dict:
    out: dict = {}
    for cell in store.results("completeness").values():
        change = next(iter(cell["methods"].values()))["output_change"]
        change = _mean([abs(c) for c in change])
        entry = out.setdefault(cell["model"], {}).setdefault(cell["solver"], {"seeds": {}})
        entry["seeds"][str(cell["seed"])] = {
            **{m: _mean(v["residual"]) for m, v in cell["methods"].items()},
            "output_change": change,
        }
    for solvers in out.values():
        for entry in solvers.values():
            seeds = list(entry["seeds"].values())
            for key in seeds[0]:
                entry[key] = mean_ci([s[key] for s in seeds])
    return out


def _sweep(cfg: Config, models: dict, sens: dict, th: dict) -> list[dict]:
    rows = []
    amp_rows = {m: rows_ for m, rows_ in th["per_model"].items()}
    for name in sorted((n for n in models if not n.startswith("shapes")), key=sigma_of):
        by_method = sens["per_model"].get(name, {})
        rows.append(
            {
                "model": name,
                "sigma": sigma_of(name),
                "test_accuracy": models[name]["test_accuracy"],
                "sensitivity": {m: by_method[m] for m in cfg.methods if m in by_method},
                "amplification": {r["stage"]: r["measured_mean"] for r in amp_rows.get(name, [])},
            }
        )
    return rows


def _accuracy_claims(cfg: Config, models: dict) -> dict:
    """Per σ: the SDE network's accuracy against the ODE network's (the paper: noise costs accuracy)."""
    out = {}
    ode = models.get("ode", {}).get("accuracy", {})
    for name in cfg.model_names()[1:]:
        acc = models.get(name, {}).get("accuracy", {})
        if acc and ode:
            out[name] = seed_effect(
                {int(s): [v] for s, v in acc.items()}, {int(s): [v] for s, v in ode.items()}, sign=-1, relative=False
            )
    return out


def _verdicts(cfg: Config, models: dict, sens: dict, th: dict, comp: dict, loc: dict, acc: dict) -> list[dict]:
    """One row per claim of the paper and setting: holds / fails / depends, with the effect and its CI."""
    rows = []

    def row(claim, setting, v, effect, unit, agree=None, seeds=None, note=""):
        rows.append(
            {
                "claim": claim,
                "setting": setting,
                "verdict": v,
                "effect": effect,
                "unit": unit,
                "agree": agree,
                "seeds": seeds,
                "note": note,
            }
        )

    for sde, comp_ in sens["comparisons"].items():
        flags = comp_["accuracy_flags"]
        note = f"unequal accuracy in seed(s) {', '.join(map(str, flags))}" if flags else ""
        for method, r in comp_["methods"].items():
            row(
                "SDE attributions are less sensitive",
                f"{METHOD_TITLES.get(method, method)}, σ = {sigma_of(sde):g}",
                r["verdict"],
                r["effect"],
                "relative",
                r["agree"],
                r["seeds"],
                note + (" (one seed: image-level CI)" if r["level"] == "images" else ""),
            )
    if th["per_model"]:
        ratio = th["bound_over_measured"]
        row(
            "Theorem 1's bound holds",
            "every network, stage, seed and image",
            "holds" if th["all_hold"] else "fails",
            {"mean": ratio["min"], "low": ratio["min"], "high": ratio["max"]},
            "bound ÷ measured (range)",
        )
    for sde, c in th["claim"].items():
        net = c["network"]
        row(
            "the SDE amplifies perturbations less",
            f"σ = {sigma_of(sde):g}, geometric mean over stages",
            net["verdict"],
            net["effect"],
            "relative",
            net["agree"],
            net["seeds"],
        )
    names = {
        "integrated_gradients_x10": f"Integrated Gradients ({10 * cfg.ig_steps} steps)",
        "deeplift": "DeepLIFT",
        "deeplift_shap": "DeepLIFT-SHAP",
    }
    for method, title in names.items():
        ratios = [
            s[method] / s["output_change"]
            for solvers in comp.values()
            for solver, e in solvers.items()
            if "fixed-path" not in solver  # the normalized noise has no DeepLIFT rule
            for s in e["seeds"].values()
            if method in s and s["output_change"] > 0
        ]
        if ratios:
            ok = [r <= COMPLETENESS_TOLERANCE for r in ratios]
            v = "holds" if all(ok) else ("fails" if not any(ok) else "depends")
            note = "counts (seed, solver) runs"
            if method == "integrated_gradients_x10":
                note += f"; IG's residual is its quadrature error, it shrinks with the steps ({cfg.ig_steps} steps: "
                coarse = [
                    s["integrated_gradients"] / s["output_change"]
                    for solvers in comp.values()
                    for solver, e in solvers.items()
                    if "fixed-path" not in solver
                    for s in e["seeds"].values()
                    if s["output_change"] > 0
                ]
                note += f"median {statistics.median(coarse):.3g})"
            elif cfg.arch != "small":
                # torchvision's stem max-pool: Captum's DeepLIFT rule for it is not conservative,
                # so with these non-zero baselines the residual is the pool's, not round-off.
                note += "; cause: the stem's max-pool, whose DeepLIFT rule in Captum is not conservative"
            row(
                "completeness (eq. 9)",
                f"{title}, noise off; Euler on every seed, every solver on the first",
                v,
                {"mean": statistics.median(ratios), "low": min(ratios), "high": max(ratios)},
                "residual ÷ mean abs. output change (median, range)",
                sum(ok),
                len(ratios),
                note,
            )
    for method, r in loc.get("comparisons", {}).items():
        flags = loc.get("accuracy_flags", [])
        row(
            "SDE attributions are sharper (localisation)",
            f"{METHOD_TITLES.get(method, method)}, shapes, σ = {cfg.table_sigma:g}",
            r["verdict"],
            r["effect"],
            "mass on object",
            r["agree"],
            r["seeds"],
            f"unequal accuracy in seed(s) {', '.join(map(str, flags))}" if flags else "",
        )
    for sde, r in acc.items():
        row(
            "noise costs accuracy",
            f"σ = {sigma_of(sde):g}",
            r["verdict"],
            r["effect"],
            "accuracy",
            r["agree"],
            r["seeds"],
        )
    return rows


def build(store: Store) -> dict:
    """Every summary of the run, from the cells it used."""
    cfg = store.cfg
    models = _models(store)
    sens = _sensitivity(cfg, store, models)
    th = _theorem1(cfg, store)
    comp = _completeness(store)
    loc = _localisation(cfg, store, models)
    acc = _accuracy_claims(cfg, models)
    return {
        "config": cfg.to_dict(),
        "digest": cfg.digest(),
        "seeds": cfg.seeds,
        "environment": json.loads((store.root / "config.json").read_text()).get("environment", environment()),
        "verdicts": _verdicts(cfg, models, sens, th, comp, loc, acc),
        "accuracy_gap": ACCURACY_GAP,
        "completeness_tolerance": COMPLETENESS_TOLERANCE,
        "models": models,
        "accuracy": acc,
        "sensitivity": sens,
        "robustness": _robustness(cfg, store),
        "localisation": loc,
        "theorem1": th,
        "completeness": comp,
        "noise_sweep": _sweep(cfg, models, sens, th),
        "local_bound": local_bounds(store),
        "mechanism": mechanism(cfg, store),
        "figures": {k: v["path"] for k, v in store.results("figures").items()},
    }
