"""Where the spread of a sensitivity row comes from, and the allocation of seeds and images it calls for.

A row's per-seed effect (the log ratio of geometric means, see ``stats.log_effect``)
varies from seed to seed for two reasons: each seed trains other networks (training-run
variation, variance ``τ²``) and measures a sample of ``n`` images (sampling variance
``s²/n``, with ``s²`` the variance over images of the paired log ratios). The observed
variance of the seeds' effects estimates ``τ² + s²/n``; ``s²/n`` is estimated within each
seed, and ``τ²`` is what remains (0 where nothing remains). With ``S`` seeds of ``n`` images
the effect's variance is ``(τ² + s²/n) / S`` at a cost of ``S (c_seed + n c_image)``:
the ``n`` that gives the narrowest interval for a given time is ``sqrt(c_seed s² / (c_image τ²))``
(the classic two-stage allocation), and the seeds follow from the precision asked for.
"""

from __future__ import annotations

import math

from ..networks import ODE, Network, sigma_of
from ..store import Store
from .formatting import markdown_table, number, title
from .section import Section
from .stats import by_seed, sensitivity_cells

__all__ = ["POWER"]

#: The half-width asked of every per-σ row at σ >= SMALLEST, in log ratio (about ±5 points).
TARGET = 0.05
SMALLEST = 0.25
#: The measurements made on each seed's sensitivity images (``n_images`` of them): their cost grows with it.
IMAGE_KINDS = ("mechanism", "interventions", "intervention_patterns")


def _variance(values: list[float]) -> float:
    n = len(values)
    if n < 2:
        return math.nan
    m = sum(values) / n
    return sum((v - m) ** 2 for v in values) / (n - 1)


def _t(df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, df)) if df >= 1 else math.inf


def summarise(store: Store, results: dict) -> dict:
    cfg, models = store.cfg, results["models"]
    cells = sensitivity_cells(store)
    names = [n.name for n in cfg.table_networks()]
    # The cost of a seed: everything the run does once per seed whatever its number of
    # sensitivity images (training every network, the other measurements; mean over
    # seeds); of an image: every network and method, and the measurements made on the
    # same images (IMAGE_KINDS).
    per_seed = {s: 0.0 for s in cfg.seeds}
    per_image = {s: 0.0 for s in cfg.seeds}
    for entry in models.values():
        for s, seconds in entry["train_seconds"].items():
            per_seed[int(s)] = per_seed.get(int(s), 0.0) + (seconds or 0.0)
    for kind in store.used:
        if kind == "sensitivity":
            continue
        for key, cell in store.results(kind).items():
            seed = key.split("/", 1)[0]
            if seed[:1] == "s" and seed[1:].isdigit() and int(seed[1:]) in per_seed:
                (per_image if kind in IMAGE_KINDS else per_seed)[int(seed[1:])] += cell.get("seconds") or 0.0
    c_seed = sum(per_seed.values()) / len(per_seed) if per_seed else math.nan
    c_image = len(names) * sum(results["sensitivity"]["seconds_per_image"].get(m, 0.0) for m in cfg.methods)
    if per_image:
        c_image += sum(per_image.values()) / len(per_image) / cfg.n_images
    rows = {}
    for sde in names[1:]:
        for method in cfg.methods:
            a, b = by_seed(cells, sde, method), by_seed(cells, ODE, method)
            seeds = sorted(set(a) & set(b))
            if len(seeds) < 2:
                continue
            effects, sampling, n_images = [], [], []
            for s in seeds:
                d = [math.log(x / y) for x, y in zip(a[s], b[s]) if x > 0 and y > 0]
                effects.append(sum(d) / len(d))
                sampling.append(_variance(d))
                n_images.append(len(d))
            n = sum(n_images) / len(n_images)
            s2 = sum(sampling) / len(sampling)
            total = _variance(effects)
            tau2 = max(total - s2 / n, 0.0)
            rows[f"{method}@{sde}"] = {
                "method": method,
                "sigma": sigma_of(sde),
                "seeds": len(seeds),
                "images": n,
                "total": total,
                "sampling": s2 / n,
                "training": tau2,
                "image_variance": s2,
            }
    # The precision this run reached: each per-σ row's interval, half its width in log ratio
    # (the unit of the target; for a decrease it is wider than the relative interval shown).
    reached = {}
    for sde, comp in results["sensitivity"]["comparisons"].items():
        for method, row in comp["methods"].items():
            e = row.get("log") or {}
            if e.get("low") is not None and e.get("high") is not None:
                reached[f"{method}@{sde}"] = (e["high"] - e["low"]) / 2
    # Everything derived from timings has "seconds" in its key: it differs from run to run.
    return {
        "power": {
            "rows": rows,
            "reached": reached,
            "seconds_per_seed": c_seed,
            "seconds_per_image": c_image,
            "target": TARGET,
            "smallest_sigma": SMALLEST,
            "plan_by_seconds": _plan(rows, c_seed, c_image),
        }
    }


