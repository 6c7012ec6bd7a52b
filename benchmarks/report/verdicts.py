"""The verdict table: every claim's rows in one table (``tables.md``, the overview page), or one page's rows."""

from __future__ import annotations

from .formatting import VERDICT_MARK, effect, markdown_table, seeds_phrase

__all__ = ["VERDICT_RULE", "console_summary", "counts", "full", "page", "section", "verdict_table"]

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


def section(results: dict) -> list[str]:
    """``tables.md``'s opening section: the rule, then every claim's rows."""
    body = full(results)
    return ["## Verdicts", "", *body] if body else []


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
