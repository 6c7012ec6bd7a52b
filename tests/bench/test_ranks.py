"""One benchmark job over several processes (torchrun, gloo on the CPU): same results, faults survived.

The jobs here run the quick preset, whose one-process results the ``quick_run`` fixture
holds: every comparison is against them, key for key, timings aside.
"""

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ROOT, drop_timing, stored_results, torchrun

from benchmarks.__main__ import main
from benchmarks.ranks import Ranks

QUICK = ["--preset", "quick"]
PARTS = [*QUICK, "--parts", "sensitivity", "theorem1"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _rank_file(out: Path, rank: int, not_pid: int | None = None) -> dict | None:
    """The newest job's file of ``rank`` (not that of process ``not_pid``), or None."""
    for path in sorted((out / ".ranks").glob(f"*/rank-{rank}.json"), key=lambda p: p.stat().st_mtime, reverse=True):
        with contextlib.suppress(OSError, ValueError):
            state = json.loads(path.read_text())
            if state.get("pid") != not_pid:
                return state
    return None


def _measuring(out: Path, rank: int, logs: list[Path], not_pid: int | None = None, timeout: float = 240.0) -> dict:
    """Wait until ``rank`` has finished a measurement cell; its file."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        state = _rank_file(out, rank, not_pid)
        if state and (state.get("done") or {}).get("measurements", 0) >= 1:
            return state
        time.sleep(0.05)
    said = "\n".join(f"{log.name}: {log.read_text()[-2000:]}" for log in logs if log.exists())
    raise AssertionError(f"rank {rank} did not start measuring within {timeout} s\n{said}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cell_falls_to_exactly_one_rank():
    keys = [f"sensitivity/s{s}/sde-0.5--saliency--rep{r}" for s in range(40) for r in range(5)]
    for size in (1, 2, 3, 4):
        owners = [[r for r in range(size) if Ranks(r, size).owns(k)] for k in keys]
        assert all(len(o) == 1 for o in owners)
        counts = [sum(o == [r] for o in owners) for r in range(size)]
        assert min(counts) > len(keys) / size / 2  # every rank gets a share
    # Networks go round: the i-th to rank i mod size.
    assert [i for i in range(7) if Ranks(1, 3).trains(i)] == [1, 4]


@pytest.mark.slow
def test_two_ranks_give_the_one_process_results(quick_run, tmp_path):
    out = tmp_path / "two"
    proc = subprocess.run(
        [torchrun(), "--standalone", "--nproc_per_node=2", "-m", "benchmarks", *QUICK, "--out", str(out), "--quiet"],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert drop_timing(json.loads((out / "results.json").read_text())) == drop_timing(quick_run[1])
    assert stored_results(out) == stored_results(quick_run[0])
    # Every cell and network was computed once, by one rank or the other, and the job's files are gone.
    computed = json.loads((out / "runs.json").read_text())[-1]["computed"]
    assert (
        len(computed) == len(set(computed)) == len(json.loads((quick_run[0] / "runs.json").read_text())[0]["computed"])
    )
    assert "rank 1: " in proc.stderr and not (out / ".ranks").exists()


@pytest.fixture(scope="module")
def faulted_job(tmp_path_factory):
    """One quick job through its faults, in order; what each showed.

    The quick preset's sensitivity and Theorem 1 parts (their cells are the quick run's):

    1. Two ranks started by hand (as torchrun would) with ``--rank-timeout 3``; while rank 1
       measures, a second job is started on the same folder, and then rank 1 is stopped
       (SIGSTOP: a hung process or machine). Rank 0 gives up on it.
    2. The same command under ``torchrun --max-restarts=1``; rank 1 is killed (SIGKILL)
       while it measures, torchrun restarts the group, and the job finishes.
    """
    out = tmp_path_factory.mktemp("faults") / "job"
    logs = [out.parent / f"rank-{rank}.log" for rank in (0, 1)]
    argv = [sys.executable, "-m", "benchmarks", *PARTS, "--out", str(out), "--quiet"]
    port = _free_port()
    procs = []
    for rank in (0, 1):
        env = {
            **_env(),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "WORLD_SIZE": "2",
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
        }
        with open(logs[rank], "w") as log:  # files, not pipes: a full pipe would block the rank
            procs.append(subprocess.Popen([*argv, "--rank-timeout", "3"], cwd=ROOT, env=env, stdout=log, stderr=log))
    seen = {}
    try:
        stopped = _measuring(out, 1, logs)
        err = io.StringIO()
        with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
            main([*PARTS, "--out", str(out), "--quiet"])
        seen["second job"] = (exit_.value.code, err.getvalue())
        os.kill(stopped["pid"], signal.SIGSTOP)
        procs[0].wait(timeout=120)
        seen["stopped rank"] = (procs[0].returncode, logs[0].read_text())
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
    log = out.parent / "torchrun.log"
    with open(log, "w") as fh:
        job = subprocess.Popen(
            [torchrun(), "--standalone", "--nproc_per_node=2", "--max-restarts=1", *argv[1:]],
            cwd=ROOT,
            env=_env(),
            stdout=fh,
            stderr=fh,
        )
    try:
        killed = _measuring(out, 1, [log], not_pid=stopped["pid"])
        os.kill(killed["pid"], signal.SIGKILL)
        job.wait(timeout=300)
    finally:
        job.kill()
        job.wait()
    seen["killed rank"] = (job.returncode, log.read_text())
    return out, seen


@pytest.mark.slow
def test_a_second_job_on_the_folder_is_refused_while_the_first_runs(faulted_job):
    code, err = faulted_job[1]["second job"]
    assert code == 2
    assert "is in use by another run" in err.strip() and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_a_stopped_rank_ends_the_job_with_one_line(faulted_job):
    code, err = faulted_job[1]["stopped rank"]
    assert code == 1, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: rank 1 (") and "has not been heard from for 3 s" in last
    assert "run the same command again to resume" in last and "Traceback" not in err


@pytest.mark.slow
def test_a_killed_rank_is_restarted_and_the_results_are_the_one_process_ones(faulted_job, quick_run):
    out, seen = faulted_job
    code, said = seen["killed rank"]
    assert code == 0, said[-3000:]
    # Every cell, and the two parts' results, are the one-process run's.
    cells, alone = stored_results(out), stored_results(quick_run[0])
    assert any(k.startswith("sensitivity/") for k in cells) and any(k.startswith("theorem1/") for k in cells)
    assert {k: alone.get(k) for k in cells} == cells
    results = json.loads((out / "results.json").read_text())
    for part in ("sensitivity", "theorem1"):
        assert drop_timing(results[part]) == drop_timing(quick_run[1][part])
    runs = json.loads((out / "runs.json").read_text())
    # The stopped job, the generation torchrun stopped when rank 1 was killed, the restarted one.
    assert [r["status"] for r in runs] == ["a rank was lost", "terminated", "finished"]
    # What the earlier generations finished was reused, not computed again.
    earlier = set(runs[0]["computed"]) | set(runs[1]["computed"])
    assert earlier and not earlier & set(runs[2]["computed"])
