"""Turn a run's cells into ``results.json``, ``tables.md`` and summary plots.

    python -m benchmarks.report [--out results]

The summary is computed from the cells on disk (``results``), then written as Markdown
tables (``tables``) and drawn as plots (``plots``); nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import atomic_write_text, write_json
from .config import Config
from .pipeline import Part
from .plots import plots
from .results import build
from .store import Store
from .tables import tables

__all__ = ["REPORT", "write"]


def write(store: Store) -> dict:
    """Build the results and write ``results.json``, ``tables.md`` and the plots."""
    results = build(store)
    results["plots"] = plots(results, store)
    write_json(store.root / "results.json", results)
    atomic_write_text(store.root / "tables.md", tables(results))
    return results


# Last in a run: results.json, tables.md and the summary plots, from every cell on disk.
REPORT = Part("report", finish=lambda ctx: write(ctx.store))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="results")
    args = parser.parse_args(argv)
    record = Path(args.out) / "config.json"
    if not record.exists():
        parser.error(f"{args.out} holds no run (no config.json); run python -m benchmarks first")
    cfg = Config(**json.loads(record.read_text())["config"])
    write(Store(args.out, cfg))
    print(f"wrote {args.out}/results.json and {args.out}/tables.md")


if __name__ == "__main__":
    sys.exit(main())
