"""What one claim contributes to a run's report: the report side's counterpart of a ``Part``.

A ``Section`` summarises the stored cells of its measurement into ``results.json``,
gives the claim's rows of the verdict table, its lines of ``tables.md``, its figures and
the sentences its theory page quotes. ``benchmarks.report`` holds the ordered registry
and runs each of these over every section in turn.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..store import Store

__all__ = ["Section", "verdict_row"]


def _nothing(results: dict) -> list:
    return []


@dataclass(frozen=True)
class Section:
    """One claim (or one block of measurements) of the report.

    Attributes:
        name: its name (``{{section:NAME}}`` in a page template puts its tables there).
        summarise: ``(store, results so far) -> {key: value}``, the top-level entries it
            adds to ``results.json``; it may read the entries of the sections before it.
        page: the theory page that shows its verdict rows (None: no page).
        verdicts: ``results -> rows`` of the verdict table (see ``verdict_row``).
        tables: ``results -> lines`` of ``tables.md`` (empty: nothing to show).
        plots: figure name -> ``(results, store) -> path or None``.
        fills: page placeholder -> ``results -> Markdown``.
        page_table: ``results -> lines``, its verdicts as its page shows them (None: the
            rows of ``verdicts`` as a plain verdict table).
    """

    name: str
    summarise: Callable[[Store, dict], dict]
    page: str | None = None
    verdicts: Callable[[dict], list[dict]] = _nothing
    tables: Callable[[dict], list[str]] = _nothing
    plots: Mapping[str, Callable[[dict, Store], str | None]] = field(default_factory=dict)
    fills: Mapping[str, Callable[[dict], str]] = field(default_factory=dict)
    page_table: Callable[[dict], list[str]] | None = None


def verdict_row(claim, setting, v, effect, unit, agree=None, seeds=None, note="", line=0.0) -> dict:
    """One row of the verdict table: a claim in one setting, its verdict and effect [interval].

    Args:
        claim: what the paper claims.
        setting: where it was measured (method, σ, ...).
        v: ``holds``, ``fails`` or ``depends``.
        effect: ``{"mean", "low", "high"}`` in ``unit``.
        unit: ``relative``, ``accuracy``, ``mass on object`` or a free text.
        agree, seeds: how many seeds (or runs) point the claimed way, out of how many.
        note: a remark shown beside the row.
        line: the value the interval is decided against (0 for most claims); None where the
            verdict is not the interval's side of a line (a range, a combination of rows).
    """
    return {
        "claim": claim,
        "setting": setting,
        "verdict": v,
        "effect": effect,
        "unit": unit,
        "agree": agree,
        "seeds": seeds,
        "note": note,
        "line": line,
    }
