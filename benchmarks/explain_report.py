"""The "What explains it" tables, conclusion and figures, from ``results.json``."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .common import number, percent  # noqa: E402
from .config import METHOD_TITLES, sigma_of  # noqa: E402
from .store import Store  # noqa: E402

__all__ = ["PLOTS", "explain_conclusion", "section_explains"]

STATEMENT_TITLES = {
    "network": "network (discrete)",
    "pathwise": "SDE pathwise (noise on)",
    "flow_log_norm": "flow, log-norm",
    "flow_blocks": "flow, block product",
}


def _ok(x) -> bool:
    """A number, not None (an undefined value in results.json) nor NaN."""
    return x is not None and math.isfinite(x)


def _num(x) -> float:
    return x if _ok(x) else math.nan


def _f(x, digits=2) -> str:
    return number(x, digits, small=0.0)  # correlations and ratios: "0.00", never 6e-04


def _rel(e: dict) -> str:
    return f"{percent(e['mean'])} [{percent(e['low'])}, {percent(e['high'])}]"


def _sure(e: dict) -> int:
    """+1 / -1 where the seed interval lies above / below 0, else 0."""
    low, high = e["log"]["low"], e["log"]["high"]
    if not (_ok(low) and _ok(high)):
        return 0
    return 1 if low > 0 else -1 if high < 0 else 0


def _sdes(mech: dict) -> list[str]:
    """The SDE networks, by σ."""
    return sorted(mech["sigmas"], key=sigma_of)


def _methods(mech: dict) -> list[str]:
    """The attribution methods, in the run's order."""
    return [m for m in mech.get("methods", []) if m in mech["decomposition"]] or sorted(mech["decomposition"])


def _sigma(name: str) -> str:
    return f"σ = {sigma_of(name):g}"


