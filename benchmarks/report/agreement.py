"""Do a run's verdicts survive the machine? Two runs of one configuration, row by row.

The same command run with another number of threads trains networks that differ by float
rounding, which grows over training; verdicts that hinge on it are not worth having. This
compares the verdict table of a run with that of a second run of the same configuration
(the same configuration digest): a row *flips* where one run says holds and the other
fails, and *moves* where one run decides it and the other says depends. The target: no
flip, and at most ``MOVES_ALLOWED`` moves among the sensitivity rows (primary and per σ).
"""

from __future__ import annotations

from .formatting import VERDICT_MARK, effect, markdown_table

__all__ = ["MOVES_ALLOWED", "compare", "page_lines", "record"]

MOVES_ALLOWED = 2
#: The claims whose rows count towards the sensitivity target (primary and per σ).
SENSITIVITY_CLAIMS = ("sensitivity falls as σ grows", "SDE attributions are less sensitive")


def record(results: dict, runs: list[dict]) -> dict:
    """What the comparison keeps of the second run: its verdicts, its digest, its machine and its command."""
    finished = [r for r in runs if r.get("status") == "finished"]
    return {
        "digest": results["digest"],
        "environment": results["environment"],
        "argv": (finished or runs or [{"argv": []}])[-1]["argv"],
        "verdicts": results.get("verdicts") or [],
    }


def _key(row: dict) -> tuple[str, str]:
    return row["claim"], row["setting"]


def compare(results: dict, other: dict) -> dict:
    """Row-by-row agreement of ``results``' verdicts with ``other``'s (a ``record``).

    Raises:
        ValueError: if the two runs have different configurations (another digest).
    """
    if results["digest"] != other["digest"]:
        raise ValueError(
            f"the runs have different configurations (digest {results['digest']} and {other['digest']}): "
            "only runs of the same command can be compared"
        )
    mine = {_key(r): r for r in results.get("verdicts") or []}
    theirs = {_key(r): r for r in other["verdicts"]}
    shared = [k for k in mine if k in theirs]
    rows = []
    for key in shared:
        a, b = mine[key], theirs[key]
        if a["verdict"] == b["verdict"]:
            continue
        change = "flip" if {a["verdict"], b["verdict"]} == {"holds", "fails"} else "move"
        sensitivity = a["claim"].startswith(SENSITIVITY_CLAIMS)
        rows.append({"claim": a["claim"], "setting": a["setting"], "change": change, "sensitivity": sensitivity,
                     "this": a, "other": b})  # fmt: skip
    flips = sum(r["change"] == "flip" for r in rows)
    moves = sum(r["change"] == "move" and r["sensitivity"] for r in rows)
    return {
        "threads": (results["environment"].get("torch_threads"), other["environment"].get("torch_threads")),
        "compared": len(shared),
        "only_one": len(set(mine) ^ set(theirs)),
        "differ": rows,
        "flips": flips,
        "sensitivity_moves": moves,
        # Every sensitivity row of this run compared, none flipped, few moved.
        "met": bool(mine)
        and all(k in theirs for k in mine if k[0].startswith(SENSITIVITY_CLAIMS))
        and flips == 0
        and moves <= MOVES_ALLOWED,
    }


def _uncovered(results: dict, other: dict) -> list[str]:
    """This run's claims with rows the other run lacks: ``claim (n of m rows)``, in table order."""
    theirs = {_key(r) for r in other["verdicts"]}
    missing: dict[str, list[int]] = {}
    for row in results.get("verdicts") or []:
        counts = missing.setdefault(row["claim"], [0, 0])
        counts[0] += _key(row) not in theirs
        counts[1] += 1
    return [f"*{claim}* ({'every row' if n == m else f'{n} of {m} rows'})" for claim, (n, m) in missing.items() if n]


def page_lines(results: dict, other: dict | None) -> list[str]:
    """The page's account of the comparison (or how to make one, without a second run)."""
    if other is None:
        return [
            "This run was not compared with a second run on another number of threads. To check it, run the same "
            "command again with another `--threads`, into another folder, and pass that folder to "
            "`python -m benchmarks.docs --compare`."
        ]
    c = compare(results, other)
    mine, theirs = c["threads"]
    lines = [
        f"The same configuration (digest `{results['digest']}`) was run twice: with {mine} thread(s) (the numbers "
        f"on these pages) and with {theirs} (its verdicts and machine are in `docs/theory/data/compare.json`). "
        f"Float rounding differs between the two, so the "
        f"trained networks differ; verdicts that hinge on it should not be trusted. The target: no row flips "
        f"between holds and fails, and at most {MOVES_ALLOWED} sensitivity rows (primary or per σ) move between "
        "decided and depends.",
        "",
        f"**{'Met' if c['met'] else 'Missed'}**: of {c['compared']} rows, {len(c['differ'])} differ; "
        f"{c['flips']} flip between holds and fails, {c['sensitivity_moves']} sensitivity row(s) move between "
        f"decided and depends"
        + (
            f"; {c['only_one']} row(s) are in one run only (the second run covers {c['compared']} of "
            f"{len(results.get('verdicts') or [])})."
            if c["only_one"]
            else "."
        ),
    ]
    uncovered = _uncovered(results, other)
    if uncovered:
        lines += ["", "Not covered by the second run, so not checked here: " + "; ".join(uncovered) + "."]
    if c["differ"]:
        header = ["claim", "setting", "change", f"{mine} thread(s)", f"{theirs} thread(s)"]
        body = [
            [
                r["claim"],
                r["setting"],
                r["change"],
                f"{VERDICT_MARK[r['this']['verdict']]} {effect(r['this']['effect'], r['this']['unit'])}",
                f"{VERDICT_MARK[r['other']['verdict']]} {effect(r['other']['effect'], r['other']['unit'])}",
            ]
            for r in c["differ"]
        ]
        lines += ["", *markdown_table(header, body)]
    return lines
