"""Theorem 1: its bound against the measured amplification, and the paper's claim that the SDE amplifies less."""

from __future__ import annotations

import math

from ..networks import ODE, sigma_of
from ..store import Store
from .formatting import VERDICT_MARK, effect, markdown_table, number
from .plotting import plt
from .section import Section, verdict_row
from .stats import finite_mean, mean_ci, seed_effect, verdict

__all__ = ["THEOREM1"]


def summarise(store: Store, results: dict) -> dict:
    cells = store.results("theorem1")
    per_model: dict = {}
    amps: dict = {}  # model -> stage -> seed -> per-image amplification
    ratios = []
    for cell in cells.values():
        for st in cell["stages"]:
            measured = max(st["max"]) if st["max"] else math.nan
            holds = measured <= st["bound_onesided"] <= st["bound"]
            row = per_model.setdefault(cell["model"], {}).setdefault(
                st["stage"], {"stage": st["stage"], "seeds": {}, "holds": True}
            )
            row["seeds"][str(cell["seed"])] = {
                "L": st["L"],
                "C": st["C"],
                "T": st["T"],
                "bound": st["bound"],
                "bound_max_C": st["bound_max_C"],
                "bound_onesided": st["bound_onesided"],
                "measured_max": measured,
                "measured_mean": finite_mean(st["max"]),
            }
            row["holds"] = row["holds"] and holds
            ratios.append(st["bound"] / measured if measured else math.nan)
            amps.setdefault(cell["model"], {}).setdefault(st["stage"], {})[cell["seed"]] = st["max"]
    for rows in per_model.values():
        for row in rows.values():
            seeds = list(row["seeds"].values())
            for key in ("bound", "bound_onesided", "measured_max", "measured_mean"):
                row[key] = mean_ci([s[key] for s in seeds])
            row["bound_over_measured"] = [s["bound"] / s["measured_max"] for s in seeds]
    claim = {}
    for sde in [n for n in amps if sigma_of(n) > 0]:
        stages = {}
        for stage, ode_vals in amps.get(ODE, {}).items():
            if stage in amps[sde]:
                stages[stage] = seed_effect(amps[sde][stage], ode_vals, sign=-1)
        claim[sde] = {"stages": stages, "network": _across_stages(amps[sde], amps.get(ODE, {}))}
    return {
        "theorem1": {
            "per_model": {
                m: list(rows.values()) for m, rows in sorted(per_model.items(), key=lambda kv: sigma_of(kv[0]))
            },
            "claim": claim,
            "all_hold": all(r["holds"] for rows in per_model.values() for r in rows.values()),
            "bound_over_measured": {"min": min(ratios, default=math.nan), "max": max(ratios, default=math.nan)},
        }
    }


def _across_stages(sde: dict, ode: dict) -> dict:
    """The SDE's amplification relative to the ODE's, as the geometric mean over stages, decided over seeds."""
    stages = [s for s in sde if s in ode]
    seeds = sorted(set.intersection(*(set(sde[s]) & set(ode[s]) for s in stages))) if stages else []
    effects = []
    for seed in seeds:
        logs = [math.log(finite_mean(sde[s][seed]) / finite_mean(ode[s][seed])) for s in stages]
        effects.append(math.exp(sum(logs) / len(logs)) - 1.0)
    ci = mean_ci(effects)
    return {
        "effect": ci,
        "per_seed": effects,
        "agree": sum(1 for e in effects if e < 0),
        "seeds": len(effects),
        "verdict": verdict(ci["low"], ci["high"], -1) if len(effects) >= 2 else "depends",
    }


