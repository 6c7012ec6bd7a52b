"""benchmarks/: the main job end to end (quick preset), resuming, the ImageFolder path, torchrun."""

import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from benchmarks.__main__ import main
from benchmarks.common import quartiles
from benchmarks.config import parse_args
from benchmarks.paper import PAPER_SENSITIVITY
from benchmarks.store import Store
from benchmarks.tables import tables

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--preset", "quick"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "results"
    results = main([*QUICK, "--out", str(out)])
    return out, results


def test_main_job_writes_tables_figures_and_records(quick_run):
    out, results = quick_run
    assert (out / "results.json").exists() and (out / "tables.md").exists()
    text = (out / "tables.md").read_text()
    for heading in (
        "## Networks",
        "## Sensitivity",
        "## Rank robustness",
        "## Localisation on shapes",
        "## Theorem 1",
        "## Completeness residual",
        "## Figures",
    ):
        assert heading in text
    figures = {p.name for p in (out / "figures").glob("*.png")}
    for method in ("saliency", "integrated_gradients", "smoothgrad_ig", "deeplift", "deeplift_shap"):
        assert f"digits-{method}.png" in figures and f"shapes-{method}.png" in figures
    assert {"theorem1.png", "sensitivity.png"} <= figures
    # Every result records its configuration, seed and device; the run its versions.
    record = json.loads((out / "config.json").read_text())
    assert record["environment"]["versions"]["torch"] == torch.__version__
    for cell in (out / "cells").rglob("*.json"):
        content = json.loads(cell.read_text())
        assert content["seed"] == 0 and content["device"] == "cpu" and content["config_digest"] == record["digest"]
    # Theorem 1: the bound holds in every stage, as it must.
    assert results["theorem1"]["all_hold"]
    # DeepLIFT is complete with the noise off, whatever the solver: its residual is
    # round-off, far below the output change it accounts for.
    for solvers in results["completeness"].values():
        for solver, methods in solvers.items():
            if "fixed-path" not in solver:
                assert methods["deeplift"]["residual"]["mean"] < 1e-4 * methods["output_change"]["mean"] + 1e-6
    sens = results["sensitivity"]["comparisons"]["sde-0.5"]["methods"]
    assert set(sens) == {"saliency", "integrated_gradients", "smoothgrad_ig", "deeplift", "deeplift_shap"}
    assert all(0 <= m["ode"]["mean"] < 10 for m in sens.values())


def test_a_restarted_run_recomputes_only_what_is_missing(quick_run, tmp_path):
    out, _ = quick_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    lost = [
        copy / "cells" / "sensitivity" / "ode--deeplift--rep1.json",
        copy / "cells" / "theorem1" / "sde-0.5.json",
        copy / "cells" / "figures" / "digits--saliency.json",
    ]
    for path in lost:
        path.unlink()
    kept = {p: p.stat().st_mtime_ns for p in (copy / "cells").rglob("*.json")}
    main([*QUICK, "--out", str(copy)])
    computed = json.loads((copy / "runs.json").read_text())[-1]["computed"]
    assert sorted(c for c in computed if not c.startswith("profile/")) == sorted(
        ["sensitivity/ode--deeplift--rep1", "theorem1/sde-0.5", "figures/digits--saliency"]
    )
    assert all(p.exists() for p in lost)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    # The recomputed cells equal the lost ones: every random draw is seeded.
    original = json.loads((out / "cells" / "sensitivity" / "ode--deeplift--rep1.json").read_text())
    again = json.loads((copy / "cells" / "sensitivity" / "ode--deeplift--rep1.json").read_text())
    assert again["values"] == pytest.approx(original["values"], rel=1e-5)


def test_another_configuration_is_refused_and_restart_discards(quick_run, tmp_path, capsys):
    out, _ = quick_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    with pytest.raises(SystemExit) as info:
        main([*QUICK, "--out", str(copy), "--radius", "0.05"])
    assert info.value.code == 2
    assert "differs in: radius" in capsys.readouterr().err
    assert json.loads((copy / "config.json").read_text())["config"]["radius"] == 0.02
    cfg, _ = parse_args([*QUICK, "--radius", "0.05"])
    Store(copy, cfg, restart=True)  # --restart
    assert not (copy / "cells").exists() and not (copy / "checkpoints").exists()
    assert json.loads((copy / "config.json").read_text())["config"]["radius"] == 0.05


def _bench(args, **kw):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


