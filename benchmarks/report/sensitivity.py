"""The paper's central claim: SDE attributions are less sensitive (max-sensitivity, the paper's Tables 1-3)."""

from __future__ import annotations

from ..config import sigma_of
from ..paper import PAPER_SENSITIVITY
from ..store import Store
from .formatting import VERDICT_MARK, ci, diff, effect, flags, markdown_table, percent, seeds_phrase, title
from .plotting import plt
from .section import Section, verdict_row
from .stats import accuracy_flags, by_seed, finite_mean, mean_ci, seed_effect

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
    cells = store.results("sensitivity")
    # Repetitions of one seed are concatenated in repetition order, for every network alike.
    cells = dict(sorted(cells.items(), key=lambda kv: (kv[1]["seed"], kv[1]["rep"])))
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
    for sde in [n for n in names if n.startswith("sde")]:
        comp = {"accuracy_flags": accuracy_flags(models, "ode", sde), "methods": {}}
        for method in cfg.methods:
            a, b = by_seed(cells, sde, method), by_seed(cells, "ode", method)
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
        for method, r in comp["methods"].items():
            rows.append(
                verdict_row(
                    "SDE attributions are less sensitive",
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
        "perturbations. ODE and SDE: the mean over seeds of each seed's mean [95% CI over seeds]. 'SDE vs ODE': "
        "the per-seed relative change, its 95% CI over seeds and its seed-to-seed standard deviation. "
        "'Images': the SDE − ODE difference with the CI over all images pooled, which ignores training-run "
        "variation and is shown for comparison only.",
        "",
    ]
    paper = sens["paper"]
    header = ["method", "ODE", "SDE", "SDE vs ODE [95% CI over seeds]", "seed sd", "seeds lower"]
    header += ["images: SDE − ODE [95% CI]", "verdict"] + (["paper ODE → SDE"] if paper else [])
    for sde, comp in sens["comparisons"].items():
        rows = []
        for method, r in comp["methods"].items():
            row = [title(method), ci(r["ode"]), ci(r["sde"]), effect(r["effect"], "relative")]
            row += [percent(r["effect"]["sd"]), f"{r['agree']}/{r['seeds']}", diff(r["image"])]
            row += [VERDICT_MARK[r["verdict"]]]
            if paper:
                pv = paper.get(method)
                row.append(f"{pv[0]:.4f} → {pv[1]:.4f}" if pv else "–")
            rows.append(row)
        lines += [f"### ODE vs {sde}{flags(comp['accuracy_flags'])}", "", *markdown_table(header, rows), ""]
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
        ax.errorbar([x + offsets[m] for x in xs], ys, yerr=[lo, hi], marker="o", capsize=3, label=title(m))
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
    ax.set_xticklabels([title(m) for m in methods], fontsize=8)
    ax.set_ylabel("max-sensitivity (95% CI over seeds)")
    ax.legend()
    return store.save_figure(fig, "sensitivity.png")


SENSITIVITY = Section(
    "sensitivity",
    summarise,
    page="sensitivity",
    verdicts=verdicts,
    tables=tables,
    plots={"noise_robustness": _noise_robustness, "sensitivity": _sensitivity},
    fills={"sensitivity_summary": summary, "paper_tables": paper_tables},
)
