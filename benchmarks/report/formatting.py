"""How the report writes numbers, intervals, method names and Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Sequence

from ..config import METHOD_TITLES

__all__ = [
    "VERDICT_MARK",
    "ci",
    "defined",
    "diff",
    "effect",
    "flags",
    "in_run_order",
    "markdown_table",
    "number",
    "percent",
    "ratio",
    "seeds_phrase",
    "sigma_label",
    "title",
]

VERDICT_MARK = {"holds": "**holds**", "fails": "**fails**", "depends": "depends"}


def number(x, digits: int = 4, *, small: float = 1e-3) -> str:
    """A number for a report table: fixed digits, scientific from 1e4 and below ``small``, "–" if undefined."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, float) and (abs(x) >= 1e4 or (x != 0 and abs(x) < small)):
        return f"{x:.2e}"
    return f"{x:.{digits}f}"


def ratio(x, digits: int = 2) -> str:
    """A correlation or a ratio: fixed digits, never scientific for small values ("0.00", not 6e-04)."""
    return number(x, digits, small=0.0)


def defined(x) -> bool:
    """A number, not None (an undefined value in results.json) nor NaN."""
    return x is not None and math.isfinite(x)


def percent(x) -> str:
    """A relative change for a report table, e.g. "+4.1%"; "–" if undefined."""
    return f"{100 * x:+.1f}%" if x is not None and math.isfinite(x) else "–"


def ci(c: dict, digits: int = 4) -> str:
    """A mean with its interval: ``mean [low, high]``."""
    return f"{number(c['mean'], digits)} [{number(c['low'], digits)}, {number(c['high'], digits)}]"


def diff(c: dict, digits: int = 4) -> str:
    """A paired difference with its 95% CI (``mean_diff``, ``ci_low``, ``ci_high``)."""
    return f"{number(c['mean_diff'], digits)} [{number(c['ci_low'], digits)}, {number(c['ci_high'], digits)}]"


def effect(c: dict, unit: str) -> str:
    """An effect with its interval, in its unit (a verdict row's ``unit``)."""
    if unit == "relative" or unit.startswith("relative per"):
        return f"{percent(c['mean'])} [{percent(c['low'])}, {percent(c['high'])}]"
    if unit == "bound ÷ measured (range)":
        return f"{number(c['low'], 1)} to {number(c['high'], 1)}"
    if unit.endswith("(median, range)"):
        return f"{number(c['mean'], 3)} ({number(c['low'], 3)} to {number(c['high'], 3)})"
    if unit in ("accuracy", "mass on object"):
        return f"{100 * c['mean']:+.2f} pt [{100 * c['low']:+.2f}, {100 * c['high']:+.2f}]"
    return f"{number(c['mean'], 3)} [{number(c['low'], 3)}, {number(c['high'], 3)}]"


def title(method: str) -> str:
    """An attribution method's name as the tables write it."""
    return METHOD_TITLES.get(method, method)


def in_run_order(by_method: dict, results: dict) -> list[tuple[str, object]]:
    """``by_method``'s items in the run's order of methods (results.json sorts its keys)."""
    order = {m: i for i, m in enumerate(results["config"]["methods"])}
    return sorted(by_method.items(), key=lambda kv: order.get(kv[0], len(order)))


def sigma_label(sigma: float) -> str:
    return f"σ = {sigma:g}"


def seeds_phrase(results: dict) -> str:
    """``5 training seeds (0, 1, 2, 3, 4)``."""
    seeds = results["seeds"]
    return f"{len(seeds)} training seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})"


def flags(seeds: list[int]) -> str:
    """The warning a table title carries for seeds whose networks differ in accuracy."""
    return f" — **unequal accuracy in seed(s) {', '.join(map(str, seeds))}**" if seeds else ""


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> list[str]:
    """A Markdown table as lines; a ``|`` inside a cell is escaped, so it cannot split the cell.

    Raises:
        ValueError: if a row has another number of cells than the header.
    """

    def line(cells) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    lines = [line(header), "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f"a table row has {len(row)} cells, its header {len(header)}: {row}")
        lines.append(line(row))
    return lines
