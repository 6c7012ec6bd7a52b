"""The tables of "What explains it": the two factors, the activation pattern, margins and correlations."""

from __future__ import annotations

import math

from ..networks import sigma_of
from .formatting import defined, markdown_table, percent, ratio, title

__all__ = ["methods_of", "num", "rel", "sdes", "sigma", "sure", "tables"]

PARTS = ("sens", "change", "norm")


def num(x) -> float:
    return x if defined(x) else math.nan


def rel(e: dict) -> str:
    return f"{percent(e['mean'])} [{percent(e['low'])}, {percent(e['high'])}]"


def sure(e: dict) -> int:
    """+1 / -1 where the seed interval lies above / below 0, else 0."""
    low, high = e["log"]["low"], e["log"]["high"]
    if not (defined(low) and defined(high)):
        return 0
    return 1 if low > 0 else -1 if high < 0 else 0


def sdes(mech: dict) -> list[str]:
    """The SDE networks, by σ."""
    return sorted(mech["sigmas"], key=sigma_of)


def methods_of(mech: dict) -> list[str]:
    """The attribution methods, in the run's order."""
    return [m for m in mech.get("methods", []) if m in mech["decomposition"]] or sorted(mech["decomposition"])


def sigma(name: str) -> str:
    return f"σ = {sigma_of(name):g}"


def _decomposition_table(mech: dict) -> list[str]:
    rows = [
        [title(method), f"{sigma_of(sde):g}", *(rel(mech["decomposition"][method][sde][p]) for p in PARTS)]
        for method in methods_of(mech)
        for sde in sdes(mech)
    ]
    return markdown_table(["method", "σ", "max-sensitivity", "numerator: change", "denominator: norm"], rows)


def _interval(v: dict, digits: int) -> str:
    return f"{ratio(v['mean'], digits)} [{ratio(v['low'], digits)}, {ratio(v['high'], digits)}]"


def _levels_table(mech: dict) -> list[str]:
    stages = mech["stages"]
    keys = [f"flip:{s}" for s in stages] + ["margin", "logit_margin", "grad_norm", "jacobian"]
    titles = [f"flips {s}" for s in stages] + [
        "margin ÷ change",
        "logit margin",
        "‖∇x logit‖",
        "‖∂F/∂x‖ (geo. mean of stages)",
    ]
    rows = [
        [name, *(_interval(mech["levels"][key][name], 4 if key.startswith("flip") else 3) for key in keys)]
        for name in mech["levels"][keys[0]]
    ]
    effects = [[name, *(rel(mech["effects"][key][s]) for s in sdes(mech))] for key, name in zip(keys, titles)]
    return [
        *markdown_table(["network", *titles], rows),
        "",
        "Effect of the noise (SDE against the same seed's ODE network, 95% CI over seeds):",
        "",
        *markdown_table(["candidate", *(sigma(s) for s in sdes(mech))], effects),
    ]


def _margins_table(mech: dict) -> list[str]:
    """Per stage, the distribution of pre-activation margins against the change a perturbation makes."""
    digits = {"zmedian": 3, "zq10": 3, "dz": 4, "margin": 2, "flip": 4}
    rows = [
        [stage, name, *(ratio(mech["levels"][f"{k}:{stage}"][name]["mean"], d) for k, d in digits.items())]
        for stage in mech["stages"]
        for name in mech["levels"]["flip"]
    ]
    header = ["stage", "network", "median |z|", "10% quantile of |z|", "RMS change of z", "median |z| ÷ change"]
    return markdown_table([*header, "flips"], rows)


def _correlation_table(mech: dict) -> list[str]:
    methods = methods_of(mech)
    rows = [[name, *(_r(mech["correlations"][pred][m]) for m in methods)] for pred, name in mech["predictors"]]
    return markdown_table(["candidate (its effect, log ratio)", *(title(m) for m in methods)], rows)


def _r(c: dict) -> str:
    return f"{ratio(c['r'])} [{ratio(c['low'])}, {ratio(c['high'])}]"


def tables(results: dict) -> list[str]:
    """The sensitivity's two factors, the activation pattern and margins, and the correlations."""
    lb, mech = results.get("local_bound"), results.get("mechanism")
    if not lb or not lb.get("stages") or not mech:
        return []
    out: list[str] = []
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