def verdicts(results: dict) -> list[dict]:
    th = results["theorem1"]
    rows = []
    if th["per_model"]:
        ratio = th["bound_over_measured"]
        rows.append(
            verdict_row(
                "Theorem 1's bound holds",
                "every network, stage, seed and image",
                "holds" if th["all_hold"] else "fails",
                {"mean": ratio["min"], "low": ratio["min"], "high": ratio["max"]},
                "bound ÷ measured (range)",
                line=None,
            )
        )
    for sde, c in th["claim"].items():
        net = c["network"]
        rows.append(
            verdict_row(
                "the SDE amplifies perturbations less",
                f"σ = {sigma_of(sde):g}, geometric mean over stages",
                net["verdict"],
                net["effect"],
                "relative",
                net["agree"],
                net["seeds"],
            )
        )
    return rows


def _median_span(row: dict, key: str) -> tuple[float, float, float]:
    """(median, smallest, largest) over seeds, as the table gives them."""
    values = sorted(s[key] for s in row["seeds"].values())
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    return median, values[0], values[-1]


def _span(row: dict, key: str) -> str:
    """The median over seeds (smallest to largest seed)."""
    median, low, high = _median_span(row, key)
    return f"{number(median, 3)} ({number(low, 3)} to {number(high, 3)})"


def tables(results: dict) -> list[str]:
    """Theorem 1: bounds, measured amplification and the ODE-vs-SDE claim."""
    th = results["theorem1"]
    if not th["per_model"]:
        return []
    rows = [
        [
            model,
            r["stage"],
            _span(r, "bound"),
            _span(r, "bound_onesided"),
            _span(r, "measured_max"),
            f"{number(min(r['bound_over_measured']), 1)} to {number(max(r['bound_over_measured']), 1)}",
            "yes" if r["holds"] else "NO",
        ]
        for model, model_rows in th["per_model"].items()
        for r in model_rows
    ]
    header = ["network", "stage", r"$e^{\int C}$", "one-sided", "measured (max over images)", "bound / measured"]
    lines = [
        "## Theorem 1: bound against measured amplification",
        "",
        r"$C_k = (1 + L_k)/h$ bounds the Lipschitz constant of block $k$'s drift ($L_k$: product of the "
        r"conv/BN operator norms); $e^{\int C} = \prod_k e^{1+L_k}$ is Theorem 1's bound, $e^{\sum_k L_k}$ "
        r"its one-sided refinement, and 'measured' the largest $\lVert F(x+\delta)-F(x)\rVert/\lVert\delta\rVert$ "
        "found (random, worst-direction and PGD search). Each entry is the median over seeds (smallest to largest "
        "seed); 'holds' if no seed's measured value exceeds its bounds.",
        "",
        *markdown_table([*header, "holds"], rows),
        "",
    ]
    for sde, claim in th["claim"].items():
        rows = []
        for stage, c in claim["stages"].items():
            ode_mean = sum(p["b"] for p in c["per_seed"]) / max(len(c["per_seed"]), 1)
            sde_mean = sum(p["a"] for p in c["per_seed"]) / max(len(c["per_seed"]), 1)
            rows.append(
                [
                    stage,
                    number(ode_mean, 3),
                    number(sde_mean, 3),
                    effect(c["effect"], "relative"),
                    f"{c['agree']}/{c['seeds']}",
                    VERDICT_MARK[c["verdict"]],
                ]
            )
        net = claim["network"]
        rows.append(
            [
                "all (geometric mean)",
                "",
                "",
                effect(net["effect"], "relative"),
                f"{net['agree']}/{net['seeds']}",
                VERDICT_MARK[net["verdict"]],
            ]
        )
        lines += [
            r"The paper's claim $\varepsilon_F/\varepsilon_x(\text{SDE}) \le "
            r"\varepsilon_F/\varepsilon_x(\text{ODE})$, "
            f"ODE vs {sde}: the SDE's mean amplification relative to the ODE's, per seed [95% CI over seeds]:",
            "",
            *markdown_table(["stage", "ODE mean", "SDE mean", "SDE vs ODE", "seeds lower", "verdict"], rows),
            "",
        ]
    return lines


