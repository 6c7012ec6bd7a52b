"""``python -m benchmarks.report [--out results]``: the report of a finished run, again, from its cells."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import Config
from ..store import FolderBusy, Store
from . import console_summary, write


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Turn a run's cells into results.json, tables.md and the summary figures.",
        allow_abbrev=False,
    )
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
        with Store(args.out, cfg, measure=False) as store:
            store.load_manifest()
            results = write(store)
    except (FolderBusy, ValueError) as err:
        parser.error(str(err))
    print(console_summary(results))
    print(f"wrote {args.out}/results.json and {args.out}/tables.md")


if __name__ == "__main__":
    sys.exit(main())
