"""Rank robustness of attributions: Kendall's τ and top-k intersection under random noise and attack."""

from __future__ import annotations

from ..networks import ODE, sigma_of
from ..store import Store
from .formatting import VERDICT_MARK, ci, markdown_table, number, title
from .section import Section
from .stats import finite_mean, mean_ci, seed_effect

__all__ = ["ROBUSTNESS"]


def summarise(store: Store, results: dict) -> dict:
    cfg = store.cfg
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
                    entry[metric] = mean_ci([finite_mean(v) for v in vals.values()])
                if ODE in series and cfg.table_sde.name in series:
                    comparisons.setdefault(method, {}).setdefault(setting, {})[metric] = seed_effect(
                        series[cfg.table_sde.name], series[ODE], sign=1, relative=False
                    )
    k = next((c["k"] for c in cells.values()), None)
    eps = next((c["epsilon"] for c in cells.values()), None)
    return {"robustness": {"per_model": per_model, "comparisons": comparisons, "k": k, "epsilon": eps}}


def tables(results: dict) -> list[str]:
    """Kendall tau and top-k intersection."""
    cfg = results["config"]
    rob = results["robustness"]
    if not rob.get("per_model"):
        return []
    rows = [
        [model, title(method), setting, ci(r["kendall"], 3), ci(r["topk"], 3)]
        for model, by_method in sorted(rob["per_model"].items(), key=lambda kv: sigma_of(kv[0]))
        for method, settings in by_method.items()
        for setting, r in settings.items()
    ]
    lines = [
        "## Rank robustness of attributions (Kendall τ and top-k intersection; higher is more robust)",
        "",
        f"ε = {number(rob['epsilon'], 3)}, k = {rob['k']}; mean over seeds [95% CI over seeds].",
        "",
        *markdown_table(["network", "method", "setting", "Kendall τ", "top-k ∩"], rows),
        "",
    ]
    if rob["comparisons"]:
        rows = [
            [
                title(method),
                setting,
                ci(c["kendall"]["effect"], 3),
                VERDICT_MARK[c["kendall"]["verdict"]],
                ci(c["topk"]["effect"], 3),
                VERDICT_MARK[c["topk"]["verdict"]],
            ]
            for method, settings in rob["comparisons"].items()
            for setting, c in settings.items()
        ]
        header = ["method", "setting", "Δ Kendall τ", "verdict", "Δ top-k ∩", "verdict"]
        lines += [
            f"{cfg['table_sigma']:g}-SDE − ODE, per seed, with the 95% CI over seeds (higher: the SDE is more robust):",
            "",
            *markdown_table(header, rows),
            "",
        ]
    return lines


ROBUSTNESS = Section("robustness", summarise, page="sensitivity", tables=tables)
