"""The verdict table: every claim's rows in one table (``tables.md``, the overview page), or one page's rows."""

from __future__ import annotations

import math

from .formatting import VERDICT_MARK, effect, markdown_table, seeds_phrase

__all__ = [
    "MARGINAL",
    "VERDICT_RULE",
    "console_summary",
    "counts",
    "full",
    "marginal",
    "page",
    "section",
    "verdict_table",
]

VERDICT_RULE = (
    "Every network is trained once per training seed; a seed's ODE and SDE networks share initial weights, data "
    "order and test images. Each row's effect is formed within each seed (for sensitivity: the SDE network's "
    "geometric mean over images ÷ the ODE network's, minus 1, with the interval formed on its logarithm; for "
    "amplification: the ratio of means, minus 1) and the 95% interval is Student's t over the seeds' "
    "effects (with one training seed: over the paired images, and the row says so). "
    "A claim **holds** where that interval lies entirely on the claimed side of zero, **fails** where it "
    "lies entirely on the other side, and *depends* otherwise (the seeds disagree, or the effect is too small to "
    "tell). 'seeds' counts the seeds whose own effect points the claimed way. Theorem 1's bound holds if no "
    "measured amplification exceeds it; completeness holds where the mean residual is at most "
    "{tol:g} × the mean output change, in every (seed, solver) run measured."
)
#: Units a verdict row's effect is written in without naming them.
PLAIN_UNITS = ("relative", "accuracy", "mass on object")


def _cells(r: dict) -> list[str]:
    seeds = f"{r['agree']}/{r['seeds']}" if r["seeds"] is not None else "–"
    unit = "" if r["unit"] in PLAIN_UNITS else f" ({r['unit']})"
    return [
        r["claim"],
        r["setting"],
        VERDICT_MARK[r["verdict"]],
        f"{effect(r['effect'], r['unit'])}{unit}",
        seeds,
        r["note"],
    ]


def counts(rows: list[dict]) -> str:
    """``3 hold, 1 fail, 5 depend.``"""
    n = {v: sum(r["verdict"] == v for r in rows) for v in ("holds", "fails", "depends")}
    return f"{n['holds']} hold, {n['fails']} fail, {n['depends']} depend."


def verdict_table(rows: list[dict], *, notes: bool = True) -> list[str]:
    """The rows as a Markdown table, with the count of each verdict under it (``notes``: with the note column)."""
    header = ["claim", "setting", "verdict", "effect [95% CI]", "seeds", "note"]
    cells = [_cells(r) for r in rows]
    if not notes:
        header, cells = header[:-1], [c[:-1] for c in cells]
    return [*markdown_table(header, cells), "", counts(rows)]


def full(results: dict) -> list[str]:
    """The rule, then every claim's rows (empty for a run without verdicts)."""
    rows = results.get("verdicts") or []
    if not rows:
        return []
    return [VERDICT_RULE.format(tol=results["completeness_tolerance"]), "", *verdict_table(rows), ""]


#: A decided row is marginal where the nearer end of its interval lies within this fraction
#: of the interval's half-width of the line it is decided against (half of a 95% half-width
#: is about one standard error of the effect).
MARGINAL = 0.5
MARGINAL_RULE = (
    "A decided row is *marginal* where the nearer end of its 95% interval lies within half the interval's "
    "half-width (about one standard error) of the line it is decided against: the same command on another "
    "machine or thread count trains networks that differ by rounding, and such a row can move to depends there. "
    "A row not marked can move too, less often (docs/benchmarks.md has the measured rates)."
)


def marginal(row: dict) -> bool:
    """Whether a decided row's interval ends close to its line (``MARGINAL``); never for depends.

    Rows without a line (a range, a combination of rows) are never marginal, nor are rows
    written before rows carried their line (their line is not known).
    """
    line = row.get("line")
    e = row["effect"]
    if row["verdict"] == "depends" or line is None:
        return False
    low, high = e["low"], e["high"]
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return False
    return min(abs(low - line), abs(high - line)) < MARGINAL * (high - low) / 2


def marginal_lines(rows: list[dict], seeds: int) -> list[str]:
    """``tables.md``'s account of its marginal rows, and where firmer verdicts come from."""
    decided = [r for r in rows if r["verdict"] != "depends"]
    close = [r for r in decided if marginal(r)]
    lines = [MARGINAL_RULE, ""]
    if close:
        listed = "; ".join(f"{r['claim']} — {r['setting']} ({r['verdict']})" for r in close)
        lines.append(f"**{len(close)} of {len(decided)} decided rows are marginal**: {listed}.")
    else:
        lines.append(f"None of the {len(decided)} decided rows is marginal.")
    if seeds < 40:
        lines.append(
            f"This run has {seeds} training seed(s): more (`--seeds`) narrow every interval. On the digits, "
            "`--preset full` decides every claim over 40, and the theory pages (docs/theory/sensitivity.md) show "
            "how its verdicts fare on another thread count."
        )
    return [*lines, ""]


def section(results: dict) -> list[str]:
    """``tables.md``'s opening section: the rule, every claim's rows, then which decided rows are marginal."""
    body = full(results)
    if not body:
        return []
    return ["## Verdicts", "", *body, *marginal_lines(results["verdicts"], len(results["seeds"]))]


def page(sections, results: dict, link: str) -> list[str]:
    """One page's own claims: how they are decided, each section's verdicts, and a link to every claim.

    Args:
        sections: the sections that show their claims on the page.
        results: the run's results.
        link: where the rule and every claim are (``page.md#anchor``).
    """
    seeds = len(results["seeds"])
    level = f"over {seeds} training seeds" if seeds > 1 else "over images (one training seed)"
    lines = [f"Decided {level} by a 95% interval; the rule and every other claim are in [all claims]({link})."]
    for section in sections:
        if section.page_table is not None:
            body = section.page_table(results)
        else:
            rows = section.verdicts(results)
            body = verdict_table(rows, notes=any(r["note"] for r in rows)) if rows else []
        if body:
            lines += ["", *body]
    return lines if len(lines) > 1 else ["This run has no verdicts for this page's claims."]


def console_summary(results: dict) -> str:
    """The verdicts as plain text, for the end of a run."""
    rows = results.get("verdicts") or []
    if not rows:
        return ""
    width = max(len(f"{r['claim']}: {r['setting']}") for r in rows)
    lines = [f"verdicts over {seeds_phrase(results)} (95% CI over seeds):"]
    for r in rows:
        what = f"{r['claim']}: {r['setting']}"
        unit = "runs" if r["claim"].startswith("completeness") else "seeds"
        seeds = f"  {r['agree']}/{r['seeds']} {unit}" if r["seeds"] is not None else ""
        lines.append(f"  {what:<{width}}  {r['verdict']:<7}  {effect(r['effect'], r['unit'])}{seeds}")
    return "\n".join(lines)
