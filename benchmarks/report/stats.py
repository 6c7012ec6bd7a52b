"""The report's statistics: one rule for every verdict, effects decided over training seeds, intervals, correlations.

The unit of replication is the training seed. Each seed's ODE and SDE networks start
from the same weights and see the same data order and the same test images, so an
effect (SDE against ODE) is formed within each seed first; whether a claim holds is
decided by the 95% Student-t interval over the seeds' effects (``seed_effect``). The
interval over images pooled across seeds, which ignores training-run variation, is kept
beside it for comparison.

Needs scipy (the ``bench`` extra).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "ACCURACY_GAP",
    "accuracy_flags",
    "by_seed",
    "clean",
    "correlation",
    "finite_mean",
    "log_effect",
    "log_gm",
    "mean_ci",
    "median",
    "paired_test",
    "pearson",
    "quantiles",
    "seed_effect",
    "verdict",
]

#: A pair of networks (one seed) whose test accuracies differ by more than this is
#: flagged: the paper compares networks at equal accuracy.
ACCURACY_GAP = 0.02
#: Draws of the bootstrap over seeds behind a correlation's interval.
BOOTSTRAP = 2000
QUANTILES = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)


def mean_ci(values, level: float = 0.95) -> dict:
    """Mean with a Student-t confidence interval (non-finite values left out).

    Returns:
        ``{"mean", "low", "high", "sd", "n"}`` (low = high = mean for n < 2).
    """
    from scipy import stats

    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    v = v[torch.isfinite(v)]
    n = v.numel()
    if n == 0:
        return {"mean": math.nan, "low": math.nan, "high": math.nan, "sd": math.nan, "n": 0}
    mean = v.mean().item()
    if n < 2:
        return {"mean": mean, "low": mean, "high": mean, "sd": 0.0, "n": 1}
    sd = v.std().item()
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "low": mean - half, "high": mean + half, "sd": sd, "n": n}


def paired_test(a, b) -> dict:
    """Paired comparison of ``a`` and ``b`` (same examples): is ``a - b`` centred on 0?

    Returns:
        ``{"mean_diff", "ci_low", "ci_high", "t_p", "wilcoxon_p", "n"}``: the mean
        difference with its 95% t-interval, the paired t-test p-value and the Wilcoxon
        signed-rank p-value (two-sided).

    Raises:
        ValueError: if ``a`` and ``b`` differ in length.
    """
    from scipy import stats

    a = torch.as_tensor(a, dtype=torch.float64).flatten()
    b = torch.as_tensor(b, dtype=torch.float64).flatten()
    if a.shape != b.shape:
        raise ValueError(f"paired samples must have the same length, got {a.numel()} and {b.numel()}")
    ok = torch.isfinite(a) & torch.isfinite(b)
    d = (a - b)[ok]
    ci = mean_ci(d)
    out = {"mean_diff": ci["mean"], "ci_low": ci["low"], "ci_high": ci["high"], "n": int(d.numel())}
    if d.numel() >= 2 and d.abs().max() > 0:
        out["t_p"] = float(stats.ttest_rel(a[ok].numpy(), b[ok].numpy()).pvalue)
        out["wilcoxon_p"] = float(stats.wilcoxon(d.numpy()).pvalue)
    else:
        out["t_p"] = out["wilcoxon_p"] = math.nan if d.numel() < 2 else 1.0
    return out


def verdict(low: float, high: float, sign: int) -> str:
    """``holds`` if [low, high] lies on the claimed side of 0 (``sign`` ±1), ``fails`` if on the other side.

    Otherwise, and for an undefined interval, ``depends``.
    """
    if any(isinstance(v, float) and math.isnan(v) for v in (low, high)):
        return "depends"
    if (sign < 0 and high < 0) or (sign > 0 and low > 0):
        return "holds"
    if (sign < 0 and low > 0) or (sign > 0 and high < 0):
        return "fails"
    return "depends"


def finite_mean(values) -> float:
    """The mean of the finite values (None and NaN left out); NaN if there are none."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else math.nan


