"""The primary question per method: does the sensitivity fall as the noise σ grows? One estimate from every σ.

Per training seed, the log ratio of the SDE network's geometric-mean max-sensitivity to
the same seed's ODE network's is taken at every σ of the run (and is 0 at σ = 0, the
ODE network itself); the seed's dose-response is the least-squares slope of those log
ratios against σ. The slopes of the seeds are the unit of replication: their mean, its
95% Student-t interval and a two-sided t-test. The family of primary rows is the run's
attribution methods, controlled by Holm's step-down procedure at 5%: a row **holds**
(**fails**) where its Holm-adjusted p-value is below 0.05 and the mean slope is negative
(positive), and *depends* otherwise. With one training seed the images are the unit
instead (each image's slope across the networks, which saw the same images), and the
row says so.
"""

from __future__ import annotations

import math

from ..networks import ODE, sigma_of
from ..store import Store
from .formatting import VERDICT_MARK, in_run_order, markdown_table, number, percent, title
from .section import Section, verdict_row
from .stats import by_seed, log_gm, mean_ci, sensitivity_cells

__all__ = ["DOSE", "holm", "slope"]

#: The family-wise error rate of the primary rows.
ALPHA = 0.05
#: The effect is reported as the relative change of the sensitivity per this step of σ.
STEP = 0.1


def p_value(p: float) -> str:
    """A p-value with four significant digits (0.04998, not 0.0500 beside a verdict decided at 0.05)."""
    return f"{p:.4g}" if math.isfinite(p) else "–"


def slope(xs: list[float], ys: list[float]) -> float:
    """The least-squares slope of ``ys`` against ``xs`` (NaN for fewer than 2 distinct x)."""
    n = len(xs)
    mx = sum(xs) / n if n else math.nan
    sxx = sum((x - mx) ** 2 for x in xs)
    if n < 2 or sxx == 0:
        return math.nan
    my = sum(ys) / n
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def holm(p: dict[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values of a family (NaN stays NaN and is not counted)."""
    ranked = sorted((v, k) for k, v in p.items() if math.isfinite(v))
    m, running, out = len(ranked), 0.0, {k: math.nan for k in p}
    for i, (v, k) in enumerate(ranked):
        running = max(running, min(1.0, (m - i) * v))
        out[k] = running
    return out


def _t_test(values: list[float]) -> float:
    """Two-sided one-sample t-test of mean 0 (NaN for fewer than 2 values or no spread)."""
    from scipy import stats

    vals = [v for v in values if math.isfinite(v)]
    if len(vals) < 2 or max(vals) == min(vals):
        return math.nan
    return float(stats.ttest_1samp(vals, 0.0).pvalue)


def _per_image_slopes(ode: list[float], sdes: dict[float, list[float]]) -> list[float]:
    """One slope per image: the log ratios of its sensitivities across the networks, against σ."""
    out = []
    for i, base in enumerate(ode):
        xs, ys = [0.0], [0.0]
        for sigma, vals in sdes.items():
            if base > 0 and vals[i] > 0 and math.isfinite(vals[i] / base):
                xs.append(sigma)
                ys.append(math.log(vals[i] / base))
        if len(xs) > 1:
            out.append(slope(xs, ys))
    return out


def summarise(store: Store, results: dict) -> dict:
    cfg = store.cfg
    cells = sensitivity_cells(store)
    sdes = [n.name for n in cfg.table_networks() if not n.is_ode]
    methods: dict = {}
    for method in cfg.methods:
        ode = by_seed(cells, ODE, method)
        series = {sigma_of(n): by_seed(cells, n, method) for n in sdes}
        seeds = [s for s in sorted(ode) if all(s in v for v in series.values())]
        if not seeds or not series:
            continue
        per_seed = {}
        for s in seeds:
            xs = [0.0, *series]
            ys = [0.0, *(log_gm(v[s]) - log_gm(ode[s]) for v in series.values())]
            per_seed[str(s)] = slope(xs, ys)
        if len(seeds) >= 2:
            level, units = "seeds", list(per_seed.values())
        else:
            level, units = "images", _per_image_slopes(ode[seeds[0]], {x: v[seeds[0]] for x, v in series.items()})
        methods[method] = {
            "per_seed": per_seed,
            "slope": mean_ci(units),
            "p": _t_test(units),
            "level": level,
            "agree": sum(1 for v in per_seed.values() if v < 0),
            "seeds": len(seeds),
        }
    adjusted = holm({m: r["p"] for m, r in methods.items()})
    for m, r in methods.items():
        r["p_holm"] = adjusted[m]
        decided = math.isfinite(r["p_holm"]) and r["p_holm"] < ALPHA
        r["verdict"] = ("holds" if r["slope"]["mean"] < 0 else "fails") if decided else "depends"
        r["effect"] = {k: math.expm1(STEP * r["slope"][k]) for k in ("mean", "low", "high")}
    return {"dose_response": {"methods": methods, "sigmas": [sigma_of(n) for n in sdes], "alpha": ALPHA, "step": STEP}}


def verdicts(results: dict) -> list[dict]:
    dose = results.get("dose_response") or {}
    rows = []
    for method, r in in_run_order(dose.get("methods", {}), results):
        note = f"primary; Holm-adjusted p = {p_value(r['p_holm'])} over {len(dose['methods'])} methods"
        if r["level"] == "images":
            note += "; one training seed: images are the unit"
        rows.append(
            verdict_row(
                "sensitivity falls as σ grows (primary)",
                f"{title(method)}, σ = 0 to {max(dose['sigmas']):g}",
                r["verdict"],
                r["effect"],
                f"relative per +{dose['step']:g} σ",
                r["agree"],
                r["seeds"],
                note,
            )
        )
    return rows


def tables(results: dict) -> list[str]:
    dose = results.get("dose_response") or {}
    if not dose.get("methods"):
        return []
    rows = []
    for method, r in in_run_order(dose["methods"], results):
        s = r["slope"]
        rows.append(
            [
                title(method),
                f"{number(s['mean'], 3)} [{number(s['low'], 3)}, {number(s['high'], 3)}]",
                f"{percent(r['effect']['mean'])} [{percent(r['effect']['low'])}, {percent(r['effect']['high'])}]",
                f"{r['agree']}/{r['seeds']}",
                p_value(r["p"]),
                p_value(r["p_holm"]),
                VERDICT_MARK[r["verdict"]],
            ]
        )
    header = ["method", "slope of log ratio per unit σ [95% CI]", f"per +{dose['step']:g} σ", "seeds falling"]
    sigmas = ", ".join(f"{x:g}" for x in [0.0, *dose["sigmas"]])
    return [
        "## Does the sensitivity fall as σ grows? (primary, one row per method)",
        "",
        f"Per training seed, the least-squares slope of log(SDE ÷ ODE geometric-mean max-sensitivity) against σ "
        f"over σ = {sigmas}; mean over seeds [95% CI over seeds], two-sided t-test, Holm's correction over the "
        f"{len(dose['methods'])} methods at {dose['alpha']:g}. A row holds where its Holm-adjusted p is below "
        f"{dose['alpha']:g} and the slope is negative. The per-σ rows below are secondary.",
        "",
        *markdown_table([*header, "p", "p (Holm)", "verdict"], rows),
        "",
    ]


DOSE = Section("dose_response", summarise, page="sensitivity", verdicts=verdicts, tables=tables)
