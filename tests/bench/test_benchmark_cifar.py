"""benchmarks/ on CIFAR-10: options, presets, a run on a tiny image folder, the pages beside the digits."""

import copy
import json
from pathlib import Path

import pytest
import torch

from benchmarks.__main__ import main
from benchmarks.cli import parse_args
from benchmarks.config import Config
from benchmarks.networks import Network
from benchmarks.presets import PRESETS


def _tiny_cifar(root: Path, per_class: int = 3) -> Path:
    """A CIFAR-10 image folder with 3 classes, ``per_class`` lossless PNGs of each in train/ and test/."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c, name in enumerate(("airplane", "automobile", "bird")):
            (root / split / name).mkdir(parents=True)
            for k in range(per_class):
                base = np.zeros((32, 32, 3), dtype=np.uint8) + np.uint8(60 * c + 40)
                noise = rng.integers(0, 60, size=(32, 32, 3), dtype=np.uint8)
                Image.fromarray(base + noise).save(root / split / name / f"{k:04d}.png")
    return root


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A CIFAR-10 run on a tiny image folder, from a ResNet-20 checkpoint: (folder, results)."""
    from neuralsde import ODEResNet

    base = tmp_path_factory.mktemp("cifar")
    data = _tiny_cifar(base / "images")
    torch.manual_seed(0)
    weights = base / "resnet20.th"
    model = ODEResNet("resnet20")
    with torch.no_grad():  # every network calls every image an airplane: three test images to measure
        model.fc.bias[0] = 20.0
    state = model.state_dict()
    torch.save({"state_dict": {f"module.{k}".replace(".fc.", ".linear."): v for k, v in state.items()}}, weights)
    out = base / "run"
    args = [
        *("--preset", "cifar10", "--data-root", str(data), "--weights", str(weights), "--out", str(out)),
        *("--seeds", "0", "--sigmas", "0.5", "--train-images", "6", "--epochs", "1", "--eval-images", "0"),
        *("--n-images", "2", "--n-perturb", "2", "--ig-steps", "2", "--figure-images", "2", "--quiet"),
        *("--parts", "sensitivity", "figures", "--batch-size", "4"),
    ]
    return out, main(args)


def test_the_cifar_presets_name_what_they_run():
    for name, arch in (("cifar10", "resnet20"), ("cifar10-resnet56", "resnet56")):
        cfg = Config(**PRESETS[name])
        assert cfg.cifar and cfg.arch == arch and not cfg.imagenet and not cfg.shapes
        assert "smoothgrad_ig" not in cfg.methods and set(cfg.parts) >= {"sensitivity", "theorem1", "figures"}
    cfg = Config(**PRESETS["cifar10"])
    # One intervention: noise in the first stage alone against noise in every other stage.
    assert cfg.intervention_networks() == [Network(0.5, ("layer1",)), Network(0.5, ("layer2", "layer3"))]


def test_intervention_stages_come_from_the_architecture():
    # A four-stage ResNet has a network with noise in layer4 alone, and "all but the first" is layers 2 to 4.
    cfg = Config(arch="resnet18", intervention_sigma=0.75)
    assert cfg.stage_names() == ["layer1", "layer2", "layer3", "layer4"]
    assert Network(0.75, ("layer4",)) in cfg.intervention_networks()
    assert cfg.deep_network == Network(0.75, ("layer2", "layer3", "layer4"))
    assert Config(arch="resnet56").stage_names() == ["layer1", "layer2", "layer3"]


def test_earlier_stores_keep_their_networks():
    # The training options added for CIFAR-10 are left out of a network's identity at their default.
    identity = Config().network(Network(0.5), 0)
    assert "data_root" not in identity and "train_images" not in identity
    assert Config(train_images=100).network(Network(0.5), 0)["train_images"] == 100


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--data", "cifar10"], "--data cifar10 needs --data-root"),
        (["--data", "cifar10", "--data-root", "/nope"], "--data-root /nope: no such file or folder"),
        (["--data-root", "."], "--data-root is where CIFAR-10 is; it needs --data cifar10"),
        (["--parts", "sensitivity", "nothing"], "--parts must name some of"),
        (["--arch", "resnet21"], "unknown --arch 'resnet21'"),
        (["--weights", "README.md"], "--weights and --sde-weights are for a named --arch"),
    ],
)
def test_cifar_options_are_checked_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_a_seed_with_no_image_to_measure_ends_in_one_line(tmp_path, capsys):
    from neuralsde import ODEResNet

    data = _tiny_cifar(tmp_path / "images", per_class=1)
    torch.manual_seed(0)
    model = ODEResNet("resnet20")
    with torch.no_grad():  # every network calls every image a cat, which none of them is
        model.fc.bias[3] = 20.0
    torch.save(model.state_dict(), tmp_path / "w.pt")
    argv = ["--data", "cifar10", "--data-root", str(data), "--arch", "resnet20", "--weights", str(tmp_path / "w.pt")]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--seeds", "0", "--sigmas", "0.5", "--epochs", "1", "--parts", "sensitivity", "--no-shapes",
              "--no-interventions", "--quiet", "--out", str(tmp_path / "run")])  # fmt: skip
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: no test image is classified correctly by every network of seed 0")
    assert json.loads((tmp_path / "run" / "runs.json").read_text())[-1]["status"] == "nothing to measure"


