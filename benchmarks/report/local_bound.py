"""Local Theorem 1: linearised bounds along each image's trajectory, against the Jacobian norm they bound."""

from __future__ import annotations

from ..networks import sigma_of
from ..store import Store
from .formatting import defined, markdown_table, ratio
from .plotting import plt
from .section import Section
from .stats import clean, median, quantiles

__all__ = ["BOUND_GOAL", "BOUND_SLACK", "LOCAL_BOUND", "STATEMENTS", "paragraph"]


#: Each statement of the local bound: (bound key, measured key, what the bound is for).
STATEMENTS = {
    "network": ("bound", "measured", "the stage as computed (one Euler step per block): product of block norms"),
    "flow_log_norm": ("flow_bound", "flow_measured", "the drift's flow: exp of the integrated logarithmic norm"),
    "flow_blocks": ("flow_block_bound", "flow_measured", "the drift's flow: product of the blocks' flow-map norms"),
    "pathwise": ("bound", "measured", "the SDE along one fixed path, noise on: product of block norms"),
}

#: The goal for a tight bound: median bound / measured at most this, in every stage.
BOUND_GOAL = 10.0

#: Lanczos converges to the norms from below, to a relative 1e-7 on squared norms; a
#: bound counts as below its measured value only beyond this relative slack.
BOUND_SLACK = 1e-5

#: The statements whose bound is a product of per-block norms: in a stage with one
#: continuous block it equals the measured norm by construction (ratio 1), so such a
#: stage says nothing about how tight the statement is.
PRODUCTS = ("network", "pathwise", "flow_blocks")

STATEMENT_TITLES = {
    "network": "network (discrete)",
    "pathwise": "SDE pathwise (noise on)",
    "flow_log_norm": "flow, log-norm",
    "flow_blocks": "flow, block product",
}


def local_bounds(store: Store) -> dict:
    """Bound ÷ measured of every statement, per stage (over networks, seeds and images) and per network."""
    stages: dict = {}
    per_model: dict = {}
    blocks: dict[str, int] = {}
    for cell in store.results("theorem1").values():
        for st in cell["stages"]:
            blocks[st["stage"]] = len(st["L"])  # its continuous blocks (one Lipschitz factor each)
            for statement, (bkey, mkey, _) in STATEMENTS.items():
                src = st.get("pathwise" if statement == "pathwise" else "local")
                if not src or bkey not in src:
                    continue
                pairs = list(zip(src[bkey], src[mkey]))
                ratios = [b / m for b, m in pairs if m > 0]
                stages.setdefault(st["stage"], {}).setdefault(statement, []).extend(ratios)
                row = per_model.setdefault(cell["model"], {}).setdefault(st["stage"], {})
                entry = row.setdefault(statement, {"bound": [], "measured": [], "ratio": []})
                entry["bound"] += [b for b, _ in pairs]
                entry["measured"] += [m for _, m in pairs]
                entry["ratio"] += ratios
            if "local" in st:
                amp = [j / a for j, a in zip(st["local"]["measured"], st["max"]) if a > 0]
                stages[st["stage"]].setdefault("jacobian_over_amplification", []).extend(amp)
    summary = {
        stage: {name: quantiles(values) for name, values in rows.items()} for stage, rows in sorted(stages.items())
    }
    trivial = sorted(stage for stage, n in blocks.items() if n == 1)
    judged = {s: [st for st in summary if st not in trivial or s not in PRODUCTS] for s in STATEMENTS}
    meets = {
        s: (all(summary[st][s]["q50"] <= BOUND_GOAL for st in judged[s] if s in summary[st]) if judged[s] else None)
        for s in STATEMENTS
    }
    below = {s: sum(1 for rows in stages.values() for r in rows.get(s, []) if r < 1 - BOUND_SLACK) for s in STATEMENTS}
    models = {
        model: {
            stage: {
                s: {"bound": median(e["bound"]), "measured": median(e["measured"]), "ratio": median(e["ratio"])}
                for s, e in rows.items()
            }
            for stage, rows in sorted(st.items())
        }
        for model, st in sorted(per_model.items(), key=lambda kv: sigma_of(kv[0]))
    }
    points = {
        s: [
            (model, b, m)
            for model, st in per_model.items()
            for rows in st.values()
            if s in rows
            for b, m in zip(rows[s]["bound"], rows[s]["measured"])
        ]
        for s in ("network", "flow_log_norm")
    }
    return clean(
        {
            "statements": {s: v[2] for s, v in STATEMENTS.items()},
            "stages": summary,
            "per_model": models,
            "goal": BOUND_GOAL,
            "meets_goal": meets,
            # Stages left out of the goal for the block-product statements: one continuous block.
            "by_construction": trivial,
            "slack": BOUND_SLACK,
            "below": below,
            "points": points,
        }
    )


