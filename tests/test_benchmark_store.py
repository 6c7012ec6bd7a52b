"""benchmarks/store.py: what a run reuses is verified; interrupted runs resume bit for bit; the command line."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmarks.__main__ import main
from benchmarks.config import Config, build_parser, parse_args
from benchmarks.store import Store

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--preset", "quick"]


def _copy(quick_run, tmp_path) -> Path:
    out, _ = quick_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    return copy


def _computed(out: Path) -> list[str]:
    return json.loads((out / "runs.json").read_text())[-1]["computed"]


def _results(out: Path) -> dict:
    """A cell's result by key (timings left out: they are the only thing allowed to differ)."""
    return {
        str(p.relative_to(out / "cells").with_suffix("")): _drop_timing(json.loads(p.read_text())["result"])
        for p in sorted((out / "cells").rglob("*.json"))
    }


def _drop_timing(value):
    if isinstance(value, dict):
        return {k: _drop_timing(v) for k, v in value.items() if "seconds" not in k and k != "environment"}
    if isinstance(value, list):
        return [_drop_timing(v) for v in value]
    return value


def test_a_second_run_reuses_everything(quick_run, tmp_path):
    copy = _copy(quick_run, tmp_path)
    main([*QUICK, "--out", str(copy)])
    assert _computed(copy) == []
    assert _drop_timing(json.loads((copy / "results.json").read_text())) == _drop_timing(quick_run[1])


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
    assert "checkpoints/s1/sde-0.5.pt: trained with other options (seed: 0 → 1" in err
    computed = _computed(copy)
    assert {"train/s0/ode", "train/s1/ode", "train/s1/sde-0.5"} <= set(computed)
    assert not any(c.startswith("train/s0/sde") for c in computed)
    # Retrained from the same seed, the networks are the same: so is every result.
    assert _results(copy) == _results(quick_run[0]) | {
        k: v for k, v in _results(copy).items() if k.startswith("train/")
    }
    for path in ("s0/ode.pt", "s1/ode.pt", "s1/sde-0.5.pt"):
        assert torch.load(ckpt / path, weights_only=True)["epoch"] == 2


def test_a_checkpoint_that_does_not_fit_is_retrained(quick_run, tmp_path, capsys):
    copy = _copy(quick_run, tmp_path)
    path = copy / "checkpoints" / "s0" / "ode.pt"
    state = torch.load(path, weights_only=True)
    state["model"] = {k: v[:1] if v.ndim else v for k, v in state["model"].items()}  # wrongly shaped weights
    torch.save(state, path)
    capsys.readouterr()
    main([*QUICK, "--out", str(copy)])
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
    odd["result"]["values"] = odd["result"]["values"][:-1]  # one value short
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
    assert _drop_timing(json.loads((copy / "results.json").read_text())) == _drop_timing(quick_run[1])


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


# Runs the main job and sends it a real SIGINT at a chosen point: after the checkpoint of
# epoch 1 of seed 1's ODE network (NEURALSDE_STOP_CHECKPOINT), or after the process's
# N-th finished measurement (NEURALSDE_STOP_CELL). The point is the same on any machine.
INTERRUPTED = """
import os, runpy, signal
from pathlib import Path
import benchmarks.store as store
import neuralsde.train as training

stop_ckpt, stop_cell = os.environ.get("NEURALSDE_STOP_CHECKPOINT"), int(os.environ.get("NEURALSDE_STOP_CELL", "0"))
save, put = training.save_checkpoint, store.Store.put

def save_then_interrupt(path, **content):
    save(path, **content)
    name, epoch = (stop_ckpt or ":0").split(":")
    if stop_ckpt and str(Path(path)).endswith(name) and content["epoch"] == int(epoch):
        os.kill(os.getpid(), signal.SIGINT)

puts = []
def put_then_interrupt(self, kind, name, *args, **kwargs):
    put(self, kind, name, *args, **kwargs)
    if kind not in ("train", "accuracy"):
        puts.append(name)
        if len(puts) == stop_cell:
            os.kill(os.getpid(), signal.SIGINT)

training.save_checkpoint, store.Store.put = save_then_interrupt, put_then_interrupt
runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_kill_and_resume_at_several_points_is_bit_identical(quick_run, tmp_path):
    """Interrupted in training, in the sensitivity cells and in the shapes part, then finished: same results."""
    out = tmp_path / "r"
    args = [*QUICK, "--out", str(out)]
    stops = [
        {"NEURALSDE_STOP_CHECKPOINT": "s1/ode.pt:1"},  # in training, seed 1
        {"NEURALSDE_STOP_CELL": "7"},  # among the sensitivity cells
        {"NEURALSDE_STOP_CELL": "45"},  # past robustness and Theorem 1
        {"NEURALSDE_STOP_CELL": "30"},  # in the shapes' localisation
    ]
    for stop in stops:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **stop}
        proc = subprocess.run(
            [sys.executable, "-c", INTERRUPTED, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 130 and "run the same command again to resume" in proc.stderr, proc.stderr[-3000:]
    assert torch.load(out / "checkpoints" / "s1" / "ode.pt", weights_only=True)["epoch"] == 2
    proc = subprocess.run([sys.executable, "-m", "benchmarks", *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads((out / "runs.json").read_text())
    assert [r["status"] for r in runs] == ["interrupted"] * 4 + ["finished"]
    # Bit for bit: every stored result, and the summary, equal those of the uninterrupted run.
    assert _results(out) == _results(quick_run[0])
    assert _drop_timing(json.loads((out / "results.json").read_text())) == _drop_timing(quick_run[1])


def test_every_option_has_help_and_no_abbreviation():
    parser = build_parser()
    for action in parser._actions:
        if action.dest != "help":
            assert action.help, action.dest
    with pytest.raises(SystemExit):
        parse_args(["--sigma", "0.5"])  # not --sigmas
    with pytest.raises(SystemExit):
        parse_args(["--shapes", "on"])  # booleans are --shapes / --no-shapes
    assert parse_args(["--no-shapes"])[0].shapes is False
    assert parse_args(["--shapes"])[0].shapes is True


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--shap-baselines", "1"], "--shap-baselines must be at least 2"),
        (["--seeds", "0", "0"], "--seeds must be distinct"),
        (["--table-sigma", "0.3"], "--table-sigma 0.3 must be one of"),
        (["--methods", "gradcam"], "--methods must name some of"),
        (["--diffusion", "cauchy"], "unknown --diffusion"),
        (["--weights", "/no/such/file.pth"], "no such file"),
        (["--device", "tpu"], "--device"),
    ],
)
def test_options_are_validated_before_anything_runs(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(tmp_path / "o")])
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before the run started


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--device", "cuda", "--out", str(tmp_path / "o")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "CUDA is not available" in proc.stderr
    assert "Traceback" not in proc.stderr and len([line for line in proc.stderr.splitlines() if line.strip()]) == 1


def test_config_roles_cover_every_option():
    import dataclasses

    roles = {f.metadata["role"] for f in dataclasses.fields(Config)}
    assert roles == {"train", "measure", "run"}
    cfg = Config()
    # What a network depends on ignores measurement options; a measurement ignores other kinds' options.
    assert cfg.network("ode", 0) == Config(ig_steps=99, n_images=3).network("ode", 0)
    assert cfg.network("ode", 0) != Config(epochs=3).network("ode", 0)
    assert cfg.measurement("sensitivity", "saliency") == Config(ig_steps=99).measurement("sensitivity", "saliency")
    assert cfg.measurement("sensitivity", "integrated_gradients") != Config(ig_steps=99).measurement(
        "sensitivity", "integrated_gradients"
    )
