"""What the "What explains it" page concludes, in sentences built from the numbers, and its figure."""

from __future__ import annotations

from ..networks import sigma_of
from ..store import Store
from .formatting import defined, ratio, title
from .interventions import FIRST_STAGE
from .local_bound import paragraph as bound_paragraph
from .mechanism_tables import methods_of, num, rel, sdes, sigma, sure
from .plotting import plt

__all__ = ["conclusion", "plot"]


def _list(items: list[str]) -> str:
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else (items[0] if items else "none")


def _amplification_paragraph(mech: dict) -> str:
    sigmas = sdes(mech)
    jac = mech["effects"]["jacobian"]
    grad = mech["effects"]["grad_norm"]
    up = [sigma(s) for s in sigmas if sure(jac[s]) > 0]
    text = (
        "**Amplification.** Theorem 1's argument needs the noise-trained network to amplify perturbations less. "
        "Its stages' local Jacobian norms (geometric mean over stages) change by "
        + ", ".join(f"{rel(jac[s])} at {sigma(s)}" for s in sigmas)
        + "; "
        + (f"they are larger, across seeds, at {_list(up)}." if up else "no change is clear across seeds.")
    )
    text += (
        " The input gradient of the explained logit, which passes through the same stages and then the "
        "classifier, changes by " + ", ".join(f"{rel(grad[s])}" for s in sigmas) + " at the same σ."
    )
    corr = mech["correlations"]["jacobian"]
    rs = [c["r"] for c in corr.values() if defined(c["r"])]
    if rs:
        sign = "negative" if max(rs) < 0 else "positive" if min(rs) > 0 else "mixed in sign"
        text += (
            f" Across seeds and σ, the stage amplification's effect correlates with the sensitivity's effect "
            f"with r from {ratio(min(rs))} to {ratio(max(rs))} over the methods ({sign})."
        )
    if up and rs and max(rs) < 0:
        text += " Stage amplification therefore cannot be the mechanism: it moves the other way."
    return text


def _decomposition_paragraph(mech: dict) -> str:
    cases = [(m, s, mech["decomposition"][m][s]) for m in methods_of(mech) for s in sdes(mech)]
    lower = [(m, s, p) for m, s, p in cases if sure(p["sens"]) < 0]
    if not lower:
        return (
            "**The two factors.** No (method, σ) case has a max-sensitivity lower for the SDE network across "
            "seeds, so there is nothing to decompose."
        )
    change_down = [c for c in lower if sure(c[2]["change"]) < 0]
    norm_up = [c for c in lower if sure(c[2]["norm"]) > 0]
    norm_down = [c for c in lower if sure(c[2]["norm"]) < 0]
    norm_not_up = [c for c in lower if defined(c[2]["norm"]["mean"]) and c[2]["norm"]["mean"] <= 0]
    names = [f"{title(m)} at {sigma(s)}" for m, s, _ in lower]
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
    sigmas = sdes(mech)
    last = sigmas[-1]
    per_stage = [f"{st} {rel(mech['effects'][f'flip:{st}'][last])}" for st in mech["stages"]]
    text = (
        f"**The activation pattern.** At {sigma(last)} the fraction of ReLUs that flip under a perturbation "
        f"changes by: {'; '.join(per_stage)}. The margin over its change (geometric mean over stages) changes by "
        + ", ".join(rel(mech["effects"]["margin"][s]) for s in sigmas)
        + " from the smallest σ to the largest."
    )
    return text


def _predictor_paragraph(mech: dict) -> str:
    best = []
    for method in methods_of(mech):
        ranked = []
        for pred, name in mech["predictors"]:
            if "{method}" in pred:
                continue  # the numerator and denominator are the sensitivity itself
            c = mech["correlations"][pred][method]
            if defined(c["low"]) and (c["low"] > 0 or c["high"] < 0):
                ranked.append((abs(c["r"]), name, c))
        if ranked:
            _, name, c = max(ranked, key=lambda t: t[0])
            interval = f"[{ratio(c['low'])}, {ratio(c['high'])}]"
            best.append(f"{title(method)}: {name} (r = {ratio(c['r'])} {interval})")
        else:
            best.append(f"{title(method)}: none whose interval excludes 0")
    return (
        "**What predicts it.** The candidate most correlated with the sensitivity's effect across seeds and σ, "
        "per method, among those whose bootstrap interval excludes 0 (for Saliency the input-gradient norm is "
        "its denominator): " + "; ".join(best) + "."
    )