def _plan(rows: dict, c_seed: float, c_image: float) -> dict:
    """The allocation for the rows at σ >= SMALLEST: images per seed, seeds for the target, and their time."""
    judged = [r for r in rows.values() if r["sigma"] >= SMALLEST]
    if not judged or not (c_seed > 0 and c_image > 0):
        return {}
    # One n for the whole run: the allocation of the row with the largest training share
    # needs the fewest images; the median row's n is a fair compromise.
    ns = sorted(
        math.sqrt(c_seed * r["image_variance"] / (c_image * r["training"])) if r["training"] > 0 else math.inf
        for r in judged
    )
    n = max(2, round(min(ns[len(ns) // 2], 1000)))
    seeds = 2
    while seeds < 1000:
        worst = max(_t(seeds - 1) * math.sqrt((r["training"] + r["image_variance"] / n) / seeds) for r in judged)
        if worst <= TARGET:
            break
        seeds += 1
    return {
        "images": n,
        "seeds": seeds,
        "seconds": seeds * (c_seed + n * c_image),
        "half_width": worst,
        "rows": len(judged),
    }


def tables(results: dict) -> list[str]:
    power = results.get("power") or {}
    if not power.get("rows"):
        return []
    rows = []
    for r in sorted(power["rows"].values(), key=lambda r: (r["sigma"], r["method"])):
        share = r["training"] / r["total"] if r["total"] > 0 else math.nan
        rows.append(
            [
                title(r["method"]),
                f"{r['sigma']:g}",
                number(math.sqrt(r["total"]), 3),
                number(math.sqrt(r["sampling"]), 3),
                number(math.sqrt(r["training"]), 3),
                f"{100 * share:.0f}%" if math.isfinite(share) else "–",
            ]
        )
    header = ["method", "σ", "sd of a seed's effect", "from images", "from training", "training share of the variance"]
    return [
        "## Where the spread of a sensitivity row comes from",
        "",
        "Standard deviations of a seed's effect (log ratio of geometric means, ≈ relative change): observed over "
        "the seeds, the part expected from sampling images (within-seed variance of the paired log ratios ÷ the "
        "images per seed) and the training-run part that remains.",
        "",
        *markdown_table(header, rows),
        "",
    ]


def summary(results: dict) -> str:
    power = results.get("power") or {}
    plan = power.get("plan_by_seconds") or {}
    if not plan:
        return "This run has too few seeds to split the spread of its effects."
    judged = [r for r in power["rows"].values() if r["sigma"] >= power["smallest_sigma"]]
    share = sorted(r["training"] / r["total"] for r in judged if r["total"] > 0)
    images = round(sum(r["images"] for r in judged) / len(judged))
    return (
        f"Over the {len(judged)} per-σ rows at σ ≥ {power['smallest_sigma']:g}, training-run variation makes "
        f"{100 * share[0]:.0f}% to {100 * share[-1]:.0f}% (median {100 * share[len(share) // 2]:.0f}%) of the "
        f"variance of a seed's effect with this run's {images} images per seed. A seed costs "
        f"{power['seconds_per_seed']:.1f} s (training its networks and the measurements whose size does not depend "
        f"on the sensitivity images) and an image {power['seconds_per_image']:.2f} s to measure "
        f"(every network and method, and the mechanism and intervention measurements made on it) on this run's "
        f"machine, so the narrowest interval for a given time comes "
        f"from about {plan['images']} images per seed; with them, {plan['seeds']} seeds would bring every such "
        f"row's 95% interval to ±{100 * plan['half_width']:.1f}% or less (target ±{100 * power['target']:.0f}%), "
        f"for about {plan['seconds'] / 60:.0f} minutes of this run's work." + _reached(power, judged)
    )


def _reached(power: dict, judged: list[dict]) -> str:
    """The precision this run reached on the judged rows (half-widths of their 95% intervals)."""
    reached = power.get("reached") or {}
    widths = {k: reached[k] for k in (f"{r['method']}@{Network(r['sigma']).name}" for r in judged) if k in reached}
    if not widths:
        return ""
    worst = max(widths, key=widths.get)
    method, sde = worst.split("@")  # "<method>@<network>", the keys of power["reached"]
    within = sum(w <= power["target"] for w in widths.values())
    return (
        f" This run reached ±{100 * widths[worst]:.1f}% at worst ({title(method)}, σ = {sigma_of(sde):g}; half the "
        f"width of the 95% interval of the log ratio, as the target), and {within} of the {len(widths)} rows are "
        f"within ±{100 * power['target']:.0f}%."
    )


POWER = Section("power", summarise, page="sensitivity", tables=tables, fills={"power_summary": summary})
