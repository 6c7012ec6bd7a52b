"""The ``correctness`` section: the tests marked ``cuda``, run by pytest in a subprocess.

The subprocess gets what is left of the section's share as its time limit; its whole
output goes to ``cuda-tests.log`` beside ``gpu.json``, and the record keeps each test's
outcome, the failures' one-line reasons and the counts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = "tests/library/test_cuda.py"
LOG = "cuda-tests.log"

_OUTCOME = re.compile(r"^(\S+?::\S+)\s+(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b", re.M)
_REASON = re.compile(r"^(FAILED|ERROR) (\S+?::\S+?)(?: - (.*))?$", re.M)
_DURATION = re.compile(r"^([\d.]+)s (call|setup|teardown)\s+(\S+?::\S+)$", re.M)


def parse(output: str) -> dict:
    """Outcomes, reasons, durations and counts from ``pytest -v -rfE --durations=0`` output."""
    tests: dict[str, dict] = {}
    for name, outcome in _OUTCOME.findall(output):
        tests[name.split("::", 1)[1]] = {"outcome": outcome.lower()}
    for _, name, reason in _REASON.findall(output):
        tests.setdefault(name.split("::", 1)[1], {"outcome": "failed"})["reason"] = (reason or "")[:400]
    for seconds, _phase, name in _DURATION.findall(output):
        entry = tests.get(name.split("::", 1)[1])
        if entry is not None:
            entry["seconds"] = round(entry.get("seconds", 0.0) + float(seconds), 2)
    counts: dict[str, int] = {}
    for entry in tests.values():
        counts[entry["outcome"]] = counts.get(entry["outcome"], 0) + 1
    return {"tests": tests, "counts": counts}


def run(section) -> None:
    limit = max(section.left(), 10.0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    if section.device.type == "cuda" and section.device.index is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(section.device.index)
    command = [
        sys.executable, "-m", "pytest", TESTS, "-m", "cuda", "-v", "-rfE", "--durations=0", "-p", "no:cacheprovider",
        "-p", "no:xdist",  # one process: the tests share one GPU
    ]  # fmt: skip
    section.result["command"] = " ".join(["python", *command[1:]])
    try:
        proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=limit)
        output, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        output = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        code = None
        section.reached = f"pytest stopped by the section's limit of {limit:.0f} s"
    (section.out / LOG).write_text(output)
    section.result.update(parse(output))
    section.result["exit_code"] = code
    section.result["log"] = LOG
    summary = [line for line in output.splitlines() if re.match(r"^=+ .*(passed|failed|skipped|error).* =+$", line)]
    section.result["summary"] = summary[-1].strip("= ") if summary else None
    if code not in (0, 5, None):  # 5: pytest collected no test
        failed = [n for n, t in section.result["tests"].items() if t["outcome"] in ("failed", "error")]
        raise AssertionError(f"pytest exited with {code}; failed: {', '.join(failed) or 'see ' + LOG}")