def _best_predictors(mech: dict) -> dict[str, str]:
    """Per method, the non-trivial candidate with the largest |r| whose interval excludes 0."""
    out = {}
    for method in methods_of(mech):
        ranked = [
            (abs(c["r"]), pred)
            for pred, _ in mech["predictors"]
            if "{method}" not in pred
            for c in [mech["correlations"][pred][method]]
            if defined(c["low"]) and (c["low"] > 0 or c["high"] < 0)
        ]
        if ranked:
            out[method] = max(ranked)[1]
    return out


def _tested(results: dict, where: list[str]) -> str:
    """What the interventions say of the correlational reading (empty for a run without them).

    ``where``: the stages of the best predictors (empty where they are not per stage).
    """
    rows = results.get("verdicts") or []
    first = [r for r in rows if r["claim"] == FIRST_STAGE]
    deep = [r for r in rows if r["claim"] == "noise in the deeper stages alone lowers the sensitivity"]
    if not first or not deep:
        return ""
    n_first = sum(r["verdict"] == "holds" for r in first)  # noise in layer1 alone lowers it by 5% or more
    deep_lowers = sum(r["verdict"] == "holds" for r in deep)
    deep_raises = sum(r["verdict"] == "fails" for r in deep)
    text = (
        f" The interventions on this page test which stage the noise acts through: noise in the first stage alone "
        f"lowers the sensitivity by more than 5% for {n_first} of {len(first)} methods, noise in the deeper "
        f"stages alone lowers it for {deep_lowers} of {len(deep)}"
        + (f" (and raises it for {deep_raises})" if deep_raises else "")
        + "."
    )
    deeper = [w for w in where if w.startswith("layer") and w != "layer1"]
    if n_first == len(first) and deep_lowers == 0:
        text += " Noise in the first stage alone is enough"
        if not deeper:
            return text + "."
        if deep_raises == len(deep):
            return text + f"; the predictors in {_list(deeper)} move with the sensitivity but do not cause its fall."
        return text + f"; that the predictors in {_list(deeper)} cause its fall is not shown."
    # Every first-stage decrease more than twice the largest deeper-stage one.
    if n_first == len(first) and 2 * _decrease(deep, max) < _decrease(first, min):
        text += (
            f" Most of the effect comes through the first stage: noise there alone changes the sensitivity by "
            f"{_span(first)}, noise in the deeper stages alone by {_span(deep)}"
        )
        if deeper:
            return text + (
                f"; the predictors in {_list(deeper)} track the sensitivity more closely than their stages' share "
                "of the effect."
            )
        return text + "."
    if deep_lowers == len(deep) and n_first == 0:
        return text + " The noise acts through the deeper stages."
    return text + " Which stage the noise acts through is not settled by this run's seeds."


def _decrease(rows: list[dict], pick) -> float:
    """``pick`` (min or max) of the rows' decreases, an increase counting as 0."""
    return pick(max(-r["effect"]["mean"], 0.0) if defined(r["effect"].get("mean")) else 0.0 for r in rows)


def _span(rows: list[dict]) -> str:
    """The rows' effects, smallest to largest: ``-29.4% to -20.8%``."""
    values = sorted(100 * r["effect"]["mean"] for r in rows if defined(r["effect"].get("mean")))
    return f"{values[0]:+.1f}% to {values[-1]:+.1f}%" if len(values) > 1 else f"{values[0]:+.1f}%"


def _short(mech: dict, results: dict) -> str:
    """One paragraph: which mechanism the data support, beside Theorem 1's, and what the interventions say."""
    sigmas = sdes(mech)
    amp_up = any(sure(mech["effects"]["jacobian"][s]) > 0 for s in sigmas)
    lower = [p for rows in mech["decomposition"].values() for p in rows.values() if sure(p["sens"]) < 0]
    change = (
        lower
        and all(sure(p["change"]) < 0 for p in lower)
        and all(defined(p["norm"]["mean"]) and p["norm"]["mean"] <= 0 for p in lower)
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
            f"For {'every one' if len(best) == len(methods_of(mech)) else 'each'} of the {len(best)} methods with a "
            "clear predictor, the candidate that best tracks the sensitivity's changes across seeds and σ measures "
            "how stable the ReLU activation pattern is under the perturbation (the fraction of units that flip, or "
            f"the margin over its change), in {_list(where)}: a property of the local activation pattern, not of "
            "Lipschitz constants."
        )
    elif best:
        titles = dict(mech["predictors"])
        listing = "; ".join(f"{title(m)}: {titles[p]}" for m, p in best.items())
        text += f"The candidates that best track the sensitivity's changes across seeds and σ are: {listing}."
    where = sorted({p.split(":")[1] for p in best.values() if ":" in p})
    return (text + _tested(results, where)).strip()