def summarise(store: Store, results: dict) -> dict:
    return {"local_bound": local_bounds(store)}


def _bound_table(lb: dict) -> list[str]:
    rows = [
        [stage, title, ratio(q["q50"]), ratio(q["q10"]), ratio(q["q90"]), ratio(q["q0"], 3), ratio(q["q100"]), q["n"]]
        for stage, by_statement in lb["stages"].items()
        for s, title in STATEMENT_TITLES.items()
        for q in [by_statement.get(s)]
        if q and q["n"]
    ]
    return markdown_table(["stage", "statement", "median", "10%", "90%", "min", "max", "images"], rows)


def tables(results: dict) -> list[str]:
    """The tightness of each statement of the local bound, per stage (opens "What explains it")."""
    lb = results.get("local_bound")
    if not lb or not lb.get("stages"):
        return []
    out = ["## What explains it", "", "### Local Theorem 1: bound ÷ measured Jacobian norm, per image", ""]
    out += [f"- **{title}**: {lb['statements'][s]}." for s, title in STATEMENT_TITLES.items() if s in lb["statements"]]
    out += ["", *_bound_table(lb), ""]
    below = ", ".join(f"{title} {lb['below'][s]}" for s, title in STATEMENT_TITLES.items() if s in lb["below"])
    out += [f"Images whose bound lies below its measured value (beyond a relative {lb['slack']:g}): {below}.", ""]
    return out


def _goal(lb: dict, statement: str) -> str:
    """Whether the median ratio is within the goal in every stage that can tell, and which stages those are."""
    met = lb["meets_goal"][statement]
    left_out = lb.get("by_construction", []) if statement in PRODUCTS else []
    if met is None:
        return f"no stage can tell: {_list(left_out)} have one continuous block each"
    text = f"{'met' if met else 'not met'} in every stage"
    if left_out:
        text += (
            f" that can tell; {_list(left_out)}, with one continuous block each, meet it by construction and are "
            "left out"
        )
    return text


def _list(items: list[str]) -> str:
    return ", ".join(items[:-1]) + f" and {items[-1]}" if len(items) > 1 else "".join(items)


def paragraph(results: dict, lb: dict) -> str:
    def medians(statement: str) -> str:
        return "; ".join(f"{s} {ratio(r[statement]['q50'])}" for s, r in lb["stages"].items() if statement in r)

    below = lb["below"]
    th = results.get("theorem1", {}).get("bound_over_measured", {})
    text = (
        "**Local bounds.** Along each image's own trajectory, the product of the block Jacobian norms bounds "
        f"the network's stage Jacobian norm within a median factor of {medians('network')} "
        f"(goal ≤ {ratio(lb['goal'], 0)}: {_goal(lb, 'network')}). "
        f"For the continuous flow of the drift, the integrated logarithmic norm is within {medians('flow_log_norm')} "
        f"({_goal(lb, 'flow_log_norm')}), and the product of the "
        f"blocks' flow maps within {medians('flow_blocks')}. The gap between the last two is the logarithmic "
        "norm's own slack, which arises inside the blocks: there it measures the fastest instantaneous growth of "
        "a far from normal Jacobian, not the growth the trajectory sees. "
    )
    text += (
        "No bound fell below its measured value for any image."
        if not sum(below.values())
        else f"Bounds below their measured value: {below}."
    )
    if th and defined(th.get("min")):
        text += (
            f" Theorem 1's global bound exceeds the measured amplification {ratio(th['min'], 1)} to "
            f"{ratio(th['max'], 1)} times."
        )
    return text


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


LOCAL_BOUND = Section("local_bound", summarise, page="explains", tables=tables, plots={"local_bound": _bound_plot})
