"""The parts of the main job, in the order they run: one line per part.

A part is a ``Part`` (``benchmarks.context``) in a module of its own, which declares the
options each kind of cell it writes depends on. This registry names it, says where it is
and which kinds of cells it writes, and is the only list of parts: ``--parts`` and its
default, the order a job runs them in, the kinds a store knows and the main job's parts
all come from it. A part is imported only when a run asks for it, so this module imports
none (the configuration reads the names).

A new claim adds one line here and one ``Section`` to ``benchmarks.report.SECTIONS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable

__all__ = ["KINDS", "NAMES", "PARTS", "load"]

#: name -> (where its Part is, ``module:attribute``; the kinds of cells it writes), in run order.
PARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sensitivity": ("benchmarks.sensitivity:SENSITIVITY", ("sensitivity",)),
    "robustness": ("benchmarks.sensitivity:ROBUSTNESS", ("robustness",)),
    "localisation": ("benchmarks.sensitivity:LOCALISATION", ("localisation",)),
    "theorem1": ("benchmarks.theorem1:THEOREM1", ("theorem1",)),
    "mechanism": ("benchmarks.mechanism:MECHANISM", ("mechanism",)),
    "interventions": ("benchmarks.interventions:INTERVENTIONS", ("interventions", "intervention_patterns")),
    "completeness": ("benchmarks.theorem1:COMPLETENESS", ("completeness",)),
    "figures": ("benchmarks.figures:FIGURES", ("figures",)),
}
#: The parts' names, in the order they run.
NAMES: tuple[str, ...] = tuple(PARTS)
#: Every kind of cell the parts write.
KINDS: tuple[str, ...] = tuple(kind for _, kinds in PARTS.values() for kind in kinds)


def load(names: Iterable[str] | None = None) -> list:
    """The ``Part`` objects of ``names`` (default: every part), in run order.

    Raises:
        ValueError: for a name that is not a part, or a part whose declared kinds are not
            the ones its line here gives.
    """
    wanted = NAMES if names is None else tuple(names)
    unknown = [n for n in wanted if n not in PARTS]
    if unknown:
        raise ValueError(f"unknown parts {unknown}; valid: {', '.join(NAMES)}")
    parts = []
    for name in (n for n in NAMES if n in wanted):
        where, kinds = PARTS[name]
        module, attribute = where.split(":")
        part = getattr(importlib.import_module(module), attribute)
        if part.name != name or tuple(part.options) != kinds:
            raise ValueError(
                f"{where} is part {part.name!r} writing {tuple(part.options)}; the registry says {name!r}, {kinds}"
            )
        parts.append(part)
    return parts
