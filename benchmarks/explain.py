"""What explains it: the local Theorem 1 bounds and the mechanism measures, summarised.

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

import torch

from neuralsde.metrics import mean_ci

from .config import Config, sigma_of
from .store import Store

__all__ = ["BOUND_GOAL", "BOUND_SLACK", "PREDICTORS", "STATEMENTS", "local_bounds", "mechanism"]

#: Each statement of the local bound: (bound key, measured key, what the bound is for).
STATEMENTS = {
    "network": ("bound", "measured", "the stage as computed (one Euler step per block): product of block norms"),
    "flow_log_norm": ("flow_bound", "flow_measured", "the drift's flow: exp of the integrated logarithmic norm"),
    "flow_blocks": ("flow_block_bound", "flow_measured", "the drift's flow: product of the blocks' flow-map norms"),
    "pathwise": ("bound", "measured", "the SDE along one fixed path, noise on: product of block norms"),
}
#: The goal for a tight bound: median bound / measured at most this, in every stage.
BOUND_GOAL = 10.0
#: Lanczos converges to the norms from below, to a relative 1e-7 on squared norms; a
#: bound counts as below its measured value only beyond this relative slack.
BOUND_SLACK = 1e-5
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)
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
BOOTSTRAP = 2000


def _clean(value):
    """JSON as stored: NaN (an undefined interval or correlation) becomes None, tuples lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _quantiles(values: list[float]) -> dict:
    t = torch.tensor(values, dtype=torch.float64)
    if t.numel() == 0:
        return {"n": 0}
    qs = torch.quantile(t, torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    return {"n": t.numel(), **{f"q{int(round(q * 100))}": v for q, v in zip(QUANTILES, qs)}}


def local_bounds(store: Store) -> dict:
    """Bound ÷ measured of every statement, per stage (over networks, seeds and images) and per network."""
    stages: dict = {}
    per_model: dict = {}
    for cell in store.results("theorem1").values():
        for st in cell["stages"]:
            for statement, (bkey, mkey, _) in STATEMENTS.items():
                src = st.get("pathwise" if statement == "pathwise" else "local")
                if not src or bkey not in src:
                    continue
                pairs = list(zip(src[bkey], src[mkey]))
                ratios = [b / m for b, m in pairs if m > 0]
                stages.setdefault(st["stage"], {}).setdefault(statement, []).extend(ratios)
                row = per_model.setdefault(cell["model"], {}).setdefault(st["stage"], {})
                entry = row.setdefault(statement, {"bound": [], "measured": [], "ratio": []})
                entry["bound"] += [b for b, _ in pairs]
                entry["measured"] += [m for _, m in pairs]
                entry["ratio"] += ratios
            if "local" in st:
                amp = [j / a for j, a in zip(st["local"]["measured"], st["max"]) if a > 0]
                stages[st["stage"]].setdefault("jacobian_over_amplification", []).extend(amp)
    summary = {
        stage: {name: _quantiles(values) for name, values in rows.items()} for stage, rows in sorted(stages.items())
    }
    meets = {
        s: bool(summary) and all(rows[s]["q50"] <= BOUND_GOAL for rows in summary.values() if s in rows)
        for s in STATEMENTS
    }
    below = {s: sum(1 for rows in stages.values() for r in rows.get(s, []) if r < 1 - BOUND_SLACK) for s in STATEMENTS}
    models = {
        model: {
            stage: {
                s: {"bound": _median(e["bound"]), "measured": _median(e["measured"]), "ratio": _median(e["ratio"])}
                for s, e in rows.items()
            }
            for stage, rows in sorted(st.items())
        }
        for model, st in sorted(per_model.items(), key=lambda kv: sigma_of(kv[0]))
    }
    points = {
        s: [
            (model, b, m)
            for model, st in per_model.items()
            for rows in st.values()
            if s in rows
            for b, m in zip(rows[s]["bound"], rows[s]["measured"])
        ]
        for s in ("network", "flow_log_norm")
    }
    return _clean(
        {
            "statements": {s: v[2] for s, v in STATEMENTS.items()},
            "stages": summary,
            "per_model": models,
            "goal": BOUND_GOAL,
            "meets_goal": meets,
            "slack": BOUND_SLACK,
            "below": below,
            "points": points,
        }
    )


def _median(values: list[float]) -> float:
    return float(torch.tensor(values, dtype=torch.float64).median()) if values else math.nan


def _log_gm(values: list[float]) -> float:
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return sum(math.log(v) for v in vals) / len(vals) if vals else math.nan


def _scalars(store: Store) -> dict[tuple[str, int], dict[str, float]]:
    """Per (network, seed): the log of each candidate's network-level value."""
    out: dict[tuple[str, int], dict[str, float]] = {}
    for cell in store.results("sensitivity").values():
        row = out.setdefault((cell["model"], cell["seed"]), {})
        for key in ("values", "change", "norm"):
            if key in cell:
                name = "sens" if key == "values" else key
                row.setdefault(f"_{name}:{cell['method']}", []).extend(cell[key])
    for row in out.values():
        for key in [k for k in row if k.startswith("_")]:
            row[key[1:]] = _log_gm(row.pop(key))
    for cell in store.results("mechanism").values():
        row = out.setdefault((cell["model"], cell["seed"]), {})
        flips, margins = [], []
        for stage, st in sorted(cell["stages"].items()):  # the same order, fresh or read back
            flips.append(sum(st["flip"]) / len(st["flip"]))
            row[f"flip:{stage}"] = math.log(max(flips[-1], 1e-12))
            row[f"margin:{stage}"] = _log_gm([m / c for m, c in zip(st["margin"], st["change"]) if c > 0])
            row[f"zmedian:{stage}"] = _log_gm(st["margin"])
            row[f"zq10:{stage}"] = _log_gm(st["margin_q10"])
            row[f"dz:{stage}"] = _log_gm(st["change"])
            margins.append(row[f"margin:{stage}"])
        row["flip"] = math.log(max(sum(flips) / len(flips), 1e-12))
        row["margin"] = sum(margins) / len(margins)
        row["logit_margin"] = _log_gm(cell["logit_margin"])
        row["grad_norm"] = _log_gm(cell["grad_norm"])
    for cell in store.results("theorem1").values():
        row = out.setdefault((cell["model"], cell["seed"]), {})
        logs = [_log_gm(st["local"]["measured"]) for st in cell["stages"] if "local" in st]
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
        seed: row[key] - scalars[("ode", seed)][key]
        for (m, seed), row in sorted(scalars.items())
        if m == sde and key in row and key in scalars.get(("ode", seed), {})
    }
    ci = mean_ci(list(per_seed.values()))
    rel = {k: math.expm1(ci[k]) if math.isfinite(ci[k]) else math.nan for k in ("mean", "low", "high")}
    return {"per_seed": {str(s): v for s, v in per_seed.items()}, "log": ci, **rel, "seeds": len(per_seed)}


