"""benchmarks/: the main job end to end (quick preset), resuming, the ImageFolder path, torchrun."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from helpers import ROOT, torchrun

from benchmarks.__main__ import main
from benchmarks.common import quartiles
from benchmarks.paper import PAPER_SENSITIVITY
from benchmarks.report import tables

QUICK = ["--preset", "quick"]


def test_main_job_writes_tables_figures_and_records(quick_run):
    out, results = quick_run
    assert (out / "results.json").exists() and (out / "tables.md").exists()
    text = (out / "tables.md").read_text()
    # The verdicts come first, and the number of training seeds is stated.
    assert text.index("## Verdicts") < text.index("## Networks") < text.index("## Sensitivity")
    assert "2 training seeds (0, 1)" in text.split("## Verdicts")[0]
    for heading in (
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
    assert {"theorem1.png", "sensitivity.png", "noise_robustness.png"} <= figures
    # Every result records its key, what it depends on and the library versions.
    record = json.loads((out / "config.json").read_text())
    assert record["environment"]["versions"]["torch"] == torch.__version__
    for cell in (out / "cells").rglob("*.json"):
        content = json.loads(cell.read_text())
        assert content["key"] == str(cell.relative_to(out / "cells").with_suffix(""))
        assert content["versions"]["torch"] == torch.__version__ and content["device"] == "cpu"
    # Every network of every seed has a checkpoint that names what it was trained with.
    for seed in (0, 1):
        for name in ("ode", "sde-0.5", "shapes-ode", "shapes-sde-0.5"):
            meta = torch.load(out / "checkpoints" / f"s{seed}" / f"{name}.pt", weights_only=True)["meta"]
            assert meta["network"]["seed"] == seed and meta["network"]["network"] == name
    # Accuracy per seed, and per-seed effects behind every comparison.
    assert set(results["models"]["ode"]["accuracy"]) == {"0", "1"}
    sens = results["sensitivity"]["comparisons"]["sde-0.5"]["methods"]
    assert set(sens) == {"saliency", "integrated_gradients", "smoothgrad_ig", "deeplift", "deeplift_shap"}
    for r in sens.values():
        assert [p["seed"] for p in r["per_seed"]] == [0, 1] and r["level"] == "seeds"
        assert r["image"]["n"] == 2 * 4 * 2  # seeds x images x repetitions, paired
    # Theorem 1: the bound holds in every stage, as it must.
    assert results["theorem1"]["all_hold"]
    # DeepLIFT is complete with the noise off, whatever the solver: its residual is
    # round-off, far below the output change it accounts for.
    for solvers in results["completeness"].values():
        for solver, methods in solvers.items():
            if "fixed-path" not in solver:
                assert methods["deeplift"]["mean"] < 1e-4 * methods["output_change"]["mean"] + 1e-6
    claims = {r["claim"] for r in results["verdicts"]}
    assert claims == {
        "sensitivity falls as σ grows (primary)",
        "SDE attributions are less sensitive (secondary, per σ)",
        "Theorem 1's bound holds",
        "the SDE amplifies perturbations less",
        "completeness (eq. 9)",
        "SDE attributions are sharper (localisation)",
        "noise costs accuracy",
        "noise in the deeper stages alone lowers the sensitivity",
        "noise in the first stage alone lowers it by 5% or more",
        "noise at training time, not at attribution time, lowers it",
    }
    assert {r["verdict"] for r in results["verdicts"]} <= {"holds", "fails", "depends"}


def test_seed_level_verdicts():
    from benchmarks.report.stats import seed_effect, verdict

    assert verdict(-2.0, -1.0, -1) == "holds" and verdict(1.0, 2.0, -1) == "fails"
    assert verdict(-1.0, 1.0, -1) == "depends" and verdict(float("nan"), 1.0, 1) == "depends"
    # Every seed lower by 10%, images scattered: holds, with a zero-width interval over seeds.
    ode = {s: [1.0 + 0.1 * i for i in range(5)] for s in range(4)}
    sde = {s: [0.9 * v for v in vals] for s, vals in ode.items()}
    r = seed_effect(sde, ode, sign=-1)
    assert r["verdict"] == "holds" and r["agree"] == 4
    assert r["effect"]["mean"] == pytest.approx(-0.1, abs=1e-12)
    # Seeds that disagree decide it, however many images each has: depends.
    mixed = {s: [v * (0.8 if s % 2 else 1.25) for v in vals] for s, vals in ode.items()}
    r = seed_effect(mixed, ode, sign=-1)
    assert r["verdict"] == "depends" and r["agree"] == 2
    # One seed: the image-level interval decides, and the result says so.
    r = seed_effect({0: sde[0]}, {0: ode[0]}, sign=-1)
    assert r["level"] == "images" and r["verdict"] == "holds"


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


@pytest.fixture(scope="module")
def gpu_dry_run(tmp_path_factory):
    """``python -m benchmarks.gpu --device cpu``, its protocol's run kept: (folder, record, work).

    The budget is over ten times what the dry run needs on an idle machine (about 45 s), so
    that no section reaches its share however loaded the machine is: the test checks
    that every code path runs, not how fast.
    """
    root = tmp_path_factory.mktemp("gpu")
    out, work = root / "out", root / "work"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--device", "cpu", "--out", str(out), "--budget", "600",
         "--work", str(work)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, json.loads((out / "gpu.json").read_text()), work, proc.stdout


@pytest.mark.slow
def test_the_gpu_command_dry_run_runs_every_section(gpu_dry_run):
    out, record, _, stdout = gpu_dry_run
    assert sorted(p.name for p in out.iterdir()) == ["cuda-tests.log", "gpu.json", "gpu.md", "protocol.log"]
    sections = record["sections"]
    assert set(sections) == {"environment", "correctness", "speed", "protocol", "record"}
    assert {s["status"] for s in sections.values()} == {"ok"}, {n: s.get("error") for n, s in sections.items()}
    assert record["tiny"] and record["budget_s"] == 600
    # Correctness: every test marked cuda was collected, and without a GPU each was skipped.
    tests = sections["correctness"]["result"]["tests"]
    assert len(tests) >= 15 and {t["outcome"] for t in tests.values()} == {"skipped"}
    # Speed: every line, each with its ratios, throughput and targets.
    lines = sections["speed"]["result"]["lines"]
    assert [(line["precision"], line["phase"]) for line in lines] == [
        ("fp32", "forward"), ("fp32", "forward+backward"), ("fp32", "deeplift"),
        ("bf16", "forward"), ("bf16", "forward+backward"), ("bf16", "compiled forward"),
    ]  # fmt: skip
    for line in lines:
        assert line["rounds"] >= 3 and all(m["images_per_s"] > 0 for m in line["models"].values())
        for ratio in line["ratios"].values():
            assert ratio["q1"] <= ratio["median"] <= ratio["q3"]
    assert lines[0]["ratios"]["ode/torchvision"]["target"] == 1.03
    assert lines[-1]["backend"] == "eager" and lines[-1]["ode_compile_s"] > 0
    # The protocol: the README's command ran, every method has a time per image, and an extrapolation.
    protocol = sections["protocol"]["result"]
    assert protocol["exit_code"] == 0 and protocol["run_status"] == "finished"
    assert set(protocol["per_image_s"]["ode"]) == set(protocol["per_image_s"]["sde-0.5"]) == {
        "saliency", "integrated_gradients", "deeplift", "deeplift_shap"
    }  # fmt: skip
    assert protocol["extrapolation"]["complete"] and protocol["extrapolation"]["total_s"] > 0
    assert set(protocol["train_step"]["images_per_s"]) == {"torchvision", "ode", "sde"}
    # The page has every section's table, and the terminal summary ends the output.
    page = (out / "gpu.md").read_text()
    assert page.index("| environment |") < page.index("| correctness |") < page.index("| record |")
    for heading in ("## Sections", "## Targets", "## Environment", "## Correctness on CUDA", "## Speed",
                    "## The paper's protocol, scaled to fit"):  # fmt: skip
        assert heading in page
    assert "dry run" in page and "ODE ÷ torchvision" in page
    assert stdout.splitlines()[0].startswith("section") and "wrote " in stdout.splitlines()[-1]
    assert all(len(line) <= 80 for line in stdout.splitlines()[:-1])  # the last names the output folder


@pytest.mark.slow
def test_imagefolder_protocol_runs_end_to_end(gpu_dry_run):
    """The README's ImageNet command, on the GPU command's synthetic ImageFolder (resnet18 at 16x16)."""
    work = gpu_dry_run[2]
    results = json.loads((work / "run" / "results.json").read_text())
    assert results["models"]["ode"]["source"] == "trained" and results["config"]["arch"] == "resnet18"
    # The local bounds run on torchvision's stages too, and hold for every image.
    assert set(results["local_bound"]["stages"]) == {"layer1", "layer2", "layer3", "layer4"}
    assert all(n == 0 for n in results["local_bound"]["below"].values())
    assert "(one seed: image-level CI)" in tables(results)
    assert results["sensitivity"]["comparisons"]["sde-0.5"]["methods"]
    assert results["theorem1"]["all_hold"]
    assert (work / "run" / "figures" / "imagefolder-deeplift.png").exists()
    # The completeness rows of a torchvision architecture name the max-pool as DeepLIFT's cause.
    rows = [r for r in results["verdicts"] if r["claim"].startswith("completeness") and "DeepLIFT" in r["setting"]]
    assert rows and all("max-pool" in r["note"] for r in rows)
    # The paper's values stand beside ours where the architecture matches.
    results["sensitivity"]["paper"] = PAPER_SENSITIVITY["resnet50"]
    assert "0.5952 → 0.5510" in tables(results)


def test_imagefolder_run_needs_the_sde_network(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--arch", "resnet50", "--data", str(tmp_path), "--out", str(tmp_path / "o")])
    assert "--sde-weights FILE" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_trains_with_two_gloo_processes(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one_seed = [*QUICK, "--seeds", "0", "--out", str(out)]
    proc = subprocess.run(
        [torchrun(), "--standalone", "--nproc_per_node=2", "-m", "benchmarks.train", "--model", "sde-0.5", *one_seed],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sde-0.5 (seed 0): test accuracy" in proc.stdout
    cell = json.loads((out / "cells" / "train" / "s0" / "sde-0.5.json").read_text())["result"]
    assert len(cell["history"]) == 2 and cell["source"] == "trained"
    # The main job (one part of it is enough) then uses that network instead of training it again.
    main([*one_seed, "--parts", "theorem1"])
    computed = json.loads((out / "runs.json").read_text())[-1]["computed"]
    assert "train/s0/sde-0.5" not in computed and "train/s0/ode" in computed


def test_speed_benchmark_writes_every_ratio(tmp_path, capsys):
    from benchmarks.speed import main as speed_main
    from benchmarks.speed import noise_draws
    from neuralsde import SDEResNet

    sde = SDEResNet.from_torchvision(torchvision.models.resnet18(), sigma=0.5).eval()
    sde.set_noise(eval_samples=1)
    # 32x32 input: states 64x8x8 (layer1, two continuous blocks), 128x4x4, 256x2x2, 512x1x1
    assert noise_draws(sde, torch.randn(1, 3, 32, 32)) == [4096, 4096, 2048, 1024, 512]
    record = speed_main(
        ["--archs", "resnet18", "--size", "32", "--batch", "2", "--rounds", "2", "--out", str(tmp_path), "--profile"]
    )
    saved = json.loads((tmp_path / "speed.json").read_text())
    assert saved["results"] == json.loads(json.dumps(record["results"]))
    ratios = {phase: set(res["ratios"]) for phase, res in saved["results"]["resnet18"].items()}
    assert ratios == {
        "forward": {"ode/torchvision", "sde/ode", "gaussians/ode", "torchvision copy/torchvision"},
        "forward+backward": {"ode/torchvision", "sde/ode"},
        "deeplift": {"ode/discrete"},
        "noise draws": {f"{name}/torch normal_" for name in ("torch normal_, one call", "numpy PCG64", "numpy Philox")},
    }
    draws = saved["results"]["resnet18"]["noise draws"]
    assert (
        draws["values"] == sum(noise_draws(sde, torch.randn(2, 3, 32, 32))) and min(draws["ns_per_value"].values()) > 0
    )
    for phase in saved["results"]["resnet18"].values():
        for r in phase["ratios"].values():
            assert 0 < r["q1"] <= r["median"] <= r["q3"]
    out = capsys.readouterr().out
    assert "gaussians/ode" in out
    # Each line's target is the CPU's from the one table both speed benchmarks read (resnet18's where it has its own).
    from benchmarks.targets import target

    printed = 0
    for phase, res in saved["results"]["resnet18"].items():
        for ratio in res["ratios"]:
            goal = target("cpu", phase, ratio, "resnet18")
            [line] = [
                x for x in out.splitlines() if x.startswith("resnet18") and f" {phase} " in x and f" {ratio} " in x
            ]
            r = res["ratios"][ratio]
            if goal is None:
                assert line.rstrip().endswith(f"{r['min_ratio']:8.3f}")
            else:
                assert line.rstrip().endswith(f"{goal:7.2f}  " + ("yes" if r["median"] <= goal else "NO"))
            printed += goal is not None
    assert printed == 5 and target("cpu", "forward", "ode/torchvision", "resnet18") == 1.02
    # --profile: where each forward ratio of a twin goes, operator by operator, printed and kept.
    profile = saved["results"]["resnet18"]["forward"]["profile"]
    assert set(profile["pairs"]) == {"ode/torchvision", "sde/ode"}
    assert any(op == "aten::normal_" and a > 0 and b == 0 for op, a, b in profile["pairs"]["sde/ode"]["ops"])
    assert "where the time goes in sde/ode, forward pass" in out
    assert target("cpu", "forward", "sde/ode", "resnet50") == 1.15 and target("cpu", "forward", "sde/ode") is None


def test_the_compiled_lines_time_each_model_and_its_compile_apart():
    from benchmarks.speed import compiled_lines

    # The eager backend: the code path of the benchmark's inductor lines, without minutes of compiling.
    res = compiled_lines("resnet18", size=16, batch=1, rounds=2, seed=0, backend="eager")
    assert set(res["ratios"]) == {"ode/torchvision", "sde/ode", "ode/ode eager", "sde/sde eager"}
    assert set(res["compile_s"]) == {"torchvision", "ode", "sde"} and min(res["compile_s"].values()) > 0
    saved = res["seconds"]["ode eager"]["median"] - res["seconds"]["ode"]["median"]
    assert res["calls_to_amortise"] == (res["compile_s"]["ode"] / saved if saved > 0 else None)


def test_quartiles_stay_within_the_data():
    # Two rounds, one disturbed: the exclusive method would put the lower quartile at -1.
    assert statistics.quantiles([1.0, 9.0], n=4)[0] < 0
    samples = [[1.0, 9.0], [1.0], [1.02, 0.98, 1.01, 1.0, 25.0], [0.97, 1.0, 40.0], [0.3] * 4, [5.0, 0.1, 0.2, 0.1]]
    for data in samples:
        q1, median, q3 = quartiles(data)
        assert min(data) <= q1 <= median <= q3 <= max(data)
        assert median == statistics.median(data)
    assert quartiles([1.0, 2.0, 3.0, 4.0, 5.0]) == (2.0, 3.0, 4.0)
