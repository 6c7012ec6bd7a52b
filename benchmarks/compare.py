"""Two runs of one command, compared row by row: ``python -m benchmarks.compare A B [--json FILE]``.

Reads ``A/results.json`` and ``B/results.json`` (two finished runs of the same
configuration, e.g. on 1 and on 2 threads) and prints, for every claim both runs have,
the rows that *flip* (holds in one, fails in the other) and those that *move* (decided in
one, depends in the other), with both verdicts and effects. Runs of different
configurations are refused. It writes nothing unless ``--json`` names a file for the
comparison (the record ``python -m benchmarks.docs --compare`` also takes).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .common import write_json
from .report import agreement
from .report.formatting import effect

__all__ = ["main"]


def _load(parser: argparse.ArgumentParser, folder: Path) -> tuple[dict, list]:
    path = folder / "results.json"
    try:
        results = json.loads(path.read_text())
    except FileNotFoundError:
        parser.error(f"{folder} holds no results.json; run python -m benchmarks --out {folder} first")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        parser.error(f"{path} is unreadable ({type(err).__name__})")
    if not isinstance(results, dict) or "verdicts" not in results or "digest" not in results:
        parser.error(f"{path} does not hold a finished run's results")
    try:
        runs = json.loads((folder / "runs.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        runs = []
    return results, runs if isinstance(runs, list) else []


def lines(a: dict, b: dict, labels: tuple[str, str]) -> list[str]:
    """The comparison as text: a summary line, then one line per row that differs."""
    c = agreement.compare(a, agreement.record(b, []))
    out = [
        f"{labels[0]} ({c['threads'][0]} thread(s)) against {labels[1]} ({c['threads'][1]} thread(s)), "
        f"configuration digest {a['digest']}: of {c['compared']} rows both have, {len(c['differ'])} differ: "
        f"{c['flips']} flip, {len(c['differ']) - c['flips']} move"
        + (f"; {c['only_one']} row(s) are in one run only" if c["only_one"] else "")
    ]
    for r in c["differ"]:
        this, other = r["this"], r["other"]
        out.append(
            f"  {r['change']:<4}  {r['claim']}: {r['setting']}: {this['verdict']} "
            f"{effect(this['effect'], this['unit'])} | {other['verdict']} {effect(other['effect'], other['unit'])}"
        )
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("first", type=Path, help="a finished run's folder")
    parser.add_argument("second", type=Path, help="a finished run of the same command (e.g. on another thread count)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the comparison's record here")
    args = parser.parse_args(argv)
    a, _ = _load(parser, args.first)
    b, runs_b = _load(parser, args.second)
    try:
        text = lines(a, b, (str(args.first), str(args.second)))
    except ValueError as err:  # other configurations
        parser.error(str(err))
    print("\n".join(text))
    record = agreement.record(b, runs_b)
    if args.json is not None:
        write_json(args.json, record)
    return agreement.compare(a, record)


if __name__ == "__main__":
    sys.exit(main() and None)
