"""What an intervention shows: noise in one stage only, and noise at attribution time only, against the ODE network.

Every effect is the sensitivity claim's (``stats.log_effect``): per seed, the
intervention network's geometric-mean max-sensitivity over the ODE network's on the same
images and perturbations, minus 1, decided by the 95% interval over seeds. A claim that
noise does *not* lower the sensitivity is decided against a margin: it holds where the
whole interval lies above −MARGIN (any decrease is smaller than that), fails where it
lies below, and depends otherwise.
"""

from __future__ import annotations

import math

from ..networks import ODE, Network
from ..store import Store
from .formatting import VERDICT_MARK, effect, in_run_order, markdown_table, percent, title
from .plotting import plt
from .section import Section, verdict_row
from .stats import by_seed, finite_mean, in_repetition_order, log_effect, log_gm, mean_ci, sensitivity_cells

__all__ = ["INTERVENTIONS", "MARGIN"]

#: A decrease smaller than this (relative) counts as none: the first-stage claim is about decreases of at least
#: this much, and the attribution-time part of the timing claim about decreases smaller than it.
MARGIN = 0.05
#: The claim about noise in the first stage alone, phrased as what it asserts.
FIRST_STAGE = f"noise in the first stage alone lowers it by {100 * MARGIN:g}% or more"
TRAINING_TIME = "training time (the table's SDE network, noise off)"


def _label(name: str) -> str:
    if name == TRAINING_TIME:
        return "noise at training time (all stages)"
    if Network.parse(name).at_attribution:
        return "noise at attribution time only"
    return f"noise in {_where(name)} only"


def _where(name: str) -> str:
    """Where the noise of the intervention network ``name`` is, in words."""
    return Network.parse(name).where()


def _sorted_cells(store: Store, kind: str) -> dict:
    return in_repetition_order(store.results(kind))


def _ratio_effect(logs: list[float]) -> dict:
    return {k: math.expm1(v) for k, v in mean_ci(logs).items() if k in ("mean", "low", "high")}


def _pattern_effects(store: Store, names: list[str]) -> dict:
    """Per network and stage: the ReLU flip fraction's and the margin ÷ change's change against the ODE network.

    Per seed the log ratio of the stage's mean flip fraction (and of the geometric mean of
    median |z| ÷ the RMS change of z over images) to the same seed's ODE network's; the
    interval over seeds, as relative changes.
    """
    base = {c["seed"]: c for c in store.results("mechanism").values() if c["model"] == ODE}
    cells = store.results("intervention_patterns").values()
    out: dict = {}
    for name in names:
        flips: dict = {}
        margins: dict = {}
        for c in (c for c in cells if c["model"] == name and c["seed"] in base):
            for stage, st in c["stages"].items():
                ref = base[c["seed"]]["stages"].get(stage)
                if ref:
                    ratio = max(finite_mean(st["flip"]), 1e-12) / max(finite_mean(ref["flip"]), 1e-12)
                    flips.setdefault(stage, []).append(math.log(ratio))
                    margins.setdefault(stage, []).append(_log_margin(st) - _log_margin(ref))
        order = sorted(flips, key=lambda s: (s != "stem", s))
        out[name] = {
            "accuracy": mean_ci([c["test_accuracy"] for c in cells if c["model"] == name]),
            "stages": {s: _ratio_effect(flips[s]) for s in order},
            "margins": {s: _ratio_effect(margins[s]) for s in order},
        }
    return out


def _log_margin(stage: dict) -> float:
    return log_gm([m / c for m, c in zip(stage["margin"], stage["change"]) if c > 0])


def summarise(store: Store, results: dict) -> dict:
    cfg = store.cfg
    cells = _sorted_cells(store, "interventions")
    if not cfg.interventions or not cells:
        return {"interventions": {}}
    main = sensitivity_cells(store)
    trained = cfg.intervention_networks()
    names = [n.name for n in [*trained, cfg.attribution_time_network]]
    trained_sde = cfg.intervention_sde.name
    effects: dict = {}
    for method in cfg.intervention_methods:
        ode = by_seed(main, ODE, method)
        effects[method] = {n: log_effect(by_seed(cells, n, method), ode, sign=-1) for n in names}
        effects[method][TRAINING_TIME] = log_effect(by_seed(main, trained_sde, method), ode, sign=-1)
    return {
        "interventions": {
            "sigma": cfg.intervention_sigma,
            "networks": names,
            "first": trained[0].name,
            "deep": cfg.deep_network.name,
            "attribution": cfg.attribution_time_network.name,
            "effects": effects,
            "patterns": _pattern_effects(store, [n.name for n in trained]),
            "ode_accuracy": results["models"].get(ODE, {}).get("test_accuracy"),
            "margin": MARGIN,
        }
    }