def _bound_table(lb: dict) -> list[str]:
    lines = [
        "| stage | statement | median | 10% | 90% | min | max | images |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for stage, rows in lb["stages"].items():
        for s, title in STATEMENT_TITLES.items():
            q = rows.get(s)
            if q and q["n"]:
                lines.append(
                    f"| {stage} | {title} | {_f(q['q50'])} | {_f(q['q10'])} | {_f(q['q90'])} | {_f(q['q0'], 3)} "
                    f"| {_f(q['q100'])} | {q['n']} |"
                )
    return lines


def _decomposition_table(mech: dict) -> list[str]:
    lines = [
        "| method | σ | max-sensitivity | numerator: change | denominator: norm |",
        "|---|---|---|---|---|",
    ]
    for method in _methods(mech):
        for sde in _sdes(mech):
            parts = mech["decomposition"][method][sde]
            cells = [_rel(parts[p]) for p in ("sens", "change", "norm")]
            lines.append(f"| {METHOD_TITLES.get(method, method)} | {sigma_of(sde):g} | " + " | ".join(cells) + " |")
    return lines


def _levels_table(mech: dict) -> list[str]:
    stages = mech["stages"]
    keys = [f"flip:{s}" for s in stages] + ["margin", "logit_margin", "grad_norm", "jacobian"]
    titles = [f"flips {s}" for s in stages] + [
        "margin ÷ change",
        "logit margin",
        "‖∇x logit‖",
        "‖∂F/∂x‖ (geo. mean of stages)",
    ]
    lines = ["| network | " + " | ".join(titles) + " |", "|---|" + "---|" * len(titles)]
    names = list(mech["levels"][keys[0]])
    for name in names:
        cells = []
        for key in keys:
            v = mech["levels"][key][name]
            digits = 4 if key.startswith("flip") else 3
            cells.append(f"{_f(v['mean'], digits)} [{_f(v['low'], digits)}, {_f(v['high'], digits)}]")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Effect of the noise (SDE against the same seed's ODE network, 95% CI over seeds):", ""]
    lines += ["| candidate | " + " | ".join(_sigma(s) for s in _sdes(mech)) + " |"]
    lines += ["|---|" + "---|" * len(_sdes(mech))]
    for key, title in zip(keys, titles):
        lines.append(f"| {title} | " + " | ".join(_rel(mech["effects"][key][s]) for s in _sdes(mech)) + " |")
    return lines


def _margins_table(mech: dict) -> list[str]:
    """Per stage, the distribution of pre-activation margins against the change a perturbation makes."""
    names = list(mech["levels"]["flip"])
    lines = [
        "| stage | network | median \\|z\\| | 10% quantile of \\|z\\| | RMS change of z "
        "| median \\|z\\| ÷ change | flips |",
        "|---|---|---|---|---|---|---|",
    ]
    for stage in mech["stages"]:
        for name in names:
            cells = [mech["levels"][f"{k}:{stage}"][name]["mean"] for k in ("zmedian", "zq10", "dz", "margin", "flip")]
            digits = [3, 3, 4, 2, 4]
            lines.append(f"| {stage} | {name} | " + " | ".join(_f(v, d) for v, d in zip(cells, digits)) + " |")
    return lines


def _correlation_table(mech: dict) -> list[str]:
    methods = _methods(mech)
    lines = [
        "| candidate (its effect, log ratio) | " + " | ".join(METHOD_TITLES.get(m, m) for m in methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for pred, title in mech["predictors"]:
        cells = []
        for m in methods:
            c = mech["correlations"][pred][m]
            cells.append(f"{_f(c['r'])} [{_f(c['low'])}, {_f(c['high'])}]")
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return lines


def section_explains(results: dict) -> list[str]:
    """Local bounds, the sensitivity's two factors, the activation pattern, and the correlations."""
    lb, mech = results.get("local_bound"), results.get("mechanism")
    if not lb or not lb.get("stages"):
        return []
    out = ["## What explains it", "", "### Local Theorem 1: bound ÷ measured Jacobian norm, per image", ""]
    out += [f"- **{title}**: {lb['statements'][s]}." for s, title in STATEMENT_TITLES.items() if s in lb["statements"]]
    out += ["", *_bound_table(lb), ""]
    below = ", ".join(f"{title} {lb['below'][s]}" for s, title in STATEMENT_TITLES.items() if s in lb["below"])
    out += [f"Images whose bound lies below its measured value (beyond a relative {lb['slack']:g}): {below}.", ""]
    if not mech:
        return out
    seeds = len(results["seeds"])
    out += [
        "### The sensitivity's two factors",
        "",
        f"Max-sensitivity = max ‖A(x+δ) − A(x)‖ ÷ ‖A(x)‖. Effects are SDE ÷ ODE − 1 of geometric means over "
        f"images, 95% CI over {seeds} seeds; the sensitivity's effect is the numerator's divided by the denominator's.",
        "",
        *_decomposition_table(mech),
        "",
        "### Activation pattern, margins and gradients",
        "",
        "Geometric mean over seeds [95% CI]: the fraction of ReLU units whose state flips under one perturbation "
        "of the sensitivity protocol, per stage; the median pre-activation margin |z| over the RMS change a "
        "perturbation makes to z; the logit margin; the input-gradient norm of the explained logit; the local "
        "Jacobian norm.",
        "",
        *_levels_table(mech),
        "",
        "Pre-activation margins per stage (geometric means over images, then over seeds; per image the median and "
        "the 10% quantile of |z| over the stage's ReLU inputs, and the RMS change of z under one perturbation):",
        "",
        *_margins_table(mech),
        "",
        "### Which candidate predicts the sensitivity difference",
        "",
        "Pearson's r between a candidate's effect and the max-sensitivity's effect, over the (seed, σ) points of "
        "the SDE networks; 95% interval from a bootstrap over seeds.",
        "",
        *_correlation_table(mech),
        "",
    ]
    return out


def _list(items: list[str]) -> str:
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else (items[0] if items else "none")


def _bound_paragraph(results: dict, lb: dict) -> str:
    def medians(statement: str) -> str:
        return "; ".join(f"{s} {_f(r[statement]['q50'])}" for s, r in lb["stages"].items() if statement in r)

    below = lb["below"]
    th = results.get("theorem1", {}).get("bound_over_measured", {})
    text = (
        "**Local bounds.** Along each image's own trajectory, the product of the block Jacobian norms bounds "
        f"the network's stage Jacobian norm within a median factor of {medians('network')} "
        f"(goal ≤ {_f(lb['goal'], 0)}: {'met' if lb['meets_goal']['network'] else 'not met'} in every stage). "
        f"For the continuous flow of the drift, the integrated logarithmic norm is within {medians('flow_log_norm')} "
        f"({'met' if lb['meets_goal']['flow_log_norm'] else 'not met'} in every stage), and the product of the "
        f"blocks' flow maps within {medians('flow_blocks')}. The gap between the last two is the logarithmic "
        "norm's own slack, which arises inside the blocks: there it measures the fastest instantaneous growth of "
        "a far from normal Jacobian, not the growth the trajectory sees. "
    )
    text += (
        "No bound fell below its measured value for any image."
        if not sum(below.values())
        else f"Bounds below their measured value: {below}."
    )
    if th and _ok(th.get("min")):
        text += (
            f" Theorem 1's global bound exceeds the measured amplification {_f(th['min'], 1)} to "
            f"{_f(th['max'], 1)} times."
        )
    return text


def _amplification_paragraph(mech: dict) -> str:
    sigmas = _sdes(mech)
    jac = mech["effects"]["jacobian"]
    grad = mech["effects"]["grad_norm"]
    up = [_sigma(s) for s in sigmas if _sure(jac[s]) > 0]
    text = (
        "**Amplification.** Theorem 1's argument needs the noise-trained network to amplify perturbations less. "
        "Its stages' local Jacobian norms (geometric mean over stages) change by "
        + ", ".join(f"{_rel(jac[s])} at {_sigma(s)}" for s in sigmas)
        + "; "
        + (f"they are larger, across seeds, at {_list(up)}." if up else "no change is clear across seeds.")
    )
    text += (
        " The input gradient of the explained logit, which passes through the same stages and then the "
        "classifier, changes by " + ", ".join(f"{_rel(grad[s])}" for s in sigmas) + " at the same σ."
    )
    corr = mech["correlations"]["jacobian"]
    rs = [c["r"] for c in corr.values() if _ok(c["r"])]
    if rs:
        sign = "negative" if max(rs) < 0 else "positive" if min(rs) > 0 else "mixed in sign"
        text += (
            f" Across seeds and σ, the stage amplification's effect correlates with the sensitivity's effect "
            f"with r from {_f(min(rs))} to {_f(max(rs))} over the methods ({sign})."
        )
    if up and rs and max(rs) < 0:
        text += " Stage amplification therefore cannot be the mechanism: it moves the other way."
    return text


def _decomposition_paragraph(mech: dict) -> str:
    cases = [(m, s, mech["decomposition"][m][s]) for m in _methods(mech) for s in _sdes(mech)]
    lower = [(m, s, p) for m, s, p in cases if _sure(p["sens"]) < 0]
    if not lower:
        return (
            "**The two factors.** No (method, σ) case has a max-sensitivity lower for the SDE network across "
            "seeds, so there is nothing to decompose."
        )
    change_down = [c for c in lower if _sure(c[2]["change"]) < 0]
    norm_up = [c for c in lower if _sure(c[2]["norm"]) > 0]
    norm_down = [c for c in lower if _sure(c[2]["norm"]) < 0]
    norm_not_up = [c for c in lower if _ok(c[2]["norm"]["mean"]) and c[2]["norm"]["mean"] <= 0]
    names = [f"{METHOD_TITLES.get(m, m)} at {_sigma(s)}" for m, s, _ in lower]
    text = (
        f"**The two factors.** Of {len(cases)} (method, σ) cases, {len(lower)} have a max-sensitivity lower for "
        f"the SDE network across seeds ({_list(names)}). In {len(change_down)} of them the numerator, the "
        f"attribution's change under perturbation, falls across seeds; the denominator, the attribution's norm, "
        f"rises in {len(norm_up)}, falls on average in {len(norm_not_up)} and falls across seeds in "
        f"{len(norm_down)}."
    )
    if len(norm_not_up) == len(lower):
        text += (
            " Noise does not lower the sensitivity by inflating the attributions: it shrinks them, and it shrinks "
            "their change under perturbation more."
        )
    return text


def _pattern_paragraph(mech: dict) -> str:
    sigmas = _sdes(mech)
    last = sigmas[-1]
    per_stage = [f"{st} {_rel(mech['effects'][f'flip:{st}'][last])}" for st in mech["stages"]]
    text = (
        f"**The activation pattern.** At {_sigma(last)} the fraction of ReLUs that flip under a perturbation "
        f"changes by: {'; '.join(per_stage)}. The margin over its change (geometric mean over stages) changes by "
        + ", ".join(_rel(mech["effects"]["margin"][s]) for s in sigmas)
        + " from the smallest σ to the largest."
    )
    return text


def _predictor_paragraph(mech: dict) -> str:
    best = []
    for method in _methods(mech):
        ranked = []
        for pred, title in mech["predictors"]:
            if "{method}" in pred:
                continue  # the numerator and denominator are the sensitivity itself
            c = mech["correlations"][pred][method]
            if _ok(c["low"]) and (c["low"] > 0 or c["high"] < 0):
                ranked.append((abs(c["r"]), title, c))
        if ranked:
            _, title, c = max(ranked, key=lambda t: t[0])
            interval = f"[{_f(c['low'])}, {_f(c['high'])}]"
            best.append(f"{METHOD_TITLES.get(method, method)}: {title} (r = {_f(c['r'])} {interval})")
        else:
            best.append(f"{METHOD_TITLES.get(method, method)}: none whose interval excludes 0")
    return (
        "**What predicts it.** The candidate most correlated with the sensitivity's effect across seeds and σ, "
        "per method, among those whose bootstrap interval excludes 0 (for Saliency the input-gradient norm is "
        "its denominator): " + "; ".join(best) + "."
    )


def _best_predictors(mech: dict) -> dict[str, str]:
    """Per method, the non-trivial candidate with the largest |r| whose interval excludes 0."""
    out = {}
    for method in _methods(mech):
        ranked = [
            (abs(c["r"]), pred)
            for pred, _ in mech["predictors"]
            if "{method}" not in pred
            for c in [mech["correlations"][pred][method]]
            if _ok(c["low"]) and (c["low"] > 0 or c["high"] < 0)
        ]
        if ranked:
            out[method] = max(ranked)[1]
    return out


def _short(mech: dict) -> str:
    """One paragraph: which mechanism the data support, beside Theorem 1's."""
    sigmas = _sdes(mech)
    amp_up = any(_sure(mech["effects"]["jacobian"][s]) > 0 for s in sigmas)
    lower = [p for rows in mech["decomposition"].values() for p in rows.values() if _sure(p["sens"]) < 0]
    change = (
        lower
        and all(_sure(p["change"]) < 0 for p in lower)
        and all(_ok(p["norm"]["mean"]) and p["norm"]["mean"] <= 0 for p in lower)
    )
    best = _best_predictors(mech)
    text = "**In short.** "
    text += (
        "Theorem 1 proposes that noise makes the network amplify perturbations less; here the stages amplify them "
        "more, so that is not why the attributions are less sensitive. "
        if amp_up
        else "Theorem 1 proposes that noise makes the network amplify perturbations less; the measured stage "
        "amplification does not settle whether it does. "
    )
    if change:
        text += (
            "Where the sensitivity falls, it falls because the attributions change less under perturbation, by "
            "more than they shrink, not because they grow. "
        )
    pattern = {m: p for m, p in best.items() if p.split(":")[0] in ("flip", "margin")}
    if best and len(pattern) == len(best):
        where = sorted({p.split(":")[1] if ":" in p else "all stages pooled" for p in pattern.values()})
        text += (
            f"For {'every one' if len(best) == len(_methods(mech)) else 'each'} of the {len(best)} methods with a "
            "clear predictor, the candidate that best tracks the sensitivity's changes across seeds and σ measures "
            "how stable the ReLU activation pattern is under the perturbation (the fraction of units that flip, or "
            f"the margin over its change), in {_list(where)}: a property of the local activation pattern, not of "
            "Lipschitz constants."
        )
    elif best:
        titles = dict(mech["predictors"])
        listing = "; ".join(f"{METHOD_TITLES.get(m, m)}: {titles[p]}" for m, p in best.items())
        text += f"The candidates that best track the sensitivity's changes across seeds and σ are: {listing}."
    return text


def explain_conclusion(results: dict) -> str:
    """What the data support, in sentences built from the numbers (Markdown)."""
    lb, mech = results.get("local_bound") or {}, results.get("mechanism") or {}
    if not lb.get("stages") or not mech:
        return "This run has no local bounds or mechanism measures."
    parts = [
        _short(mech),
        _bound_paragraph(results, lb),
        _amplification_paragraph(mech),
        _decomposition_paragraph(mech),
        _pattern_paragraph(mech),
        _predictor_paragraph(mech),
        "**What is and is not established.** Established for these small digits networks and their training "
        "seeds: the local bounds and how tight they are, and the direction of every effect whose interval "
        "excludes 0. Not established: causation, because the correlations run over few seeds and four noise "
        "levels and the candidates move together; a percentile bootstrap over so few seeds tends to give "
        "intervals that are too narrow; and with a dozen candidates per method, one of them clears the bar by "
        "chance more easily than any single one would. Nor is it established that ImageNet-scale networks behave "
        "the same way.",
    ]
    return "\n\n".join(parts)


def _bound_plot(results: dict, store: Store) -> str | None:
    lb = results.get("local_bound")
    if not lb or not lb.get("points", {}).get("network"):
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ax = axes[0]
    markers = {"network": ("o", "network: product of block norms"), "flow_log_norm": ("^", "flow: exp ∫ μ₂ dt")}
    cmap = plt.get_cmap("viridis")
    sigmas = sorted({sigma_of(m) for pts in lb["points"].values() for m, _, _ in pts})
    for s, (marker, label) in markers.items():
        pts = lb["points"].get(s, [])
        colors = [cmap(sigmas.index(sigma_of(m)) / max(len(sigmas) - 1, 1)) for m, _, _ in pts]
        ax.scatter([p[2] for p in pts], [p[1] for p in pts], c=colors, marker=marker, s=12, label=label, alpha=0.7)
    lo = min(p[2] for pts in lb["points"].values() for p in pts)
    hi = max(p[1] for pts in lb["points"].values() for p in pts)
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=0.8, label="bound = measured")
    ax.plot([lo, hi], [10 * lo, 10 * hi], color="0.3", lw=0.8, ls=":", label="10 × measured")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured ‖∂F/∂x‖₂ (Lanczos)")
    ax.set_ylabel("local bound")
    ax.legend(fontsize=7)
    ax.set_title("Local Theorem 1, per image (colour: σ)")
    ax = axes[1]
    stages = list(lb["stages"])
    width = 0.8 / len(STATEMENT_TITLES)
    for i, (s, title) in enumerate(STATEMENT_TITLES.items()):
        xs, med, lo_, hi_ = [], [], [], []
        for j, stage in enumerate(stages):
            q = lb["stages"][stage].get(s)
            if q and q["n"]:
                xs.append(j + (i - 1.5) * width)
                med.append(q["q50"])
                lo_.append(q["q50"] - q["q10"])
                hi_.append(q["q90"] - q["q50"])
        ax.errorbar(xs, med, yerr=[lo_, hi_], fmt="o", capsize=3, label=title)
    ax.axhline(10, color="0.3", lw=0.8, ls=":")
    ax.axhline(1, color="0.3", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels(stages)
    ax.set_ylabel("bound ÷ measured (median, 10–90%)")
    ax.legend(fontsize=7)
    ax.set_title("Tightness per stage")
    return store.save_figure(fig, "local_bound.png")


def _mechanism_plot(results: dict, store: Store) -> str | None:
    mech = results.get("mechanism")
    if not mech:
        return None
    sigmas = _sdes(mech)
    xs = [sigma_of(s) for s in sigmas]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ax = axes[0]
    styles = {"sens": "-", "change": "--", "norm": ":"}
    names = {"sens": "max-sensitivity", "change": "numerator (change)", "norm": "denominator (norm)"}
    for i, method in enumerate(_methods(mech)):
        rows = mech["decomposition"][method]
        for part, ls in styles.items():
            ys = [100 * _num(rows[s][part]["mean"]) for s in sigmas]
            label = METHOD_TITLES.get(method, method) if part == "sens" else None
            ax.plot(xs, ys, ls=ls, color=f"C{i}", marker="o", ms=3, label=label)
    for part, ls in styles.items():
        ax.plot([], [], ls=ls, color="0.3", label=names[part])
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlabel("noise σ")
    ax.set_ylabel("SDE vs ODE (%), mean over seeds")
    ax.set_title("Max-sensitivity and its two factors")
    ax.legend(fontsize=6)
    ax = axes[1]
    for i, key in enumerate(["flip", "margin", "jacobian", "grad_norm", "logit_margin"]):
        e = [mech["effects"][key][s] for s in sigmas]
        ax.errorbar(
            [x + (i - 2) * 0.01 for x in xs],
            [100 * _num(v["mean"]) for v in e],
            yerr=[
                [100 * (_num(v["mean"]) - _num(v["low"])) for v in e],
                [100 * (_num(v["high"]) - _num(v["mean"])) for v in e],
            ],
            marker="o",
            capsize=3,
            label={
                "flip": "ReLU flips",
                "margin": "margin ÷ change",
                "jacobian": "‖∂F/∂x‖ of the stages",
                "grad_norm": "‖∇x logit‖",
                "logit_margin": "logit margin",
            }[key],
        )
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlabel("noise σ")
    ax.set_ylabel("SDE vs ODE (%), 95% CI over seeds")
    ax.set_title("Candidate mechanisms")
    ax.legend(fontsize=7)
    return store.save_figure(fig, "mechanism.png")


PLOTS = {"local_bound": _bound_plot, "mechanism": _mechanism_plot}
