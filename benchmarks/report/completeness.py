"""Completeness (eq. 9): attributions add up to the output change, per method and solver."""

from __future__ import annotations

import math
import statistics

from ..store import Store
from .formatting import markdown_table, number
from .plotting import plt
from .section import Section, verdict_row
from .stats import finite_mean, mean_ci

__all__ = ["COMPLETENESS", "COMPLETENESS_TOLERANCE"]

#: Completeness holds where the mean residual is at most this fraction of the mean
#: output change it accounts for.
COMPLETENESS_TOLERANCE = 0.01
METHODS = ("integrated_gradients", "integrated_gradients_x10", "deeplift", "deeplift_shap")


def summarise(store: Store, results: dict) -> dict:
    out: dict = {}
    for cell in store.results("completeness").values():
        change = next(iter(cell["methods"].values()))["output_change"]
        change = finite_mean([abs(c) for c in change])
        entry = out.setdefault(cell["model"], {}).setdefault(cell["solver"], {"seeds": {}})
        entry["seeds"][str(cell["seed"])] = {
            **{m: finite_mean(v["residual"]) for m, v in cell["methods"].items()},
            "output_change": change,
        }
    for solvers in out.values():
        for entry in solvers.values():
            seeds = list(entry["seeds"].values())
            for key in seeds[0]:
                entry[key] = mean_ci([s[key] for s in seeds])
    return {"completeness": out, "completeness_tolerance": COMPLETENESS_TOLERANCE}


def _ratios(comp: dict, method: str) -> list[float]:
    """Residual ÷ output change of every (seed, solver) run with the noise off (the fixed path has no rule)."""
    return [
        s[method] / s["output_change"]
        for solvers in comp.values()
        for solver, e in solvers.items()
        if "fixed-path" not in solver  # the normalized noise has no DeepLIFT rule
        for s in e["seeds"].values()
        if method in s and s["output_change"] > 0
    ]


def verdicts(results: dict) -> list[dict]:
    cfg, comp = results["config"], results["completeness"]
    names = {
        "integrated_gradients_x10": f"Integrated Gradients ({10 * cfg['ig_steps']} steps)",
        "deeplift": "DeepLIFT",
        "deeplift_shap": "DeepLIFT-SHAP",
    }
    rows = []
    for method, name in names.items():
        ratios = _ratios(comp, method)
        if not ratios:
            continue
        ok = [r <= COMPLETENESS_TOLERANCE for r in ratios]
        v = "holds" if all(ok) else ("fails" if not any(ok) else "depends")
        note = "counts (seed, solver) runs"
        if method == "integrated_gradients_x10":
            coarse = _ratios(comp, "integrated_gradients")
            note += f"; IG's residual is its quadrature error, it shrinks with the steps ({cfg['ig_steps']} steps: "
            note += f"median {statistics.median(coarse):.3g})"
        elif cfg["arch"] != "small":
            # torchvision's stem max-pool: Captum's DeepLIFT rule for it is not conservative,
            # so with these non-zero baselines the residual is the pool's, not round-off.
            note += "; cause: the stem's max-pool, whose DeepLIFT rule in Captum is not conservative"
        rows.append(
            verdict_row(
                "completeness (eq. 9)",
                f"{name}, noise off; Euler on every seed, every solver on the first",
                v,
                {"mean": statistics.median(ratios), "low": min(ratios), "high": max(ratios)},
                "residual ÷ mean abs. output change (median, range)",
                sum(ok),
                len(ratios),
                note,
                line=None,
            )
        )
    return rows


def tables(results: dict) -> list[str]:
    """Completeness residuals per network, solver and method."""
    cfg = results["config"]
    comp = results["completeness"]
    if not comp:
        return []
    ig = cfg["ig_steps"]
    rows = [
        [
            model,
            solver,
            *(number(methods[m]["mean"]) if m in methods else "–" for m in METHODS),
            number(methods["output_change"]["mean"]),
        ]
        for model, solvers in comp.items()
        for solver, methods in solvers.items()
    ]
    header = ["network", "solver", f"IG ({ig} steps)", f"IG ({10 * ig} steps)", "DeepLIFT", "DeepLIFT-SHAP"]
    return [
        "## Completeness residual (eq. 9)",
        "",
        r"The residual is $\lvert\sum_k (A_k(x') - A_k(x)) - (F(x') - F(x))\rvert$.",
        "",
        f"$x' = x$ + uniform noise of radius {cfg['radius']}; mean residual over images and seeds, and beside it "
        r"the mean $\lvert F(x') - F(x)\rvert$ it is to be compared with. IG's residual is the error of its "
        "quadrature (it shrinks with the steps); DeepLIFT's is round-off unless the network has a "
        "non-linearity without a DeepLIFT rule (the normalized noise on a fixed path).",
        "",
        *markdown_table([*header, r"mean $\lvert F(x') - F(x)\rvert$"], rows),
        "",
    ]


def summary(results: dict) -> str:
    comp = results["completeness"]
    if not comp:
        return "No completeness results in this run."
    noise_off = [m for s in comp.values() for solver, m in s.items() if "fixed-path" not in solver]
    worst_dl = max(m["deeplift"]["mean"] for m in noise_off)
    ig = [m["integrated_gradients"]["mean"] for s in comp.values() for m in s.values()]
    ig_fine = [m["integrated_gradients_x10"]["mean"] for s in comp.values() for m in s.values()]
    steps = results["config"]["ig_steps"]
    return (
        f"With the noise off, DeepLIFT's mean residual is at most {worst_dl:.2g} over every network, solver and "
        f"training seed (round-off). Integrated Gradients' residual is {min(ig):.2g} to {max(ig):.2g} with {steps} "
        f"steps and {min(ig_fine):.2g} to {max(ig_fine):.2g} with {10 * steps}: eq. 9 holds for it only up to its "
        f"quadrature error."
    )


def _plot(results: dict, store: Store) -> str | None:
    comp = results["completeness"]
    if not comp:
        return None
    steps = results["config"]["ig_steps"]
    labels = {
        "integrated_gradients": f"IG ({steps} steps)",
        "integrated_gradients_x10": f"IG ({10 * steps} steps)",
        "deeplift": "DeepLIFT",
        "deeplift_shap": "DeepLIFT-SHAP",
    }
    rows = [(f"{model}\n{solver}", methods) for model, solvers in comp.items() for solver, methods in solvers.items()]
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(rows)), 4))
    width = 0.8 / (len(METHODS) + 1)
    for j, name in enumerate(METHODS):
        vals = [m[name]["mean"] if name in m else math.nan for _, m in rows]
        ax.bar([i + (j - len(METHODS) / 2) * width for i in range(len(rows))], vals, width, label=labels[name])
    ax.bar(
        [i + (len(METHODS) / 2) * width for i in range(len(rows))],
        [m["output_change"]["mean"] for _, m in rows],
        width,
        color="0.6",
        label=r"$|F(x') - F(x)|$",
    )
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r for r, _ in rows], fontsize=6)
    ax.set_ylabel("mean residual")
    ax.set_title(r"Completeness residual $|\sum (A(x') - A(x)) - (F(x') - F(x))|$")
    ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    return store.save_figure(fig, "completeness.png")


COMPLETENESS = Section(
    "completeness",
    summarise,
    page="completeness",
    verdicts=verdicts,
    tables=tables,
    plots={"completeness": _plot},
    fills={"completeness_summary": summary},
)
