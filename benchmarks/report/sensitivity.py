"""The paper's central claim: SDE attributions are less sensitive (max-sensitivity, the paper's Tables 1-3)."""

from __future__ import annotations

from ..networks import ODE, sigma_of
from ..paper import PAPER_SENSITIVITY
from ..store import Store
from .formatting import (
    VERDICT_MARK,
    ci,
    effect,
    flags,
    in_run_order,
    markdown_table,
    percent,
    seeds_phrase,
    title,
)
from .plotting import plt
from .section import Section, verdict_row
from .stats import accuracy_flags, by_seed, finite_mean, log_effect, mean_ci, sensitivity_cells
from .verdicts import counts

__all__ = ["SENSITIVITY"]

PAPER_TABLES = {
    "resnet50": "Table 1, ResNet-50",
    "wide_resnet101_2": "Table 2, WideResNet-101-2",
    "resnext101_32x8d": "Table 3, ResNeXt-101-32x8d",
}
VERDICTS = ("holds", "fails", "depends")


def summarise(store: Store, results: dict) -> dict:
    """Per network and method the mean over seeds; per SDE network the effect against the ODE network, over seeds."""
    cfg, models = store.cfg, results["models"]
    cells = sensitivity_cells(store)
    names = sorted({c["model"] for c in cells.values()}, key=sigma_of)
    per_model = {}
    for m in names:
        per_model[m] = {}
        for method in cfg.methods:
            vals = by_seed(cells, m, method)
            if vals:
                seed_means = [finite_mean(v) for v in vals.values()]
                per_model[m][method] = {
                    **mean_ci(seed_means),
                    "images": mean_ci([x for v in vals.values() for x in v]),
                    "seed_means": seed_means,
                }
    comparisons = {}
    for sde in [n for n in names if sigma_of(n) > 0]:
        comp = {"accuracy_flags": accuracy_flags(models, ODE, sde), "methods": {}}
        for method in cfg.methods:
            a, b = by_seed(cells, sde, method), by_seed(cells, ODE, method)
            if a and b:
                comp["methods"][method] = {
                    "ode": per_model[ODE][method],
                    "sde": per_model[sde][method],
                    **log_effect(a, b, sign=-1),
                }
        comparisons[sde] = comp
    seconds: dict[str, float] = {}
    images: dict[str, int] = {}
    for cell in cells.values():
        seconds[cell["method"]] = seconds.get(cell["method"], 0.0) + (cell.get("seconds") or 0.0)
        images[cell["method"]] = images.get(cell["method"], 0) + len(cell["values"])
    return {
        "sensitivity": {
            "per_model": per_model,
            "comparisons": comparisons,
            "paper": PAPER_SENSITIVITY.get(cfg.arch) if cfg.imagenet else None,
            # Wall time of one image's max-sensitivity (all its perturbations), per method.
            "seconds_per_image": {m: seconds[m] / max(images[m], 1) for m in seconds},
            "images_per_cell": cfg.n_images,
            "repetitions": cfg.repetitions,
        }
    }


def verdicts(results: dict) -> list[dict]:
    rows = []
    for sde, comp in results["sensitivity"]["comparisons"].items():
        flagged = comp["accuracy_flags"]
        note = f"unequal accuracy in seed(s) {', '.join(map(str, flagged))}" if flagged else ""
        for method, r in in_run_order(comp["methods"], results):
            rows.append(
                verdict_row(
                    "SDE attributions are less sensitive (secondary, per σ)",
                    f"{title(method)}, σ = {sigma_of(sde):g}",
                    r["verdict"],
                    r["effect"],
                    "relative",
                    r["agree"],
                    r["seeds"],
                    note + (" (one seed: image-level CI)" if r["level"] == "images" else ""),
                )
            )
    return rows


