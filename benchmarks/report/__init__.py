"""A run's report: ``results.json``, ``tables.md`` and the summary figures, one section per claim.

    python -m benchmarks.report [--out results]

Each claim of the paper (and each block of measurements) is one ``Section`` in its own
module, as each measurement is one ``Part`` on the measuring side: its summary of the
stored cells, its verdict rows, its tables, its figures and what its theory page quotes.
``SECTIONS`` is the ordered registry; the loops below run each of those over every
section in turn. Nothing in the report is typed in by hand: it is computed from the
cells on disk.

Adding a claim: its measuring module (a ``Part`` declaring the options of its cells) with
a line in ``benchmarks.registry``, a module here with one ``Section`` and a line in
``SECTIONS``, and a page template (or a placeholder in one) under
``benchmarks/doc_templates/``. A job writes the report last (``benchmarks.pipeline``).
"""

from __future__ import annotations

import json

from ..common import atomic_write_text, environment, write_json
from ..store import Store
from . import costs
from . import verdicts as verdict_table
from .completeness import COMPLETENESS
from .dose import DOSE
from .formatting import seeds_phrase
from .interventions import INTERVENTIONS
from .local_bound import LOCAL_BOUND
from .localisation import LOCALISATION
from .mechanism import MECHANISM
from .networks import NETWORKS
from .power import POWER
from .robustness import ROBUSTNESS
from .section import Section
from .sensitivity import SENSITIVITY
from .sweep import SWEEP
from .theorem1 import THEOREM1

__all__ = ["SECTIONS", "Section", "build", "console_summary", "plots", "tables", "write"]

#: Every section, in the order of ``tables.md`` and of the verdict table. A section may
#: read the summaries of the sections before it.
SECTIONS: tuple[Section, ...] = (
    NETWORKS,
    DOSE,
    SENSITIVITY,
    POWER,
    ROBUSTNESS,
    LOCALISATION,
    THEOREM1,
    LOCAL_BOUND,
    MECHANISM,
    INTERVENTIONS,
    COMPLETENESS,
    SWEEP,
)

console_summary = verdict_table.console_summary


def preset_of(cfg) -> str:
    """``"default"``, the name of the preset the configuration is (wherever it runs), or ``"custom"``.

    Where a run's files are (``--data-root``, ``--weights``; ``--download``) is no part of
    a preset: every user's copy of the same files is elsewhere. Nor is ``--threads``: the
    same configuration on another thread count rounds otherwise, and the run records it.
    """
    from ..config import Config
    from ..presets import PRESETS

    placement = {"device": "cpu", "chunk": 0, "ig_batch": 0}  # where and in what pieces: the same results
    placement |= {"data_root": None, "weights": None, "download": False}
    placement |= {"threads": 1}  # the same configuration, rounded otherwise (recorded with the run)
    mine = {**cfg.to_dict(), **placement}
    for name, values in {"default": {}, **PRESETS}.items():
        if mine == {**Config(**values).to_dict(), **placement}:
            return name
    return "custom"


def build(store: Store) -> dict:
    """Every summary of the run, from the cells it used: the contents of ``results.json``."""
    cfg = store.cfg
    results = {
        "config": cfg.to_dict(),
        "preset": preset_of(cfg),
        "digest": cfg.digest(),
        "seeds": cfg.seeds,
        "environment": json.loads((store.root / "config.json").read_text()).get("environment", environment()),
    }
    for section in SECTIONS:
        results.update(section.summarise(store, results))
    results["verdicts"] = [row for section in SECTIONS for row in section.verdicts(results)]
    results["figures"] = {k: v["path"] for k, v in store.results("figures").items()}
    results["compute_seconds"] = costs.compute_seconds(store)
    results["untimed_networks"] = costs.untimed_networks(store)
    return results


def _header(results: dict) -> list[str]:
    """The report's title and the run's provenance."""
    cfg = results["config"]
    env = results["environment"]
    return [
        "# Benchmark results",
        "",
        f"{seeds_phrase(results)}; configuration digest `{results['digest']}`, data `{cfg['data']}`, "
        f"architecture `{cfg['arch']}`, device `{env.get('device')}` "
        f"({env.get('processor')}, {env.get('cpu_count')} CPUs, {env.get('gpu', 'no GPU')}), "
        f"torch {env['versions']['torch']}, neuralsde {env['versions']['neuralsde']}.",
        "",
        *_scope(results),
    ]


def _scope(results: dict) -> list[str]:
    """What kind of run this is: the default run says it is the quick look, and how to run the full one."""
    preset = results.get("preset")
    if preset == "default":
        return [
            "This is the default run, a quick look: its intervals are wide, and many rows *depend* for want of "
            "seeds. `python -m benchmarks --preset full` runs the full protocol, sized for ±5-point intervals; "
            "the documentation's theory pages come from it.",
            "",
        ]
    return [f"Preset: `{preset}`.", ""] if preset not in (None, "custom") else []


def _figures(results: dict) -> list[str]:
    paths = sorted(results["figures"].values()) + sorted(results.get("plots", {}).values())
    if not paths:
        return []
    return ["## Figures", ""] + [f"- `{p}`" for p in paths] + [""]


def tables(results: dict) -> str:
    """``tables.md``: the provenance, the verdict table, every section's tables, the list of figures."""
    lines = _header(results) + verdict_table.section(results)
    for section in SECTIONS:
        lines += section.tables(results)
    return "\n".join(lines + _figures(results))


def plots(results: dict, store: Store) -> dict:
    """Every summary figure the results allow; returns name -> path (relative to the run's folder)."""
    made = {}
    for section in SECTIONS:
        for name, draw in section.plots.items():
            path = draw(results, store)
            if path is not None:
                made[name] = path
    return made


def write(store: Store) -> dict:
    """Build the results and write ``results.json``, ``tables.md`` and the figures."""
    results = build(store)
    results["plots"] = plots(results, store)
    write_json(store.root / "results.json", results)
    atomic_write_text(store.root / "tables.md", tables(results))
    return results