def _no_decrease(e: dict) -> str:
    """``holds`` where any decrease is smaller than MARGIN, ``fails`` where it is larger, else ``depends``."""
    low, high = e["low"], e["high"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return "depends"
    return "holds" if low > -MARGIN else "fails" if high < -MARGIN else "depends"


def _beyond_margin(e: dict) -> str:
    """``holds`` where the whole interval is a decrease of at least MARGIN, ``fails`` where none of it is."""
    low, high = e["low"], e["high"]
    if not (math.isfinite(low) and math.isfinite(high)):
        return "depends"
    return "holds" if high < -MARGIN else "fails" if low > -MARGIN else "depends"


def verdicts(results: dict) -> list[dict]:
    iv = results.get("interventions") or {}
    rows = []
    sigma = f"σ = {iv.get('sigma', 0):g}"
    for method, by_net in in_run_order(iv.get("effects", {}), results):
        deep, first = by_net[iv["deep"]], by_net[iv["first"]]
        at, trained = by_net[iv["attribution"]], by_net[TRAINING_TIME]
        where = _where(iv["deep"])
        rows.append(verdict_row(
            "noise in the deeper stages alone lowers the sensitivity", f"{title(method)}, noise in {where}, {sigma}",
            deep["verdict"], deep["effect"], "relative", deep["agree"], deep["seeds"]))  # fmt: skip
        agree = sum(p["effect"] < -MARGIN for p in first["per_seed"])
        rows.append(verdict_row(
            FIRST_STAGE, f"{title(method)}, noise in {_where(iv['first'])}, {sigma}",
            _beyond_margin(first["effect"]), first["effect"], "relative", agree, first["seeds"],
            f"holds where the whole interval lies below −{100 * MARGIN:g}%", line=-MARGIN))  # fmt: skip
        if trained["verdict"] == "fails" or _no_decrease(at["effect"]) == "fails":
            v = "fails"
        elif trained["verdict"] == "holds" and _no_decrease(at["effect"]) == "holds":
            v = "holds"
        else:
            v = "depends"
        rows.append(verdict_row(
            "noise at training time, not at attribution time, lowers it", f"{title(method)}, {sigma}", v,
            at["effect"], "relative", sum(p["effect"] > -MARGIN for p in at["per_seed"]), at["seeds"],
            f"effect shown: attribution time only; training time {effect(trained['effect'], 'relative')} "
            f"({trained['verdict']})", line=None))  # fmt: skip
    return rows


def tables(results: dict) -> list[str]:
    iv = results.get("interventions") or {}
    if not iv.get("effects"):
        return []
    methods = [m for m, _ in in_run_order(iv["effects"], results)]
    order = [TRAINING_TIME, *iv["networks"]]

    def cell(m: str, n: str) -> str:
        e = iv["effects"][m][n]
        return f"{VERDICT_MARK[e['verdict']]}: {effect(e['effect'], 'relative')}"

    rows = [[_label(n), *(cell(m, n) for m in methods)] for n in order]
    stages = sorted({s for p in iv["patterns"].values() for s in p["stages"]}, key=lambda s: (s != "stem", s))
    patterns = [
        [_label(n), f"{100 * p['accuracy']['mean']:.2f}%",
         *(percent(p["stages"][s]["mean"]) if s in p["stages"] else "–" for s in stages),
         *(percent(p.get("margins", {})[s]["mean"]) if s in p.get("margins", {}) else "–" for s in stages)]
        for n, p in iv["patterns"].items()
    ]  # fmt: skip
    acc = iv.get("ode_accuracy") or {}
    return [
        "## The interventions, measured",
        "",
        f"σ = {iv['sigma']:g}. Max-sensitivity against the ODE network on the same images and perturbations (per seed "
        "the ratio of geometric means, minus 1; 95% CI over seeds; the verdict is that of 'lower').",
        "",
        *markdown_table(["intervention", *(title(m) for m in methods)], rows),
        "",
        f"Test accuracy (mean over seeds; the ODE network: {100 * acc.get('mean', math.nan):.2f}%), and per stage the "
        "change against the ODE network of the fraction of ReLUs that flip under a perturbation and of the "
        "pre-activation margin over its change (geometric means over seeds):",
        "",
        *markdown_table(
            ["network", "accuracy", *(f"flips {s}" for s in stages), *(f"margin ÷ change {s}" for s in stages)],
            patterns,
        ),
        "",
    ]


def summary(results: dict) -> str:
    rows = [r for r in results.get("verdicts", []) if r["claim"] in CLAIMS]
    if not rows:
        return "This run has no interventions."
    parts = []
    for claim in CLAIMS:
        mine = [r for r in rows if r["claim"] == claim]
        held = [r["setting"].split(",")[0] for r in mine if r["verdict"] == "holds"]
        failed = [r["setting"].split(",")[0] for r in mine if r["verdict"] == "fails"]
        text = f"*{claim}*: holds for {len(held)} of {len(mine)} methods" + (f" ({', '.join(held)})" if held else "")
        parts.append(text + (f", fails for {', '.join(failed)}" if failed else ""))
    iv = results["interventions"]
    first = iv["patterns"].get(iv["first"], {}).get("stages", {})
    ordered = sorted(first.items(), key=lambda kv: (kv[0] != "stem", kv[0]))  # results.json sorts its keys
    flips = "; ".join(f"{stage} {percent(e['mean'])}" for stage, e in ordered)
    return (
        "**What the interventions establish.** " + "; ".join(parts) + ". A claim that holds or fails here is causal "
        "for these networks in the sense that only the placement or the timing of the noise differed between the "
        "compared networks; a claim that depends is not settled by this run's seeds. With noise in the first stage "
        f"alone, the fraction of ReLUs that flip under a perturbation changes by: {flips} (against the ODE network)."
    )


def _span(values: list[float]) -> str:
    values = sorted(100 * v for v in values if math.isfinite(v))
    if not values:
        return "–"
    return f"{values[0]:+.1f}%" if len(values) == 1 else f"{values[0]:+.1f}% to {values[-1]:+.1f}%"


def plain_words(results: dict) -> str:
    """What the interventions decided, in a few plain sentences: which stage, and training against attribution time."""
    iv = results.get("interventions") or {}
    if not iv.get("effects"):
        return ""
    rows: dict[str, list[dict]] = {}
    for r in verdicts(results):  # this section's rows, as the page shows them
        rows.setdefault(r["claim"], []).append(r)
    first_rows, n = rows.get(FIRST_STAGE, []), len(iv["effects"])
    deep_rows = rows.get(CLAIMS[0], [])
    first = [e[iv["first"]]["effect"]["mean"] for e in iv["effects"].values()]
    deep = [e[iv["deep"]]["effect"]["mean"] for e in iv["effects"].values()]
    at = [e[iv["attribution"]]["effect"]["mean"] for e in iv["effects"].values()]
    trained = [e[TRAINING_TIME]["effect"]["mean"] for e in iv["effects"].values()]
    n_first = sum(r["verdict"] == "holds" for r in first_rows)
    n_deep = sum(r["verdict"] == "holds" for r in deep_rows)
    where = _where(iv["deep"])
    text = (
        f"**What the interventions decided, in plain words** (σ = {iv['sigma']:g}, against the ODE network on the same "
        f"images and perturbations). Noise in the first stage alone lowers the sensitivity by {100 * MARGIN:g}% or "
        f"more for {n_first} of {n} methods (mean effects {_span(first)}); noise in {where} alone lowers it for "
        f"{n_deep} of {n} ({_span(deep)}). "
    )
    smallest_first = min(-v for v in first)
    if n_first == n and max(max(-v, 0.0) for v in deep) < smallest_first / 2:
        text += "Most of the effect comes through the first stage. "
    elif n_deep == n and n_first == 0:
        text += "The effect comes through the deeper stages. "
    else:
        text += "Which stage it comes through is not settled by this run. "
    stronger = sum(a <= t for a, t in zip(at, trained))
    text += (
        f"Noise switched on only when attributions are computed, in the ODE network, changes the sensitivity by "
        f"{_span(at)}; noise only during training (the SDE network, explained with its noise off) by "
        f"{_span(trained)}: noise at attribution time lowers it at least as much as noise at training time for "
        f"{stronger} of {n} methods."
    )
    return text


CLAIMS = (
    "noise in the deeper stages alone lowers the sensitivity",
    FIRST_STAGE,
    "noise at training time, not at attribution time, lowers it",
)


def _plot(results: dict, store: Store) -> str | None:
    iv = results.get("interventions") or {}
    if not iv.get("effects"):
        return None
    methods = [m for m, _ in in_run_order(iv["effects"], results)]
    order = [TRAINING_TIME, *iv["networks"]]
    fig, axes = plt.subplots(1, len(methods), figsize=(3.6 * len(methods), 0.5 * len(order) + 1.6), sharey=True,
                             squeeze=False)  # fmt: skip
    for ax, m in zip(axes[0], methods):
        for y, n in enumerate(order):
            e, v = iv["effects"][m][n]["effect"], iv["effects"][m][n]["verdict"]
            ax.errorbar(100 * e["mean"], y, xerr=[[100 * (e["mean"] - e["low"])], [100 * (e["high"] - e["mean"])]],
                        fmt="o", color="C0" if n == TRAINING_TIME else "C1" if n == iv["attribution"] else "C2",
                        mfc="white" if v == "depends" else None, capsize=3)  # fmt: skip
        ax.axvline(0, color="0.3", lw=0.8)
        ax.axvline(-100 * MARGIN, color="0.5", lw=0.8, ls=":")
        ax.set_title(title(m), fontsize=9)
        ax.set_xlabel("max-sensitivity vs ODE (%)", fontsize=8)
    axes[0][0].set_yticks(range(len(order)))
    axes[0][0].set_yticklabels([_label(n) for n in order], fontsize=8)
    axes[0][0].invert_yaxis()
    fig.suptitle(f"What an intervention shows (σ = {iv['sigma']:g}; 95% CI over seeds; hollow: depends)", fontsize=10)
    fig.tight_layout()
    return store.save_figure(fig, "interventions.png")


INTERVENTIONS = Section(
    "interventions",
    summarise,
    page="explains",
    verdicts=verdicts,
    tables=tables,
    plots={"interventions": _plot},
    fills={"intervention_summary": summary, "intervention_plain": plain_words},
)