# The main job, sent a real SIGINT by its own process right after the ODE network's
# second epoch is saved: the interrupt lands at the same point on a fast or a busy machine.
INTERRUPTED_AFTER_TWO_EPOCHS = """
import os, runpy, signal
from pathlib import Path
import neuralsde.train as training

save = training.save_checkpoint

def save_then_interrupt(path, **content):
    save(path, **content)
    if Path(path).name == "ode.pt" and content["epoch"] == 2:
        os.kill(os.getpid(), signal.SIGINT)

training.save_checkpoint = save_then_interrupt
runpy.run_module("benchmarks", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_an_interrupted_run_loses_nothing_and_resumes(tmp_path):
    out = tmp_path / "r"
    args = [*QUICK, "--out", str(out), "--epochs", "6"]
    proc = subprocess.run(
        [sys.executable, "-c", INTERRUPTED_AFTER_TWO_EPOCHS, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 130 and "run the same command again to resume" in proc.stderr, proc.stderr[-3000:]
    assert torch.load(out / "checkpoints" / "ode.pt", weights_only=True)["epoch"] == 2
    again = _bench(args)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    runs = json.loads((out / "runs.json").read_text())
    assert [r["status"] for r in runs] == ["interrupted", "finished"]
    history = json.loads((out / "cells" / "train" / "ode.json").read_text())["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3, 4, 5, 6]  # the epochs before the interrupt were kept


def _image_folder(root: Path, classes=2, per_class=6):
    from PIL import Image

    gen = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = (torch.rand(40, 40, 3, generator=gen) * 255).to(torch.uint8).numpy()
            pixels[..., c] = 255  # a class cue
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.mark.slow
def test_imagefolder_protocol_runs_end_to_end(tmp_path):
    data = _image_folder(tmp_path / "val")
    weights = tmp_path / "resnet18.pth"
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=2).state_dict(), weights)
    out = tmp_path / "out"
    results = main(
        [
            *QUICK,
            "--arch",
            "resnet18",
            "--data",
            str(data),
            "--weights",
            str(weights),
            "--train-data",
            str(data),
            "--image-size",
            "32",
            "--shapes",
            "false",
            "--lr",
            "1e-4",
            "--methods",
            "saliency",
            "deeplift",
            "--robust-methods",
            "saliency",
            "--out",
            str(out),
        ]
    )
    assert results["models"]["ode"]["source"] == "trained" and results["config"]["arch"] == "resnet18"
    assert results["sensitivity"]["comparisons"]["sde-0.5"]["methods"]
    assert results["theorem1"]["all_hold"]
    assert (out / "figures" / "imagefolder-deeplift.png").exists()
    # The paper's values stand beside ours where the architecture matches.
    results["sensitivity"]["paper"] = PAPER_SENSITIVITY["resnet50"]
    assert "0.5952 → 0.5510" in tables(results)


def test_imagefolder_run_needs_the_sde_network(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--arch", "resnet50", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "--sde-weights FILE" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_trains_with_two_gloo_processes(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch"
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "benchmarks.train",
            "--model",
            "sde-0.5",
            *QUICK,
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sde-0.5: test accuracy" in proc.stdout
    cell = json.loads((out / "cells" / "train" / "sde-0.5.json").read_text())
    assert len(cell["history"]) == 2 and cell["source"] == "trained"
    # The main job then uses that network instead of training it again.
    main([*QUICK, "--out", str(out)])
    computed = json.loads((out / "runs.json").read_text())[-1]["computed"]
    assert "train/sde-0.5" not in computed and "train/ode" in computed


def test_speed_benchmark_writes_every_ratio(tmp_path, capsys):
    from benchmarks.speed import main as speed_main
    from benchmarks.speed import noise_draws
    from neuralsde import SDEResNet

    sde = SDEResNet.from_torchvision(torchvision.models.resnet18(), sigma=0.5).eval()
    sde.set_noise(eval_samples=1)
    # 32x32 input: states 64x8x8 (layer1, two continuous blocks), 128x4x4, 256x2x2, 512x1x1
    assert noise_draws(sde, torch.randn(1, 3, 32, 32)) == [4096, 4096, 2048, 1024, 512]
    record = speed_main(
        ["--archs", "resnet18", "--size", "32", "--batch", "2", "--rounds", "2", "--out", str(tmp_path)]
    )
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["results"] == json.loads(json.dumps(record["results"]))
    ratios = {phase: set(res["ratios"]) for phase, res in saved["results"]["resnet18"].items()}
    assert ratios == {
        "forward": {"ode/torchvision", "sde/ode", "gaussians/ode"},
        "forward+backward": {"ode/torchvision", "sde/ode"},
        "deeplift": {"ode/discrete"},
    }
    for phase in saved["results"]["resnet18"].values():
        for r in phase["ratios"].values():
            assert 0 < r["q1"] <= r["median"] <= r["q3"]
    assert "gaussians/ode" in capsys.readouterr().out


def test_quartiles_stay_within_the_data():
    # Two rounds, one disturbed: the exclusive method would put the lower quartile at -1.
    assert statistics.quantiles([1.0, 9.0], n=4)[0] < 0
    samples = [[1.0, 9.0], [1.0], [1.02, 0.98, 1.01, 1.0, 25.0], [0.97, 1.0, 40.0], [0.3] * 4, [5.0, 0.1, 0.2, 0.1]]
    for data in samples:
        q1, median, q3 = quartiles(data)
        assert min(data) <= q1 <= median <= q3 <= max(data)
        assert median == statistics.median(data)
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)
