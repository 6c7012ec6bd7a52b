"""Summary plots of a run's results: noise against robustness, the noise sweep, Theorem 1, completeness."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .config import METHOD_TITLES  # noqa: E402
from .explain_report import PLOTS as EXPLAIN_PLOTS  # noqa: E402
from .store import Store  # noqa: E402

__all__ = ["plots"]


def _noise_robustness(results: dict, store: Store) -> str | None:
    """Does noise make attributions more robust? Relative sensitivity and accuracy against σ."""
    comps = results["sensitivity"]["comparisons"]
    sweep = results["noise_sweep"]
    if not comps:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    methods = list(next(iter(comps.values()))["methods"])
    offsets = {m: (i - (len(methods) - 1) / 2) * 0.008 for i, m in enumerate(methods)}
    for m in methods:
        xs, ys, lo, hi = [0.0], [0.0], [0.0], [0.0]
        for sde, comp in sorted(comps.items(), key=lambda kv: float(kv[0].rsplit("-", 1)[1])):
            if m in comp["methods"]:
                e = comp["methods"][m]["effect"]
                xs.append(float(sde.rsplit("-", 1)[1]))
                ys.append(100 * e["mean"])
                lo.append(100 * (e["mean"] - e["low"]))
                hi.append(100 * (e["high"] - e["mean"]))
        ax.errorbar(
            [x + offsets[m] for x in xs], ys, yerr=[lo, hi], marker="o", capsize=3, label=METHOD_TITLES.get(m, m)
        )
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlabel(r"noise $\sigma$ (0: the ODE network)")
    ax.set_ylabel("max-sensitivity vs ODE (%), 95% CI over seeds")
    ax.set_title(f"Does noise make attributions more robust? ({len(results['seeds'])} training seeds)")
    acc_ax = ax.twinx()
    sig = [r["sigma"] for r in sweep]
    acc = [r["test_accuracy"] for r in sweep]
    acc_ax.errorbar(
        sig,
        [100 * a["mean"] for a in acc],
        yerr=[[100 * (a["mean"] - a["low"]) for a in acc], [100 * (a["high"] - a["mean"]) for a in acc]],
        color="0.45",
        ls="--",
        marker="s",
        capsize=3,
        label="test accuracy (right)",
    )
    acc_ax.set_ylabel("test accuracy (%)", color="0.35")
    handles = ax.get_legend_handles_labels()
    extra = acc_ax.get_legend_handles_labels()
    ax.legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="best")
    return store.save_figure(fig, "noise_robustness.png")


def _sweep(results: dict, store: Store) -> str | None:
    sweep = results["noise_sweep"]
    if len(sweep) < 2:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    sig = [r["sigma"] for r in sweep]
    for m in sweep[0]["sensitivity"]:
        cs = [r["sensitivity"].get(m) for r in sweep]
        axes[0].errorbar(
            sig,
            [c["mean"] if c else math.nan for c in cs],
            yerr=[[c["mean"] - c["low"] if c else 0 for c in cs], [c["high"] - c["mean"] if c else 0 for c in cs]],
            marker="o",
            capsize=3,
            label=METHOD_TITLES.get(m, m),
        )
    axes[0].set(xlabel=r"noise $\sigma$", ylabel="max-sensitivity", title="attribution sensitivity (95% CI over seeds)")
    axes[0].legend(fontsize=7)
    for s in sweep[0]["amplification"]:
        cs = [r["amplification"].get(s) for r in sweep]
        axes[1].errorbar(
            sig,
            [c["mean"] if c else math.nan for c in cs],
            yerr=[[c["mean"] - c["low"] if c else 0 for c in cs], [c["high"] - c["mean"] if c else 0 for c in cs]],
            marker="o",
            capsize=3,
            label=s,
        )
    axes[1].set(
        xlabel=r"noise $\sigma$",
        ylabel=r"mean measured $\|\Delta F\| / \|\Delta x\|$",
        title="amplification per stage (95% CI over seeds)",
    )
    axes[1].legend(fontsize=7)
    return store.save_figure(fig, "noise_sweep.png")


def _theorem1(results: dict, store: Store) -> str | None:
    th = results["theorem1"]["per_model"]
    if not th:
        return None
    labels, bound, onesided, measured = [], [], [], []
    for model, rows in th.items():
        for r in rows:
            labels.append(f"{model}\n{r['stage']}")
            bound.append(r["bound"]["mean"])
            onesided.append(r["bound_onesided"]["mean"])
            measured.append(r["measured_max"]["mean"])
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(labels)), 3.8))
    xs = range(len(labels))
    ax.bar([x - 0.27 for x in xs], bound, 0.27, label=r"$e^{\int C\,dt}$ (Theorem 1)")
    ax.bar(list(xs), onesided, 0.27, label=r"one-sided bound $e^{\sum L_k}$")
    ax.bar([x + 0.27 for x in xs], measured, 0.27, label="measured amplification")
    ax.set_yscale("log")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=6)
    ax.set_ylabel(r"$\|F(x+\delta) - F(x)\| / \|\delta\|$")
    ax.legend(fontsize=7)
    ax.set_title("Theorem 1: bound vs measured, per network and stage (mean over seeds)")
    return store.save_figure(fig, "theorem1.png")


def _completeness(results: dict, store: Store) -> str | None:
    comp = results["completeness"]
    if not comp:
        return None
    names = ("integrated_gradients", "integrated_gradients_x10", "deeplift", "deeplift_shap")
    steps = results["config"]["ig_steps"]
    labels = {
        "integrated_gradients": f"IG ({steps} steps)",
        "integrated_gradients_x10": f"IG ({10 * steps} steps)",
        "deeplift": "DeepLIFT",
        "deeplift_shap": "DeepLIFT-SHAP",
    }
    rows = [(f"{model}\n{solver}", methods) for model, solvers in comp.items() for solver, methods in solvers.items()]
    fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(rows)), 4))
    width = 0.8 / (len(names) + 1)
    for j, name in enumerate(names):
        vals = [m[name]["mean"] if name in m else math.nan for _, m in rows]
        ax.bar([i + (j - len(names) / 2) * width for i in range(len(rows))], vals, width, label=labels[name])
    ax.bar(
        [i + (len(names) / 2) * width for i in range(len(rows))],
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


def _sensitivity(results: dict, store: Store) -> str | None:
    comps = results["sensitivity"]["comparisons"]
    if not comps:
        return None
    sde = results["config"]["table_sigma"]
    comp = comps.get(f"sde-{sde:g}") or next(iter(comps.values()))
    methods = list(comp["methods"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    for j, (key, label) in enumerate((("ode", "ODE"), ("sde", rf"SDE $\sigma$={sde:g}"))):
        cs = [comp["methods"][m][key] for m in methods]
        ax.bar(
            [i + (j - 0.5) * 0.38 for i in range(len(methods))],
            [c["mean"] for c in cs],
            0.38,
            yerr=[[c["mean"] - c["low"] for c in cs], [c["high"] - c["mean"] for c in cs]],
            capsize=3,
            label=label,
        )
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels([METHOD_TITLES.get(m, m) for m in methods], fontsize=8)
    ax.set_ylabel("max-sensitivity (95% CI over seeds)")
    ax.legend()
    return store.save_figure(fig, "sensitivity.png")


PLOTS = {
    "noise_robustness": _noise_robustness,
    "noise_sweep": _sweep,
    "theorem1": _theorem1,
    "completeness": _completeness,
    "sensitivity": _sensitivity,
    **EXPLAIN_PLOTS,
}


def plots(results: dict, store: Store) -> dict:
    """Every summary plot the results allow; returns name -> path (relative to the run's folder)."""
    made = {}
    for name, draw in PLOTS.items():
        path = draw(results, store)
        if path is not None:
            made[name] = path
    return made
