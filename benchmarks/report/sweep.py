"""The noise sweep: accuracy, sensitivity and amplification against σ, and the claim that noise costs accuracy."""

from __future__ import annotations

import math

from ..networks import ODE, Network, sigma_of
from ..store import Store
from .formatting import ci, markdown_table, title
from .plotting import plt
from .section import Section, verdict_row
from .stats import seed_effect

__all__ = ["SWEEP"]


def summarise(store: Store, results: dict) -> dict:
    """One row per digits network (by σ), and per SDE network its accuracy against the ODE network's."""
    cfg, models = store.cfg, results["models"]
    sens, th = results["sensitivity"], results["theorem1"]
    rows = []
    for name in sorted((n for n in models if not Network.parse(n).shapes), key=sigma_of):
        by_method = sens["per_model"].get(name, {})
        rows.append(
            {
                "model": name,
                "sigma": sigma_of(name),
                "test_accuracy": models[name]["test_accuracy"],
                "sensitivity": {m: by_method[m] for m in cfg.methods if m in by_method},
                "amplification": {r["stage"]: r["measured_mean"] for r in th["per_model"].get(name, [])},
            }
        )
    claims = {}
    ode = models.get(ODE, {}).get("accuracy", {})
    for name in (n.name for n in cfg.table_networks() if not n.is_ode):
        acc = models.get(name, {}).get("accuracy", {})
        if acc and ode:
            # The cost: the ODE network's accuracy minus the SDE network's, so that its sign and
            # the seeds counted ("a cost in k of n seeds") speak the same way.
            claims[name] = seed_effect(
                {int(s): [v] for s, v in ode.items()}, {int(s): [v] for s, v in acc.items()}, sign=1, relative=False
            )
    return {"noise_sweep": rows, "accuracy": claims}


def verdicts(results: dict) -> list[dict]:
    rows = []
    for sde, r in results["accuracy"].items():
        one = r["seeds"] < 2
        rows.append(
            verdict_row(
                "noise costs accuracy",
                f"σ = {sigma_of(sde):g}, ODE − SDE test accuracy",
                "depends" if one else r["verdict"],
                r["effect"],
                "accuracy",
                r["agree"],
                r["seeds"],
                "one training seed: one accuracy per network, no interval" if one else "",
            )
        )
    return rows


def tables(results: dict) -> list[str]:
    """The noise sweep."""
    sweep = results["noise_sweep"]
    if len(sweep) < 2:
        return []
    methods = list(sweep[0]["sensitivity"])
    stages = list(sweep[0]["amplification"])
    rows = [
        [
            f"{row['sigma']:g}",
            ci(row["test_accuracy"]),
            *(ci(row["sensitivity"][m], 3) if m in row["sensitivity"] else "–" for m in methods),
            *(ci(row["amplification"][s], 3) if s in row["amplification"] else "–" for s in stages),
        ]
        for row in sweep
    ]
    header = ["σ", "accuracy", *(title(m) for m in methods), *(f"amplification {s}" for s in stages)]
    return ["## Noise sweep", "", "Means over seeds [95% CI over seeds].", "", *markdown_table(header, rows), ""]


def summary(results: dict) -> str:
    rows = results["noise_sweep"]
    if len(rows) < 2:
        return "No noise sweep in this run."
    acc = [r["test_accuracy"]["mean"] for r in rows]
    first, last = rows[0], rows[-1]
    drops = [
        f"{title(m)} {first['sensitivity'][m]['mean']:.3f} → {last['sensitivity'][m]['mean']:.3f}"
        for m in first["sensitivity"]
        if m in last["sensitivity"]
    ]
    return (
        rf"From $\sigma = {first['sigma']:g}$ to $\sigma = {last['sigma']:g}$ the mean test accuracy over seeds ranges "
        f"over {min(acc):.4f}–{max(acc):.4f}, while the mean max-sensitivity goes {', '.join(drops)}."
    )


def _errorbars(ax, xs, cs, label) -> None:
    ax.errorbar(
        xs,
        [c["mean"] if c else math.nan for c in cs],
        yerr=[[c["mean"] - c["low"] if c else 0 for c in cs], [c["high"] - c["mean"] if c else 0 for c in cs]],
        marker="o",
        capsize=3,
        label=label,
    )


def _plot(results: dict, store: Store) -> str | None:
    sweep = results["noise_sweep"]
    if len(sweep) < 2:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    sig = [r["sigma"] for r in sweep]
    for m in sweep[0]["sensitivity"]:
        _errorbars(axes[0], sig, [r["sensitivity"].get(m) for r in sweep], title(m))
    axes[0].set(xlabel=r"noise $\sigma$", ylabel="max-sensitivity", title="attribution sensitivity (95% CI over seeds)")
    axes[0].legend(fontsize=7)
    for s in sweep[0]["amplification"]:
        _errorbars(axes[1], sig, [r["amplification"].get(s) for r in sweep], s)
    axes[1].set(
        xlabel=r"noise $\sigma$",
        ylabel=r"mean measured $\|\Delta F\| / \|\Delta x\|$",
        title="amplification per stage (95% CI over seeds)",
    )
    axes[1].legend(fontsize=7)
    return store.save_figure(fig, "noise_sweep.png")


SWEEP = Section(
    "noise_sweep",
    summarise,
    page="noise",
    verdicts=verdicts,
    tables=tables,
    plots={"noise_sweep": _plot},
    fills={"sweep_summary": summary},
)