def seed_effect(a: dict[int, list[float]], b: dict[int, list[float]], *, sign: int, relative: bool = True) -> dict:
    """The effect of ``a`` against ``b`` (paired by seed and image), decided over seeds.

    Args:
        a, b: seed -> values of the same images, in the same order.
        sign: the claimed direction of ``a - b`` (-1: ``a`` lower).
        relative: the per-seed effect is ``mean(a) / mean(b) - 1`` (else ``mean(a) - mean(b)``).

    Returns:
        ``per_seed`` (each seed's means and effect), ``effect`` (mean, 95% CI over seeds,
        ``sd`` the seed-to-seed spread, ``n`` seeds), ``agree`` (seeds whose effect has the
        claimed sign), ``image`` (the paired test over images pooled across seeds, in the
        units of ``a - b``) and ``verdict``. With one seed the image interval decides and
        is reported as ``effect`` (``level`` says which).
    """
    seeds = sorted(set(a) & set(b))
    per_seed = []
    for s in seeds:
        ma, mb = finite_mean(a[s]), finite_mean(b[s])
        eff = (ma / mb - 1.0 if mb else math.nan) if relative else ma - mb
        per_seed.append({"seed": s, "a": ma, "b": mb, "effect": eff})
    effects = [p["effect"] for p in per_seed]
    ci = mean_ci(effects)
    image = paired_test([v for s in seeds for v in a[s]], [v for s in seeds for v in b[s]])
    if len(seeds) >= 2:
        level, v = "seeds", verdict(ci["low"], ci["high"], sign)
    else:
        # One seed: the interval over its images decides, and is the one reported (in the
        # effect's units: relative to the seed's mean of ``b`` where the effect is relative).
        level, v = "images", verdict(image["ci_low"], image["ci_high"], sign)
        scale = per_seed[0]["b"] if relative and per_seed and per_seed[0]["b"] else 1.0
        ci = {**ci, **{k: image[f] / scale for k, f in (("mean", "mean_diff"), ("low", "ci_low"), ("high", "ci_high"))}}
    return {
        "per_seed": per_seed,
        "effect": ci,
        "relative": relative,
        "agree": sum(1 for e in effects if e * sign > 0),
        "seeds": len(seeds),
        "image": image,
        "level": level,
        "verdict": v,
    }


def _relative(ci: dict) -> dict:
    """An interval on the log scale as relative changes (``exp - 1``), its spread and count kept."""
    rel = {k: math.expm1(ci[k]) if math.isfinite(ci[k]) else math.nan for k in ("mean", "low", "high")}
    return {**rel, "sd": ci["sd"], "n": ci["n"]}


def log_effect(a: dict[int, list[float]], b: dict[int, list[float]], *, sign: int) -> dict:
    """The relative effect of ``a`` against ``b`` as a ratio of geometric means, decided over seeds.

    Per seed the effect is ``log gm(a) - log gm(b)`` (geometric means over the seed's
    images, positive finite values only); its 95% Student-t interval over seeds is
    reported as relative changes (``exp - 1``). Log ratios add up: a ratio's effect is its
    numerator's minus its denominator's. With one seed the interval over the seed's
    images (paired log ratios, ``image``) decides, and ``level`` says so.

    Args:
        a, b: seed -> values of the same images, in the same order.
        sign: the claimed direction (-1: ``a`` lower).

    Returns:
        ``per_seed`` (each seed's geometric means, log ratio and relative effect),
        ``log`` (the interval over seeds of the log ratios), ``effect`` (the deciding
        interval as relative changes, ``sd`` the spread of the log ratios), ``image`` (the
        interval over images pooled across seeds, relative), ``agree``, ``seeds``,
        ``level`` and ``verdict``.
    """
    seeds = sorted(set(a) & set(b))
    per_seed = []
    for s in seeds:
        la, lb = log_gm(a[s]), log_gm(b[s])
        per_seed.append(
            {"seed": s, "a": math.exp(la), "b": math.exp(lb), "log": la - lb, "effect": math.expm1(la - lb)}
        )
    logs = mean_ci([p["log"] for p in per_seed])
    pairs = [(x, y) for s in seeds for x, y in zip(a[s], b[s])]
    image = mean_ci([math.log(x / y) for x, y in pairs if x and y and x > 0 and y > 0 and math.isfinite(x / y)])
    level, deciding = ("seeds", logs) if len(seeds) >= 2 else ("images", image)
    return {
        "per_seed": per_seed,
        "log": logs,
        "effect": _relative(deciding),
        "image": _relative(image),
        "relative": True,
        "agree": sum(1 for p in per_seed if p["log"] * sign > 0),
        "seeds": len(seeds),
        "level": level,
        "verdict": verdict(deciding["low"], deciding["high"], sign),
    }