def test_a_folder_that_holds_no_cifar_is_refused_before_training(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exit_:
        main(["--data", "cifar10", "--data-root", str(tmp_path / "empty"), "--arch", "resnet20",
              "--out", str(tmp_path / "run")])  # fmt: skip
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --data-root: CIFAR-10 root") and "train/ and test/" in err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.slow
def test_a_cifar_run_end_to_end(tiny_run):
    out, results = tiny_run
    cfg = results["config"]
    assert cfg["data"] == "cifar10" and cfg["arch"] == "resnet20" and cfg["parts"] == ["sensitivity", "figures"]
    # The parts not asked for did not run; the starting weights were measured before fine-tuning.
    assert not (out / "cells" / "theorem1").exists() and not (out / "cells" / "interventions").exists()
    start = results["start"]
    assert start["weights"] == "resnet20.th" and start["test_images"] == 9 and 0 <= start["test_accuracy"] <= 1
    assert set(results["models"]) == {"ode", "sde-0.5"}
    assert {row["claim"] for row in results["verdicts"]} >= {"sensitivity falls as σ grows (primary)"}
    # The maps figure of natural images: Saliency and IG, ODE beside SDE.
    assert (
        results["figures"]["cifar10--maps"] == "figures/cifar10-maps.png"
        and (out / "figures/cifar10-maps.png").exists()
    )
    text = (out / "tables.md").read_text()
    assert "Every network starts from the weights in `resnet20.th`" in text


@pytest.mark.slow
def test_the_pages_show_cifar_beside_the_digits(tiny_run, quick_run, tmp_path):
    from benchmarks.docs import main as docs_main
    from benchmarks.docs import render_pages
    from benchmarks.report.beside import Beside, label_of, page_lines

    out, results = tiny_run
    digits_out, digits = quick_run
    other = Beside(label_of(results), results, json.loads((out / "runs.json").read_text()))
    assert other.label == "cifar10-resnet20"
    pages = render_pages(digits, [], None, [other])
    page = pages["sensitivity"]
    assert "### On CIFAR-10, beside the digits" in page and "| digits (small ResNet) | CIFAR-10, ResNet-20 |" in page
    assert "## On CIFAR-10: where the runs come from" in page and "JPEG" in page
    assert "(img/cifar10-resnet20-maps.png)" in page
    assert "The equal-accuracy check" in page
    # A row decided the other way on CIFAR-10 is named in the sentence under the table (every other row
    # of both runs set to depends, so that it is the only difference).
    flipped, digits_flipped = copy.deepcopy(results), copy.deepcopy(digits)
    for run, verdict in ((flipped, "fails"), (digits_flipped, "holds")):
        for row in run["verdicts"]:
            chosen = row["claim"] == "sensitivity falls as σ grows (primary)" and row["setting"].startswith("Saliency")
            row["verdict"] = verdict if chosen else "depends"

    def rows_of(res):  # the stored rows, as changed here
        return [row for row in res["verdicts"] if row["claim"].startswith("sensitivity falls")]

    text = "\n".join(page_lines(digits_flipped, [Beside(other.label, flipped, [])], rows_of, provenance_link="#p"))
    assert "**CIFAR-10 and the digits disagree** on 1 of the" in text
    assert "(Saliency, σ = 0 to 0.5: holds on the digits, fails on CIFAR-10, ResNet-20)." in text
    # Without runs beside them, the pages say nothing of CIFAR-10.
    assert "CIFAR-10" not in render_pages(digits, [])["theorem1"]
    # The command copies the run's data and its maps figure, and pages can be made again from the copies.
    docs = tmp_path / "docs"
    docs_main(["--results", str(digits_out), "--docs", str(docs), "--beside", str(out)])
    theory = docs / "theory"
    assert (theory / "data" / "cifar10-resnet20" / "results.json").exists()
    assert (theory / "img" / "cifar10-resnet20-maps.png").exists()
    first = (theory / "sensitivity.md").read_text()
    docs_main(
        ["--results", str(theory / "data"), "--docs", str(docs), "--beside", str(theory / "data" / "cifar10-resnet20")]
    )
    assert (theory / "sensitivity.md").read_text() == first
