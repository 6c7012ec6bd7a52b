"""Summary plots of a run's results: the noise sweep, Theorem 1, completeness, sensitivity."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .common import save_png  # noqa: E402
from .config import METHOD_TITLES, sigma_of  # noqa: E402
from .store import Store  # noqa: E402

__all__ = ["plots"]


def plots(results: dict, store: Store) -> dict:
    """Summary plots (noise sweep, Theorem 1, sensitivity); returns name -> path."""
    made = {}
    sweep = results["noise_sweep"]
    if len(sweep) > 1:
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        sig = [r["sigma"] for r in sweep]
        axes[0].plot(sig, [r["test_accuracy"] for r in sweep], "o-")
        axes[0].set(xlabel="noise σ", ylabel="test accuracy", title="accuracy")
        for m in sweep[0]["sensitivity"]:
            axes[1].plot(sig, [r["sensitivity"].get(m, math.nan) for r in sweep], "o-", label=METHOD_TITLES.get(m, m))
        axes[1].set(xlabel="noise σ", ylabel="max-sensitivity", title="attribution sensitivity")
        axes[1].legend(fontsize=7)
        for s in sweep[0]["amplification"]:
            axes[2].plot(sig, [r["amplification"].get(s, math.nan) for r in sweep], "o-", label=s)
        axes[2].set(xlabel="noise σ", ylabel="mean measured ‖ΔF‖/‖Δx‖", title="amplification per stage")
        axes[2].legend(fontsize=7)
        path = store.figure("noise_sweep.png")
        save_png(fig, path)
        made["noise_sweep"] = str(path.relative_to(store.root))
    th = results["theorem1"]["per_model"]
    if th:
        labels, bound, onesided, measured = [], [], [], []
        for model, rows in sorted(th.items(), key=lambda kv: sigma_of(kv[0])):
            for r in rows:
                labels.append(f"{model}\n{r['stage']}")
                bound.append(r["bound"])
                onesided.append(r["bound_onesided"])
                measured.append(r["measured_max"])
        fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(labels)), 3.8))
        xs = range(len(labels))
        ax.bar([x - 0.27 for x in xs], bound, 0.27, label="e^{∫C} (Theorem 1)")
        ax.bar(list(xs), onesided, 0.27, label="one-sided bound")
        ax.bar([x + 0.27 for x in xs], measured, 0.27, label="measured amplification")
        ax.set_yscale("log")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(labels, fontsize=6)
        ax.set_ylabel("‖F(x+δ)−F(x)‖ / ‖δ‖")
        ax.legend(fontsize=7)
        ax.set_title("Theorem 1: bound vs measured, per network and stage")
        path = store.figure("theorem1.png")
        save_png(fig, path)
        made["theorem1"] = str(path.relative_to(store.root))
    comp = results["completeness"]
    if comp:
        names = ("integrated_gradients", "integrated_gradients_x10", "deeplift", "deeplift_shap")
        labels = {
            "integrated_gradients": f"IG ({results['config']['ig_steps']} steps)",
            "integrated_gradients_x10": f"IG ({10 * results['config']['ig_steps']} steps)",
            "deeplift": "DeepLIFT",
            "deeplift_shap": "DeepLIFT-SHAP",
        }
        rows = [
            (f"{model}\n{solver}", methods) for model, solvers in comp.items() for solver, methods in solvers.items()
        ]
        fig, ax = plt.subplots(figsize=(max(7, 1.8 * len(rows)), 4))
        width = 0.8 / (len(names) + 1)
        for j, name in enumerate(names):
            vals = [m[name]["residual"]["mean"] if name in m else math.nan for _, m in rows]
            ax.bar([i + (j - len(names) / 2) * width for i in range(len(rows))], vals, width, label=labels[name])
        ax.bar(
            [i + (len(names) / 2) * width for i in range(len(rows))],
            [m["output_change"]["mean"] for _, m in rows],
            width,
            color="0.6",
            label="|F(x') − F(x)|",
        )
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r for r, _ in rows], fontsize=6)
        ax.set_ylabel("mean residual")
        ax.set_title("Completeness residual |Σ(A(x') − A(x)) − (F(x') − F(x))|")
        ax.legend(fontsize=7, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.2))
        path = store.figure("completeness.png")
        save_png(fig, path)
        made["completeness"] = str(path.relative_to(store.root))
    comps = results["sensitivity"]["comparisons"]
    if comps:
        sde = results["config"]["table_sigma"]
        name = f"sde-{sde:g}"
        comp = comps.get(name) or next(iter(comps.values()))
        methods = list(comp["methods"])
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for j, (key, label) in enumerate((("ode", "ODE"), ("sde", f"SDE σ={sde:g}"))):
            means = [comp["methods"][m][key]["mean"] for m in methods]
            err = [
                [means[i] - comp["methods"][m][key]["low"] for i, m in enumerate(methods)],
                [comp["methods"][m][key]["high"] - means[i] for i, m in enumerate(methods)],
            ]
            ax.bar([i + (j - 0.5) * 0.38 for i in range(len(methods))], means, 0.38, yerr=err, capsize=3, label=label)
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels([METHOD_TITLES.get(m, m) for m in methods], fontsize=8)
        ax.set_ylabel("max-sensitivity (95% CI)")
        ax.legend()
        path = store.figure("sensitivity.png")
        save_png(fig, path)
        made["sensitivity"] = str(path.relative_to(store.root))
    return made