def tables(results: dict) -> list[str]:
    """The sensitivity tables (the paper's Tables 1-3 protocol), decided over seeds."""
    cfg = results["config"]
    sens = results["sensitivity"]
    if not sens["comparisons"]:
        return []
    lines = [
        "## Sensitivity (max-sensitivity, lower is more robust)",
        "",
        f"{sens['images_per_cell']} correctly classified test images × {sens['repetitions']} repetition(s) per "
        f"seed, {seeds_phrase(results)}; perturbation radius {cfg['radius']} (L∞, input units), {cfg['n_perturb']} "
        "perturbations. ODE and SDE: the mean over seeds of each seed's mean [95% CI over seeds], as the paper "
        "reports them. 'SDE vs ODE': per seed, the SDE network's geometric mean over images ÷ the ODE network's, "
        "minus 1, with its 95% CI over seeds and the seed-to-seed standard deviation of its logarithm; this "
        "decides the verdict. 'Images': the same ratio with the CI over the paired images of all seeds pooled, "
        "which ignores training-run variation"
        + (" and decides with one training seed." if len(results["seeds"]) < 2 else "; for comparison only."),
        "",
    ]
    paper = sens["paper"]
    header = ["method", "ODE", "SDE", "SDE vs ODE [95% CI over seeds]", "seed sd", "seeds lower"]
    header += ["images: SDE vs ODE [95% CI]", "verdict"] + (["paper ODE → SDE"] if paper else [])
    for sde, comp in sens["comparisons"].items():
        rows = []
        for method, r in comp["methods"].items():
            row = [title(method), ci(r["ode"]), ci(r["sde"]), effect(r["effect"], "relative")]
            row += [percent(r["effect"]["sd"]), f"{r['agree']}/{r['seeds']}", effect(r["image"], "relative")]
            row += [VERDICT_MARK[r["verdict"]]]
            if paper:
                pv = paper.get(method)
                row.append(f"{pv[0]:.4f} → {pv[1]:.4f}" if pv else "–")
            rows.append(row)
        lines += [f"### ODE vs {sde}{flags(comp['accuracy_flags'])}", "", *markdown_table(header, rows), ""]
    return lines


def page_table(results: dict) -> list[str]:
    """The sensitivity verdicts as a method × σ table: effect [95% CI over seeds], verdict, seeds lower."""
    comps = results["sensitivity"]["comparisons"]
    if not comps:
        return []
    sdes = sorted(comps, key=sigma_of)
    methods = [m for m, _ in in_run_order({m: 0 for s in sdes for m in comps[s]["methods"]}, results)]
    rows = []
    for m in methods:
        cells = []
        for s in sdes:
            r = comps[s]["methods"].get(m)
            one = " (image CI)" if r and r["level"] == "images" else ""
            cells.append(
                f"{VERDICT_MARK[r['verdict']]}: {effect(r['effect'], 'relative')}, {r['agree']}/{r['seeds']}{one}"
                if r
                else "–"
            )
        rows.append([title(m), *cells])
    header = ["SDE attributions less sensitive?", *(f"σ = {sigma_of(s):g}" for s in sdes)]
    flagged = sorted({seed for s in sdes for seed in comps[s]["accuracy_flags"]})
    lines = [*markdown_table(header, rows), ""]
    lines.append(
        "Each cell: the verdict, the SDE network's max-sensitivity against the ODE network's (per seed the ratio "
        "of geometric means over images, minus 1; 95% CI over seeds) and the seeds whose own change is a decrease."
        + (
            f" Seed(s) {', '.join(map(str, flagged))}: the two networks' accuracies differ by more than "
            f"{100 * results['accuracy_gap']:g} points for at least one σ (see Networks below)."
            if flagged
            else ""
        )
    )
    lines += ["", counts([r for s in sdes for r in comps[s]["methods"].values()])]
    return lines


def summary(results: dict) -> str:
    """One sentence per SDE network: for how many methods it is less (or more) sensitive, over seeds."""
    comps = results["sensitivity"]["comparisons"]
    if not comps:
        return "No sensitivity results in this run."
    parts = []
    for sde, comp in comps.items():
        by = {v: [title(m) for m, r in comp["methods"].items() if r["verdict"] == v] for v in VERDICTS}
        text = (
            f"{sde}: less sensitive than the ODE network for {len(by['holds'])} of {len(comp['methods'])} methods"
            + (f" ({', '.join(by['holds'])})" if by["holds"] else "")
        )
        if by["fails"]:
            text += f", more sensitive for {', '.join(by['fails'])}"
        if comp["accuracy_flags"]:
            text += f" (unequal accuracy in seed(s) {', '.join(map(str, comp['accuracy_flags']))})"
        parts.append(text)
    return (
        f"Over {len(results['seeds'])} training seeds, with the 95% CI of the per-seed relative change — "
        + "; ".join(parts)
        + "."
    )


def paper_tables(results: dict) -> str:
    """The paper's published values (Tables 1-3) as one Markdown table."""
    rows = [
        [PAPER_TABLES[arch], title(method), f"{ode:.4f}", f"{sde:.4f}"]
        for arch, methods in PAPER_SENSITIVITY.items()
        for method, (ode, sde) in methods.items()
    ]
    return "\n".join(markdown_table(["architecture", "method", "ODE", "SDE"], rows))


def _sigmas(comps: dict) -> list[str]:
    """The SDE networks of the comparisons, by σ."""
    return sorted(comps, key=sigma_of)


