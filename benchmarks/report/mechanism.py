"""What explains the sensitivity's change: its two factors, the activation pattern and the other candidates.

Every effect is formed within a training seed (the SDE network against the same seed's
ODE network, on the same images) as a log ratio of geometric means over images, and its
95% interval is Student's t over the seeds, as for the verdicts. Log ratios add up, so
the sensitivity's effect is exactly its numerator's minus its denominator's.

Correlations are taken over the (seed, σ) points of the SDE networks, between a
candidate's effect and the sensitivity's effect; their intervals come from a bootstrap
over seeds (whole seeds are resampled, with every σ of a seed), since the points of one
seed share its ODE network.
"""

from __future__ import annotations

import math

from ..config import Config
from ..networks import ODE, sigma_of
from ..store import Store
from .mechanism_tables import tables
from .mechanism_text import conclusion, plot
from .section import Section
from .stats import clean, correlation, log_gm, mean_ci, sensitivity_cells

__all__ = ["MECHANISM", "PREDICTORS", "mechanism"]


#: Candidate explanations of the sensitivity difference: key -> title (``{method}``
#: marks the per-method ones); the flips and margins of each stage are added per run.
PREDICTORS = {
    "change:{method}": "attribution change max ‖A(x+δ) − A(x)‖ (numerator)",
    "norm:{method}": "attribution norm ‖A(x)‖ (denominator)",
    "flip": "ReLU flip fraction (mean over stages)",
    "margin": "pre-activation margin ÷ its change (geometric mean over stages)",
    "logit_margin": "logit margin",
    "grad_norm": "input-gradient norm",
    "jacobian": "local Jacobian norm of the stages (Theorem 1's amplification)",
}


def _scalars(store: Store) -> dict[tuple[str, int], dict[str, float]]:
    """Per (network, seed): the log of each candidate's network-level value."""
    out: dict[tuple[str, int], dict[str, float]] = {}
    for cell in sensitivity_cells(store).values():
        row = out.setdefault((cell["model"], cell["seed"]), {})
        for key in ("values", "change", "norm"):
            if key in cell:
                name = "sens" if key == "values" else key
                row.setdefault(f"_{name}:{cell['method']}", []).extend(cell[key])
    for row in out.values():
        for key in [k for k in row if k.startswith("_")]:
            row[key[1:]] = log_gm(row.pop(key))
    for cell in store.results("mechanism").values():
        row = out.setdefault((cell["model"], cell["seed"]), {})
        flips, margins = [], []
        for stage, st in sorted(cell["stages"].items()):  # the same order, fresh or read back
            flips.append(sum(st["flip"]) / len(st["flip"]))
            row[f"flip:{stage}"] = math.log(max(flips[-1], 1e-12))
            row[f"margin:{stage}"] = log_gm([m / c for m, c in zip(st["margin"], st["change"]) if c > 0])
            row[f"zmedian:{stage}"] = log_gm(st["margin"])
            row[f"zq10:{stage}"] = log_gm(st["margin_q10"])
            row[f"dz:{stage}"] = log_gm(st["change"])
            margins.append(row[f"margin:{stage}"])
        row["flip"] = math.log(max(sum(flips) / len(flips), 1e-12))
        row["margin"] = sum(margins) / len(margins)
        row["logit_margin"] = log_gm(cell["logit_margin"])
        row["grad_norm"] = log_gm(cell["grad_norm"])
    for cell in store.results("theorem1").values():
        row = out.setdefault((cell["model"], cell["seed"]), {})
        logs = [log_gm(st["local"]["measured"]) for st in cell["stages"] if "local" in st]
        if logs:
            row["jacobian"] = sum(logs) / len(logs)
    return out


def _level(scalars: dict, model: str, key: str) -> dict:
    """The candidate's value for one network, over seeds (geometric mean's CI via the logs)."""
    logs = [row[key] for (m, _), row in sorted(scalars.items()) if m == model and key in row]
    ci = mean_ci(logs)
    return {k: math.exp(ci[k]) if math.isfinite(ci[k]) else math.nan for k in ("mean", "low", "high")}


def _effects(scalars: dict, sde: str, key: str) -> dict:
    """Per seed log(SDE / ODE) of a candidate, and its 95% interval over seeds (as relative changes)."""
    per_seed = {
        seed: row[key] - scalars[(ODE, seed)][key]
        for (m, seed), row in sorted(scalars.items())
        if m == sde and key in row and key in scalars.get((ODE, seed), {})
    }
    ci = mean_ci(list(per_seed.values()))
    rel = {k: math.expm1(ci[k]) if math.isfinite(ci[k]) else math.nan for k in ("mean", "low", "high")}
    return {"per_seed": {str(s): v for s, v in per_seed.items()}, "log": ci, **rel, "seeds": len(per_seed)}


def mechanism(cfg: Config, store: Store) -> dict:
    """The sensitivity's two factors, the activation pattern's stability and the other candidates, per σ."""
    scalars = _scalars(store)
    if not any(k[0] == ODE for k in scalars) or not store.results("mechanism"):
        return {}
    sdes = [n.name for n in cfg.table_networks() if not n.is_ode]
    methods = [m for m in cfg.methods if any(f"norm:{m}" in row for row in scalars.values())]
    stages = sorted(
        {k.split(":")[1] for row in scalars.values() for k in row if k.startswith("flip:")},
        key=lambda s: (s != "stem", s),
    )
    decomposition = {
        method: {
            sde: {part: _effects(scalars, sde, f"{part}:{method}") for part in ("sens", "change", "norm")}
            for sde in sdes
        }
        for method in methods
    }
    keys = [f"{k}:{s}" for k in ("flip", "margin", "zmedian", "zq10", "dz") for s in stages]
    keys += ["flip", "margin", "logit_margin", "grad_norm", "jacobian"]
    levels = {key: {n: _level(scalars, n, key) for n in (net.name for net in cfg.table_networks())} for key in keys}
    effects = {key: {sde: _effects(scalars, sde, key) for sde in sdes} for key in keys}
    predictors = dict(PREDICTORS)
    for stage in stages:
        predictors[f"flip:{stage}"] = f"ReLU flip fraction, {stage}"
        predictors[f"margin:{stage}"] = f"margin ÷ change, {stage}"
    correlations: dict = {}
    for method in methods:
        for pred in predictors:
            key = pred.format(method=method)
            points = []
            for sde in sdes:
                y = decomposition[method][sde]["sens"]["per_seed"]
                x = _effects(scalars, sde, key)["per_seed"]
                points += [(int(s), x[s], y[s]) for s in y if s in x]
            correlations.setdefault(pred, {})[method] = correlation(points, seed=cfg.data_seed)
    return clean(
        {
            "sigmas": {sde: sigma_of(sde) for sde in sdes},
            "stages": stages,
            "decomposition": decomposition,
            "levels": levels,
            "effects": effects,
            "correlations": correlations,
            # Lists keep their order in results.json (whose keys are sorted).
            "methods": methods,
            "predictors": [[key, title] for key, title in predictors.items()],
        }
    )


def summarise(store: Store, results: dict) -> dict:
    return {"mechanism": mechanism(store.cfg, store)}


MECHANISM = Section(
    "mechanism",
    summarise,
    page="explains",
    tables=tables,
    plots={"mechanism": plot},
    fills={"explain_conclusion": conclusion},
)