def summary(results: dict) -> str:
    rows = [r for rs in results["theorem1"]["per_model"].values() for r in rs]
    if not rows:
        return "No Theorem 1 results in this run."
    held = sum(r["holds"] for r in rows)
    seeds = len(results["seeds"])
    outcome = " — every one, as it must."
    if held < len(rows):
        outcome = " — **a violation: a bug in the library or the bound.**"
    full = [x for r in rows for x in r["bound_over_measured"]]
    onesided = [s["bound_onesided"] / s["measured_max"] for r in rows for s in r["seeds"].values()]
    return (
        f"In {held} of {len(rows)} (network, stage) pairs, for each of {seeds} training seeds, the measured "
        f"amplification stayed below both bounds"
        + outcome
        + rf" The bounds are far from tight: Theorem 1's $e^{{\int_0^T C\,dt}}$ exceeds the largest amplification "
        f"found by a factor between {min(full):.3g} and {max(full):.3g}, and the one-sided bound by "
        f"{min(onesided):.3g} to {max(onesided):.3g}. The equality at extreme points that step 4 of the proof "
        "assumes is nowhere near."
    )


def claim_summary(results: dict) -> str:
    claim = results["theorem1"]["claim"]
    if not claim:
        return ""
    counts = {"holds": 0, "fails": 0, "depends": 0}
    for c in claim.values():
        for stage in c["stages"].values():
            counts[stage["verdict"]] += 1
    n = sum(counts.values())
    return (
        f"**The paper's conclusion, measured.** Over {n} (SDE network, stage) comparisons with the ODE network, "
        f"decided over {len(results['seeds'])} training seeds, the SDE-trained network amplified perturbations "
        f"less (95% CI over seeds below 0) in {counts['holds']}, more in {counts['fails']}, and neither reliably in "
        f"{counts['depends']}. Where the SDE networks' attributions are less sensitive (see the "
        f"[sensitivity page](sensitivity.md)), the measured amplification of their residual flows does not "
        f"explain it the way the proof's last step says."
    )


def _plot(results: dict, store: Store) -> str | None:
    """One panel per stage: Theorem 1's bound, the one-sided bound and the measured amplification per network."""
    th = results["theorem1"]["per_model"]
    if not th:
        return None
    stages = list(dict.fromkeys(r["stage"] for rows in th.values() for r in rows))
    fig, axes = plt.subplots(1, len(stages), figsize=(3.6 * len(stages), 3.9), sharey=True, squeeze=False)
    series = (
        ("bound", r"Theorem 1: $e^{\int C\,dt}$"),
        ("bound_onesided", r"one-sided bound $e^{\sum L_k}$"),
        ("measured_max", "measured (max over images)"),
    )
    for ax, stage in zip(axes[0], stages):
        names = [m for m, rows in th.items() if any(r["stage"] == stage for r in rows)]
        rows = [next(r for r in th[m] if r["stage"] == stage) for m in names]
        for j, (key, label) in enumerate(series):
            spans = [_median_span(r, key) for r in rows]
            ax.bar(
                [x + (j - 1) * 0.27 for x in range(len(rows))],
                [med for med, _, _ in spans],
                0.27,
                yerr=[[med - lo for med, lo, _ in spans], [hi - med for med, _, hi in spans]],
                capsize=2,
                label=label,
            )
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(["ODE" if m == ODE else f"σ {sigma_of(m):g}" for m in names], fontsize=9)
        ax.set_title(stage, fontsize=10)
    axes[0][0].set_ylabel(r"$\|F(x+\delta) - F(x)\| / \|\delta\|$")
    axes[0][-1].legend(fontsize=8, loc="upper right")
    fig.suptitle(
        "Theorem 1: bound vs measured amplification, per stage (median over seeds; bars: smallest to largest)",
        fontsize=10,
    )
    fig.tight_layout()
    return store.save_figure(fig, "theorem1.png")


THEOREM1 = Section(
    "theorem1",
    summarise,
    page="theorem1",
    verdicts=verdicts,
    tables=tables,
    plots={"theorem1": _plot},
    fills={"theorem1_summary": summary, "claim_summary": claim_summary},
)