def _noise_robustness(results: dict, store: Store) -> str | None:
    """Does noise make attributions more robust? The effect per method against σ, and the accuracy beside it."""
    comps = results["sensitivity"]["comparisons"]
    sweep = results["noise_sweep"]
    if not comps:
        return None
    sdes = _sigmas(comps)
    methods = list(comps[sdes[0]]["methods"])
    fig, (ax, acc_ax) = plt.subplots(
        2, 1, figsize=(8.4, 6.2), sharex=True, gridspec_kw={"height_ratios": [3, 1.2], "hspace": 0.08}
    )
    spread = 0.012 * max(sigma_of(s) for s in sdes)
    for i, m in enumerate(methods):
        shift = (i - (len(methods) - 1) / 2) * spread
        rows = [(sigma_of(s), comps[s]["methods"][m]) for s in sdes if m in comps[s]["methods"]]
        xs = [0.0] + [x + shift for x, _ in rows]
        ys = [0.0] + [100 * r["effect"]["mean"] for _, r in rows]
        ax.plot(xs, ys, color=f"C{i}", lw=1.2, label=title(m))
        for x, r in rows:
            e = r["effect"]
            decided = r["verdict"] != "depends"
            ax.errorbar(
                x + shift,
                100 * e["mean"],
                yerr=[[100 * (e["mean"] - e["low"])], [100 * (e["high"] - e["mean"])]],
                color=f"C{i}",
                marker="o",
                ms=7 if decided else 6,
                mfc=f"C{i}" if decided else "white",
                capsize=3,
                lw=1,
            )
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_ylabel("max-sensitivity, SDE vs ODE (%)\n95% CI over seeds")
    ax.set_title(f"Does noise make attributions more robust? ({len(results['seeds'])} training seeds)")
    ax.plot([], [], "o", color="0.3", mfc="0.3", label="decided (interval excludes 0)")
    ax.plot([], [], "o", color="0.3", mfc="white", label="depends")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    sig = [r["sigma"] for r in sweep]
    acc = [r["test_accuracy"] for r in sweep]
    acc_ax.errorbar(
        sig,
        [100 * a["mean"] for a in acc],
        yerr=[[100 * (a["mean"] - a["low"]) for a in acc], [100 * (a["high"] - a["mean"]) for a in acc]],
        color="0.35",
        ls="--",
        marker="s",
        capsize=3,
    )
    acc_ax.set_ylabel("test accuracy (%)\n95% CI over seeds")
    acc_ax.set_xlabel(r"noise $\sigma$ (0: the ODE network)")
    return store.save_figure(fig, "noise_robustness.png")


def _sensitivity(results: dict, store: Store) -> str | None:
    """The max-sensitivity of each network, one panel per method, with each SDE network's effect above its bar."""
    comps = results["sensitivity"]["comparisons"]
    if not comps:
        return None
    sdes = _sigmas(comps)
    methods = list(comps[sdes[0]]["methods"])
    fig, axes = plt.subplots(1, len(methods), figsize=(2.3 * len(methods) + 0.6, 3.6), squeeze=False)
    labels = ["ODE", *(f"{sigma_of(s):g}" for s in sdes)]
    for ax, m in zip(axes[0], methods):
        rows = [comps[s]["methods"].get(m) for s in sdes]
        ode = next(r["ode"] for r in rows if r)
        cs = [ode] + [r["sde"] if r else None for r in rows]
        ax.bar(
            range(len(cs)),
            [c["mean"] if c else 0 for c in cs],
            0.7,
            yerr=[[c["mean"] - c["low"] if c else 0 for c in cs], [c["high"] - c["mean"] if c else 0 for c in cs]],
            capsize=3,
            color=["0.55"] + [f"C{k}" for k in range(len(sdes))],
        )
        top = max(c["high"] for c in cs if c)
        for k, r in enumerate(rows, start=1):
            if r:
                decided = r["verdict"] != "depends"
                ax.text(
                    k,
                    top * 1.04,
                    percent(r["effect"]["mean"]),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                    fontweight="bold" if decided else "normal",
                )
        ax.set_ylim(0, top * 1.35)
        ax.set_xticks(range(len(cs)))
        ax.set_xticklabels(labels, fontsize=8)
        ax.set_title(title(m), fontsize=9)
        ax.set_xlabel(r"network ($\sigma$)", fontsize=8)
    axes[0][0].set_ylabel("max-sensitivity (95% CI over seeds)")
    fig.suptitle(
        "Max-sensitivity per network; above each SDE bar its effect against the ODE (bold: decided)", fontsize=10
    )
    fig.tight_layout()
    return store.save_figure(fig, "sensitivity.png")


SENSITIVITY = Section(
    "sensitivity",
    summarise,
    page="sensitivity",
    verdicts=verdicts,
    tables=tables,
    plots={"noise_robustness": _noise_robustness, "sensitivity": _sensitivity},
    fills={"sensitivity_summary": summary, "paper_tables": paper_tables},
    page_table=page_table,
)