def _pearson(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 3:
        return math.nan
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def _correlation(points: list[tuple[int, float, float]], seed: int) -> dict:
    """Pearson's r over (seed, x, y) points, with a 95% bootstrap interval over seeds."""
    r = _pearson([p[1] for p in points], [p[2] for p in points])
    seeds = sorted({p[0] for p in points})
    by_seed = {s: [p for p in points if p[0] == s] for s in seeds}
    gen = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(BOOTSTRAP if len(seeds) >= 2 else 0):
        pick = torch.randint(len(seeds), (len(seeds),), generator=gen).tolist()
        sample = [p for i in pick for p in by_seed[seeds[i]]]
        value = _pearson([p[1] for p in sample], [p[2] for p in sample])
        if math.isfinite(value):
            draws.append(value)
    if len(draws) < BOOTSTRAP // 2:
        low = high = math.nan
    else:
        t = torch.tensor(draws, dtype=torch.float64)
        low, high = torch.quantile(t, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"r": r, "low": low, "high": high, "points": len(points), "seeds": len(seeds)}


def mechanism(cfg: Config, store: Store) -> dict:
    """The sensitivity's two factors, the activation pattern's stability and the other candidates, per σ."""
    scalars = _scalars(store)
    if not any(k[0] == "ode" for k in scalars) or not store.results("mechanism"):
        return {}
    sdes = [n for n in cfg.model_names() if n != "ode"]
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
    levels = {key: {n: _level(scalars, n, key) for n in cfg.model_names()} for key in keys}
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
            correlations.setdefault(pred, {})[method] = _correlation(points, seed=cfg.data_seed)
    return _clean(
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