def conclusion(results: dict) -> str:
    """What the data support, in sentences built from the numbers (Markdown)."""
    lb, mech = results.get("local_bound") or {}, results.get("mechanism") or {}
    if not lb.get("stages") or not mech:
        return "This run has no local bounds or mechanism measures."
    parts = [
        _short(mech, results),
        bound_paragraph(results, lb),
        _amplification_paragraph(mech),
        _decomposition_paragraph(mech),
        _pattern_paragraph(mech),
        _predictor_paragraph(mech),
        "**What is and is not established.** Established for these small digits networks and their training "
        "seeds: the local bounds and how tight they are, and the direction of every effect whose interval "
        "excludes 0, and what the interventions decide. Not established by the correlations: causation, because "
        "they run over the seeds and four noise levels while the candidates move together; a percentile bootstrap "
        "over few seeds tends to give intervals that are too narrow; and with a dozen candidates per method, one "
        "of them clears the bar by "
        "chance more easily than any single one would. Nor is it established that ImageNet-scale networks behave "
        "the same way.",
    ]
    return "\n\n".join(parts)


def _effect_lines(ax, mech: dict, series: list[tuple[str, str]], ylabel: str, heading: str) -> None:
    """Per candidate, its effect (SDE vs ODE, %) against σ with its 95% interval over seeds."""
    sigmas = sdes(mech)
    xs = [sigma_of(s) for s in sigmas]
    spread = 0.012 * max(xs)
    for i, (key, label) in enumerate(series):
        e = [mech["effects"][key][s] for s in sigmas]
        ax.errorbar(
            [x + (i - (len(series) - 1) / 2) * spread for x in xs],
            [100 * num(v["mean"]) for v in e],
            yerr=[
                [100 * (num(v["mean"]) - num(v["low"])) for v in e],
                [100 * (num(v["high"]) - num(v["mean"])) for v in e],
            ],
            marker="o",
            capsize=3,
            label=label,
        )
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlabel("noise σ")
    ax.set_ylabel(ylabel)
    ax.set_title(heading, fontsize=10)
    ax.legend(fontsize=7)


def plot(results: dict, store: Store) -> str | None:
    """The sensitivity's two factors, and each candidate's effect per stage (not averaged over stages)."""
    mech = results.get("mechanism")
    if not mech:
        return None
    sigmas = sdes(mech)
    xs = [sigma_of(s) for s in sigmas]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8.2))
    ax = axes[0][0]
    styles = {"sens": "-", "change": "--", "norm": ":"}
    names = {"sens": "max-sensitivity", "change": "numerator (change)", "norm": "denominator (norm)"}
    for i, method in enumerate(methods_of(mech)):
        rows = mech["decomposition"][method]
        for part, ls in styles.items():
            ys = [100 * num(rows[s][part]["mean"]) for s in sigmas]
            label = title(method) if part == "sens" else None
            ax.plot(xs, ys, ls=ls, color=f"C{i}", marker="o", ms=3, label=label)
    for part, ls in styles.items():
        ax.plot([], [], ls=ls, color="0.3", label=names[part])
    ax.axhline(0, color="0.3", lw=0.8)
    ax.set_xlabel("noise σ")
    ax.set_ylabel("SDE vs ODE (%), mean over seeds")
    ax.set_title("Max-sensitivity and its two factors", fontsize=10)
    ax.legend(fontsize=7)
    stages = mech["stages"]
    ci = "SDE vs ODE (%), 95% CI over seeds"
    _effect_lines(axes[0][1], mech, [(f"flip:{s}", s) for s in stages], ci, "Fraction of ReLUs that flip, per stage")
    _effect_lines(
        axes[1][0], mech, [(f"margin:{s}", s) for s in stages], ci, "Pre-activation margin ÷ its change, per stage"
    )
    others = [("jacobian", "‖∂F/∂x‖ of the stages"), ("grad_norm", "‖∇x logit‖"), ("logit_margin", "logit margin")]
    _effect_lines(axes[1][1], mech, others, ci, "Amplification, gradient and logit margin")
    fig.tight_layout()
    return store.save_figure(fig, "mechanism.png")