def in_repetition_order(cells: dict) -> dict:
    """Cells (key -> result) ordered by training seed, then repetition, else by key.

    The order every summary of repeated cells reads them in: the values of one seed are
    concatenated repetition after repetition, for every network alike, whether the cells
    were just computed or read back.
    """
    return dict(sorted(cells.items(), key=lambda kv: (kv[1]["seed"], kv[1].get("rep") or 0)))


def sensitivity_cells(store) -> dict:
    """The run's sensitivity cells in repetition order: the one read the sensitivity, dose-response, power,
    mechanism and interventions sections share (each groups them by seed with ``by_seed``)."""
    return in_repetition_order(store.results("sensitivity"))


def by_seed(cells: dict, model: str, method: str | None = None, field: str = "values") -> dict[int, list[float]]:
    """Seed -> the values of ``field`` of one network's cells (of one method), in the cells' order."""
    out: dict[int, list[float]] = {}
    for cell in cells.values():
        if cell["model"] == model and (method is None or cell.get("method") == method):
            out.setdefault(cell["seed"], []).extend(cell[field])
    return out


def accuracy_flags(models: dict, a: str, b: str) -> list[int]:
    """Seeds whose networks ``a`` and ``b`` differ in accuracy by more than ACCURACY_GAP."""
    acc_a, acc_b = models.get(a, {}).get("accuracy", {}), models.get(b, {}).get("accuracy", {})
    return [int(s) for s in acc_a if s in acc_b and abs(acc_a[s] - acc_b[s]) > ACCURACY_GAP]


def clean(value):
    """JSON as stored: NaN (an undefined interval or correlation) becomes None, tuples lists."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def quantiles(values: list[float]) -> dict:
    """``n`` and the quantiles ``q0, q10, q25, q50, q75, q90, q100`` of ``values``."""
    t = torch.tensor(values, dtype=torch.float64)
    if t.numel() == 0:
        return {"n": 0}
    qs = torch.quantile(t, torch.tensor(QUANTILES, dtype=torch.float64)).tolist()
    return {"n": t.numel(), **{f"q{int(round(q * 100))}": v for q, v in zip(QUANTILES, qs)}}


def median(values: list[float]) -> float:
    """torch's median (the lower of the two middle values); NaN for no values."""
    return float(torch.tensor(values, dtype=torch.float64).median()) if values else math.nan


def log_gm(values: list[float]) -> float:
    """The log of the geometric mean of the positive finite values; NaN if there are none."""
    vals = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    return sum(math.log(v) for v in vals) / len(vals) if vals else math.nan


def pearson(xs: list[float], ys: list[float]) -> float:
    """Pearson's r; NaN for fewer than 3 points or a constant variable."""
    n = len(xs)
    if n < 3:
        return math.nan
    mx, my = sum(xs) / n, sum(ys) / n
    sxy = sum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    return sxy / math.sqrt(sxx * syy) if sxx > 0 and syy > 0 else math.nan


def correlation(points: list[tuple[int, float, float]], seed: int) -> dict:
    """Pearson's r over (seed, x, y) points, with a 95% bootstrap interval over seeds.

    Whole seeds are resampled (with every point of a seed), since the points of one
    seed share its ODE network; the draws come from a generator seeded with ``seed``.
    """
    r = pearson([p[1] for p in points], [p[2] for p in points])
    seeds = sorted({p[0] for p in points})
    groups = {s: [p for p in points if p[0] == s] for s in seeds}
    gen = torch.Generator().manual_seed(seed)
    draws = []
    for _ in range(BOOTSTRAP if len(seeds) >= 2 else 0):
        pick = torch.randint(len(seeds), (len(seeds),), generator=gen).tolist()
        sample = [p for i in pick for p in groups[seeds[i]]]
        value = pearson([p[1] for p in sample], [p[2] for p in sample])
        if math.isfinite(value):
            draws.append(value)
    if len(draws) < BOOTSTRAP // 2:
        low = high = math.nan
    else:
        t = torch.tensor(draws, dtype=torch.float64)
        low, high = torch.quantile(t, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return {"r": r, "low": low, "high": high, "points": len(points), "seeds": len(seeds)}
