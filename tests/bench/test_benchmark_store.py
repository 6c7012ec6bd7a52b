"""benchmarks/store.py: what a run reuses is verified; interrupted runs resume bit for bit; nothing finished is lost."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT, drop_timing, stored_results

from benchmarks.__main__ import main
from benchmarks.cli import parse_args
from benchmarks.pipeline import run
from benchmarks.sensitivity import SENSITIVITY
from benchmarks.store import Store, checksum
from neuralsde.train import save_checkpoint

QUICK = ["--preset", "quick"]


def _run_parts(argv: list[str], *parts) -> None:
    """A run of only ``parts`` (none: the networks only), without the report.

    For tests that check what a run notices and recomputes, not its tables: the other
    parts' cells stay as they are, and no figure is drawn.
    """
    run(argv, parts, report=False)


def _copy(quick_run, tmp_path) -> Path:
    out, _ = quick_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


def _computed(out: Path) -> list[str]:
    return json.loads((out / "runs.json").read_text())[-1]["computed"]


def test_a_second_run_reuses_everything(quick_run, tmp_path):
    copy = _copy(quick_run, tmp_path)
    main([*QUICK, "--out", str(copy)])
    assert _computed(copy) == []
    assert drop_timing(json.loads((copy / "results.json").read_text())) == drop_timing(quick_run[1])


def test_deleted_truncated_and_foreign_checkpoints_are_retrained(quick_run, tmp_path, capsys):
    copy = _copy(quick_run, tmp_path)
    ckpt = copy / "checkpoints"
    (ckpt / "s0" / "ode.pt").unlink()  # deleted
    data = (ckpt / "s1" / "ode.pt").read_bytes()
    (ckpt / "s1" / "ode.pt").write_bytes(data[: len(data) // 2])  # truncated
    shutil.copyfile(ckpt / "s0" / "sde-0.5.pt", ckpt / "s1" / "sde-0.5.pt")  # another seed's network
    capsys.readouterr()
    main([*QUICK, "--out", str(copy)])
    err = capsys.readouterr().err
    assert "checkpoints/s0/ode.pt: missing; training again" in err
    assert "checkpoints/s1/ode.pt: unreadable (truncated or damaged" in err
    assert "checkpoints/s1/sde-0.5.pt: written for another network (seed: 0 → 1" in err
    computed = _computed(copy)
    assert {"train/s0/ode", "train/s1/ode", "train/s1/sde-0.5"} <= set(computed)
    assert not any(c.startswith("train/s0/sde") for c in computed)
    # Retrained from the same seed, the networks are the same: so is every result.
    assert stored_results(copy) == stored_results(quick_run[0]) | {
        k: v for k, v in stored_results(copy).items() if k.startswith("train/")
    }
    for path in ("s0/ode.pt", "s1/ode.pt", "s1/sde-0.5.pt"):
        assert torch.load(ckpt / path, weights_only=True)["epoch"] == 2


def test_a_checkpoint_that_does_not_fit_is_retrained(quick_run, tmp_path, capsys):
    copy = _copy(quick_run, tmp_path)
    path = copy / "checkpoints" / "s0" / "ode.pt"
    state = torch.load(path, weights_only=True)
    state["model"] = {k: v[:1] if v.ndim else v for k, v in state["model"].items()}  # wrongly shaped weights
    save_checkpoint(path, **state)  # with a checksum of what it now holds
    capsys.readouterr()
    _run_parts([*QUICK, "--out", str(copy)])
    assert "checkpoints/s0/ode.pt: its weights do not fit the network" in capsys.readouterr().err
    assert "train/s0/ode" in _computed(copy)


def test_damaged_foreign_and_stray_cells(quick_run, tmp_path, capsys):
    copy = _copy(quick_run, tmp_path)
    cells = copy / "cells" / "sensitivity"
    target = cells / "s0" / "ode--deeplift--rep1.json"
    target.write_text(target.read_text()[:100])  # truncated
    shutil.copyfile(cells / "s1" / "ode--saliency--rep0.json", cells / "s0" / "ode--saliency--rep0.json")  # foreign
    shutil.copyfile(cells / "s0" / "ode--saliency--rep1.json", cells / "s0" / "ode--saliency--rep7.json")  # stray
    odd = json.loads((cells / "s0" / "sde-0.5--saliency--rep1.json").read_text())
    odd["result"]["values"] = odd["result"]["values"][:-1]  # one value short, as code that wrote it so would
    odd["checksum"] = checksum(odd)
    (cells / "s0" / "sde-0.5--saliency--rep1.json").write_text(json.dumps(odd))
    (copy / "cells" / "theorem1" / "s1" / "ode.json").unlink()  # deleted
    capsys.readouterr()
    main([*QUICK, "--out", str(copy)])
    err = capsys.readouterr().err
    assert "cells/sensitivity/s0/ode--deeplift--rep1.json: unreadable" in err
    assert "cells/sensitivity/s0/ode--saliency--rep0.json: written for another result" in err
    assert "cells/sensitivity/s0/sde-0.5--saliency--rep1.json: wrongly shaped (3 values for 4 images)" in err
    assert "cells/theorem1/s1/ode.json: missing; recomputing" in err
    assert sorted(_computed(copy)) == sorted(
        [
            "sensitivity/s0/ode--deeplift--rep1",
            "sensitivity/s0/ode--saliency--rep0",
            "sensitivity/s0/sde-0.5--saliency--rep1",
            "theorem1/s1/ode",
        ]
    )
    # The stray file is left alone and counted nowhere; the recomputed cells equal the originals.
    assert "sensitivity/s0/ode--saliency--rep7" not in json.loads((copy / "manifest.json").read_text())
    assert drop_timing(json.loads((copy / "results.json").read_text())) == drop_timing(quick_run[1])


def test_changing_a_measurement_option_keeps_the_networks(quick_run, tmp_path, capsys):
    copy = _copy(quick_run, tmp_path)
    before = {p: p.read_bytes() for p in (copy / "checkpoints").rglob("*.pt")}
    capsys.readouterr()
    main([*QUICK, "--out", str(copy), "--ig-steps", "5"])
    err = capsys.readouterr().err
    assert "made with other options (ig_steps: 4 → 5)" in err
    computed = _computed(copy)
    assert not any(c.startswith(("train/", "accuracy/")) for c in computed)
    assert {p: p.read_bytes() for p in (copy / "checkpoints").rglob("*.pt")} == before
    # Only what reads ig_steps is measured again: IG, not Saliency.
    assert "sensitivity/s0/ode--integrated_gradients--rep0" in computed
    assert "sensitivity/s0/ode--saliency--rep0" not in computed
    # --restart discards the measurements, not the networks; --retrain discards both.
    cfg, _ = parse_args(QUICK)
    Store(copy, cfg, restart=True).close()
    assert not (copy / "cells").exists() and set((copy / "checkpoints").rglob("*.pt")) == set(before)
    Store(copy, cfg, retrain=True).close()
    assert not (copy / "checkpoints").exists()


def test_a_concurrent_run_is_refused(tmp_path, capsys):
    cfg, _ = parse_args(QUICK)
    with Store(tmp_path / "busy", cfg):
        with pytest.raises(SystemExit) as info:
            main([*QUICK, "--out", str(tmp_path / "busy")])
        assert info.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "is in use by another run (pid" in err and len(err.splitlines()) == 1
    Store(tmp_path / "busy", cfg).close()  # released when the first run ends


def _interrupted_at(monkeypatch, argv, *, checkpoint: str | None = None, cell: int = 0) -> str:
    """Run the main job here and send it a real SIGINT at a chosen point; its stderr.

    The point is after the checkpoint ``"s1/ode.pt:EPOCH"`` is written, or after the
    ``cell``-th measurement this run finishes: the same on any machine.
    """
    import signal

    import benchmarks.store as store
    import neuralsde.train as training

    save, put, puts = training.save_checkpoint, store.Store.put, []

    def save_then_interrupt(path, **content):
        save(path, **content)
        name, epoch = (checkpoint or ":0").split(":")
        if checkpoint and str(Path(path)).endswith(name) and content["epoch"] == int(epoch):
            os.kill(os.getpid(), signal.SIGINT)

    def put_then_interrupt(self, kind, name, *args, **kwargs):
        put(self, kind, name, *args, **kwargs)
        if kind not in ("train", "accuracy"):
            puts.append(name)
            if len(puts) == cell:
                os.kill(os.getpid(), signal.SIGINT)

    with monkeypatch.context() as patch:
        patch.setattr(training, "save_checkpoint", save_then_interrupt)
        patch.setattr(store.Store, "put", put_then_interrupt)
        # A shell that starts a job in the background hands it SIGINT ignored: the
        # interruption must not depend on how the test suite was launched.
        previous = signal.signal(signal.SIGINT, signal.default_int_handler)
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), pytest.raises(SystemExit) as exit_:
                main(argv)
        finally:
            signal.signal(signal.SIGINT, previous)
    assert exit_.value.code == 130, err.getvalue()[-3000:]
    return err.getvalue()


@pytest.mark.slow
def test_kill_and_resume_at_several_points_is_bit_identical(quick_run, tmp_path, monkeypatch):
    """Interrupted in training, in the sensitivity cells and in the shapes part, then finished anew: same results."""
    out = tmp_path / "r"
    args = [*QUICK, "--out", str(out)]
    for stop in (
        {"checkpoint": "s1/ode.pt:1"},  # in training, seed 1
        {"cell": 7},  # among the sensitivity cells
        {"cell": 45},  # past robustness and Theorem 1
        {"cell": 30},  # in the shapes' localisation
    ):
        assert "run the same command again to resume" in _interrupted_at(monkeypatch, args, **stop)
    assert torch.load(out / "checkpoints" / "s1" / "ode.pt", weights_only=True)["epoch"] == 2
    # The last run in a fresh interpreter, as a user's rerun would be.
    proc = subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads((out / "runs.json").read_text())
    assert [r["status"] for r in runs] == ["interrupted"] * 4 + ["finished"]
    # Bit for bit: every stored result, and the summary, equal those of the uninterrupted run.
    assert stored_results(out) == stored_results(quick_run[0])
    assert drop_timing(json.loads((out / "results.json").read_text())) == drop_timing(quick_run[1])


# -- the store checks contents, not only provenance ---------------------------------------
def _edit_cell(path: Path, edit, *, reseal: bool = False) -> None:
    """Change a stored cell in place; ``reseal`` gives it a matching checksum (as code that wrote it so would)."""
    content = json.loads(path.read_text())
    edit(content)
    if reseal:
        content["checksum"] = checksum(content)
    path.write_text(json.dumps(content, indent=2, sort_keys=True))


def test_a_cell_with_an_edited_number_is_recomputed_and_named(quick_run, tmp_path, capsys):
    copy = _copy(quick_run, tmp_path)
    cell = copy / "cells" / "sensitivity" / "s0" / "ode--saliency--rep0.json"
    _edit_cell(cell, lambda c: c["result"]["values"].__setitem__(0, 123.0))
    capsys.readouterr()
    _run_parts([*QUICK, "--out", str(copy)], SENSITIVITY)
    err = capsys.readouterr().err
    assert "cells/sensitivity/s0/ode--saliency--rep0.json: damaged (its checksum does not match its contents" in err
    assert _computed(copy) == ["sensitivity/s0/ode--saliency--rep0"]  # that cell only
    assert stored_results(copy) == stored_results(quick_run[0])  # recomputed as it was


def test_cells_with_values_of_the_wrong_type_or_no_checksum_are_recomputed(quick_run, tmp_path, capsys):
    copy = _copy(quick_run, tmp_path)
    cells = copy / "cells" / "sensitivity" / "s0"

    def to_strings(content):
        content["result"]["values"] = [str(v) for v in content["result"]["values"]]

    _edit_cell(cells / "ode--saliency--rep0.json", to_strings)  # edited by hand
    _edit_cell(cells / "ode--saliency--rep1.json", to_strings, reseal=True)  # written so, with its checksum
    _edit_cell(cells / "ode--deeplift--rep0.json", lambda c: c.pop("checksum"))  # written by an older version
    capsys.readouterr()
    _run_parts([*QUICK, "--out", str(copy)], SENSITIVITY)  # no TypeError
    err = capsys.readouterr().err
    assert "cells/sensitivity/s0/ode--saliency--rep0.json: damaged (its checksum does not match" in err
    assert "cells/sensitivity/s0/ode--saliency--rep1.json: wrongly shaped (values of type str, not numbers)" in err
    assert "cells/sensitivity/s0/ode--deeplift--rep0.json: no checksum (written by an older version)" in err
    assert sorted(_computed(copy)) == [
        "sensitivity/s0/ode--deeplift--rep0",
        "sensitivity/s0/ode--saliency--rep0",
        "sensitivity/s0/ode--saliency--rep1",
    ]
    assert stored_results(copy) == stored_results(quick_run[0])


def _flip_a_byte(path: Path, tensor: torch.Tensor) -> None:
    """Flip one bit in the middle of ``tensor``'s bytes in a saved file, as a bad disk or copy would."""
    data = bytearray(path.read_bytes())
    needle = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    at = bytes(data).find(needle)
    assert at > 0 and bytes(data).find(needle, at + 1) < 0  # found once
    data[at + len(needle) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_checkpoint_with_a_flipped_byte_is_retrained(quick_run, tmp_path, capsys):
    copy = _copy(quick_run, tmp_path)
    path = copy / "checkpoints" / "s0" / "ode.pt"
    _flip_a_byte(path, torch.load(path, weights_only=True)["model"]["fc.weight"])  # torch.load itself notices nothing
    capsys.readouterr()
    _run_parts([*QUICK, "--out", str(copy)], SENSITIVITY)
    err = capsys.readouterr().err
    assert "checkpoints/s0/ode.pt: damaged (its checksum does not match its contents); training again" in err
    # Retrained from its seed it is the same network: its measurements are reused.
    assert _computed(copy) == ["train/s0/ode"]
    assert stored_results(copy) == stored_results(quick_run[0]) | {
        k: v for k, v in stored_results(copy).items() if k.startswith("train/")
    }


def test_a_damaged_run_log_is_reported_and_set_aside(quick_run, tmp_path, capsys):
    copy = _copy(quick_run, tmp_path)
    (copy / "runs.json").write_text('[{"argv": ["--preset", "qu')  # truncated
    capsys.readouterr()
    _run_parts([*QUICK, "--out", str(copy)])
    err = capsys.readouterr().err
    assert "runs.json: unreadable (truncated or damaged: JSONDecodeError); kept as runs.json.damaged" in err
    assert (copy / "runs.json.damaged").read_text() == '[{"argv": ["--preset", "qu'
    assert [r["status"] for r in json.loads((copy / "runs.json").read_text())] == ["finished"]


# -- nothing trained is thrown away by accident ----------------------------------------------
def test_a_run_on_another_thread_count_is_refused_like_other_network_options(quick_run, tmp_path, capsys):
    # The networks of the quick run were trained on one thread (the default); two round otherwise.
    copy = _copy(quick_run, tmp_path)
    before = {p: p.read_bytes() for p in (copy / "checkpoints").rglob("*.pt")}
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([*QUICK, "--threads", "2", "--out", str(copy)])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert f"{copy} holds networks trained with other options" in err and "threads: 1 → 2" in err
    assert {p: p.read_bytes() for p in (copy / "checkpoints").rglob("*.pt")} == before


def test_a_run_with_other_network_options_is_refused_before_training(quick_run, tmp_path, capsys):
    copy = _copy(quick_run, tmp_path)
    before = {p: p.read_bytes() for p in (copy / "checkpoints").rglob("*.pt")}
    records = {name: (copy / name).read_text() for name in ("config.json", "runs.json", "manifest.json")}
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([*QUICK, "--epochs", "3", "--out", str(copy)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    assert f"{copy} holds networks trained with other options" in err and "epochs: 2 → 3" in err
    assert "use another --out, or --retrain" in err
    # Nothing was trained, replaced or recorded.
    assert {p: p.read_bytes() for p in (copy / "checkpoints").rglob("*.pt")} == before
    assert {name: (copy / name).read_text() for name in records} == records


def test_a_full_disk_stops_the_run_in_one_line_and_keeps_what_is_finished(quick_run, tmp_path, capsys, monkeypatch):
    import errno

    import benchmarks.common as common
    from benchmarks.store import Store as Folder

    copy = _copy(quick_run, tmp_path)
    cells = copy / "cells" / "sensitivity" / "s0"
    names = ["ode--saliency--rep0", "ode--integrated_gradients--rep0", "ode--smoothgrad_ig--rep0"]
    for name in names:
        (cells / f"{name}.json").unlink()
    write, writes = common.atomic_write_text, []

    def full_after_two_cells(path, text):  # config.json, two cells, then the disk is full
        writes.append(Path(path).name)
        if len(writes) > 3:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write(path, text)

    monkeypatch.setattr(common, "atomic_write_text", full_after_two_cells)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([*QUICK, "--out", str(copy)])
    capsys_all = capsys.readouterr().err
    err = [line for line in capsys_all.splitlines() if line.startswith("error")]
    assert info.value.code == 1 and len(err) == 1, capsys_all
    assert err[0].startswith(f"error: no space left on the device writing {cells / names[2]}.json; finished results")
    assert f"kept in {copy}" in err[0] and "run the same command again to resume" in err[0]
    monkeypatch.setattr(common, "atomic_write_text", write)
    # The two finished cells are kept and verify; no temporary file is left; the folder is free.
    cfg, _ = parse_args(QUICK)
    with Folder(copy, cfg) as store:
        for name in names[:2]:
            depends = json.loads((cells / f"{name}.json").read_text())["depends"]
            assert store.reusable("sensitivity", f"s0/{name}", depends)
    assert not (cells / f"{names[2]}.json").exists() and not list(copy.rglob("*.tmp"))


TERMINATED = """
import os, runpy, signal
import benchmarks.store as store

put = store.Store.put
def put_then_terminate(self, kind, name, *args, **kwargs):
    put(self, kind, name, *args, **kwargs)
    if kind == "sensitivity":
        os.kill(os.getpid(), signal.SIGTERM)

store.Store.put = put_then_terminate
runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
"""


def test_sigterm_stops_a_run_like_ctrl_c(quick_run, tmp_path):
    copy = _copy(quick_run, tmp_path)
    for name in ("ode--saliency--rep0", "ode--saliency--rep1"):
        (copy / "cells" / "sensitivity" / "s0" / f"{name}.json").unlink()
    proc = subprocess.run(
        [sys.executable, "-c", TERMINATED, *QUICK, "--out", str(copy)],
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 143, proc.stderr[-3000:]
    assert f"terminated (SIGTERM): finished results are kept in {copy}; run the same command again" in proc.stderr
    assert "Traceback" not in proc.stderr
    run = json.loads((copy / "runs.json").read_text())[-1]
    assert run["status"] == "terminated" and run["computed"] == ["sensitivity/s0/ode--saliency--rep0"]
    cfg, _ = parse_args(QUICK)
    Store(copy, cfg).close()  # the lock was released


def test_progress_is_a_few_lines_when_stderr_is_no_terminal_and_none_when_quiet(quick_run, tmp_path, capsys):
    copy = _copy(quick_run, tmp_path)
    (copy / "checkpoints" / "s0" / "ode.pt").unlink()  # trained again: epochs, networks and measurements
    capsys.readouterr()
    main([*QUICK, "--out", str(copy)])  # pytest's stderr is no terminal
    err = capsys.readouterr().err
    bars = [line for line in err.splitlines() if "%|" in line]
    assert "epoch 1/2" not in err  # no bar per epoch
    assert len(err.splitlines()) < 200 and len(bars) <= 40, len(bars)
    main([*QUICK, "--out", str(copy), "--quiet"])
    err = capsys.readouterr().err
    assert "%|" not in err and "it/s" not in err


def test_a_report_alone_keeps_the_machine_of_the_run_that_measured(quick_run, tmp_path, capsys):
    from benchmarks.report.__main__ import main as report

    copy = _copy(quick_run, tmp_path)
    record = json.loads((copy / "config.json").read_text())
    record["environment"]["torch_threads"] = 97  # as if measured on another machine
    (copy / "config.json").write_text(json.dumps(record))
    report(["--out", str(copy)])
    assert json.loads((copy / "config.json").read_text())["environment"]["torch_threads"] == 97
    assert json.loads((copy / "results.json").read_text())["environment"]["torch_threads"] == 97
