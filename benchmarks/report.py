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
from .store import FolderBusy, Store
from .tables import console_summary, tables

__all__ = ["REPORT", "write"]


def write(store: Store) -> dict:
    """Build the results and write ``results.json``, ``tables.md`` and the plots."""
    results = build(store)
    results["plots"] = plots(results, store)
    write_json(store.root / "results.json", results)
    atomic_write_text(store.root / "tables.md", tables(results))
    return results


def _finish(ctx) -> dict:
    results = write(ctx.store)
    print(console_summary(results))
    return results


# Last in a run: results.json, tables.md and the summary plots, from the cells the run used.
REPORT = Part("report", finish=_finish)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], allow_abbrev=False)
    parser.add_argument("--out", default="results", help="the folder of a finished run")
    args = parser.parse_args(argv)
    record = Path(args.out) / "config.json"
    if not record.exists():
        parser.error(f"{args.out} holds no run (no config.json); run python -m benchmarks first")
    try:
        cfg = Config(**json.loads(record.read_text())["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        parser.error(f"{record} is damaged ({type(err).__name__}); run python -m benchmarks --out {args.out} again")
    try:
        with Store(args.out, cfg) as store:
            store.load_manifest()
            results = write(store)
    except (FolderBusy, ValueError) as err:
        parser.error(str(err))
    print(console_summary(results))
    print(f"wrote {args.out}/results.json and {args.out}/tables.md")


if __name__ == "__main__":
    sys.exit(main())
