"""The benchmark's command line: every option has help and a real default, and is checked before anything runs."""

import subprocess
import sys

import pytest
import torch
from helpers import ROOT

from benchmarks.__main__ import main
from benchmarks.cli import build_parser, parse_args
from benchmarks.config import Config
from benchmarks.networks import Network
from benchmarks.sensitivity import SENSITIVITY

QUICK = ["--preset", "quick"]


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
    ode = Network()
    assert cfg.network(ode, 0) == Config(ig_steps=99, n_images=3).network(ode, 0)
    assert cfg.network(ode, 0) != Config(epochs=3).network(ode, 0)
    options = SENSITIVITY.options["sensitivity"]
    assert cfg.measurement(options, "saliency") == Config(ig_steps=99).measurement(options, "saliency")
    assert cfg.measurement(options, "integrated_gradients") != Config(ig_steps=99).measurement(
        options, "integrated_gradients"
    )


def test_help_shows_every_options_real_default():
    text = " ".join(build_parser().format_help().split())
    assert "default: None" not in text
    assert (
        "training epochs (the same for every network) (default: 12; --preset cifar10 2, cifar10-resnet56 2, "
        "imagenet 1, quick 2)" in text
    )
    assert "(the unit of replication) (default: 0 1 2 3 4; --preset full 0 1 ... 39, imagenet 0, quick 0 1)" in text
    assert "Integrated Gradients' steps (default: 20; --preset imagenet 50, quick 4)" in text
    assert "output folder (default: results)" in text


# -- the benchmark validates before it trains ------------------------------------------------
@pytest.fixture(scope="module")
def weights_inputs(tmp_path_factory):
    """A two-class ImageFolder and weights files, good and bad: (folder, {name: path})."""
    import torchvision
    from PIL import Image

    from neuralsde.train import save_checkpoint

    root = tmp_path_factory.mktemp("inputs")
    for c in range(2):
        (root / "images" / f"class{c}").mkdir(parents=True)
        Image.new("RGB", (8, 8), (255 * c, 0, 0)).save(root / "images" / f"class{c}" / "0.png")
    torch.manual_seed(0)
    two = torchvision.models.resnet18(num_classes=2)
    files = {name: root / f"{name}.pth" for name in ("1000", "2", "model", "empty", "text", "truncated", "ckpt")}
    torch.save(torchvision.models.resnet18().state_dict(), files["1000"])
    torch.save(two.state_dict(), files["2"])
    torch.save(two, files["model"])  # a whole pickled model
    files["empty"].write_bytes(b"")
    files["text"].write_text("resnet18 weights\n")
    files["truncated"].write_bytes(files["2"].read_bytes()[:100_000])
    save_checkpoint(files["ckpt"], model=two.state_dict(), epoch=1, history=[])  # as neuralsde.train.train writes
    return root / "images", files


@pytest.mark.parametrize(
    "arch, weights, message",
    [
        ("resnet18", "1000", "--weights {path} has 1000 classes, but --data {data} has 2 class folders"),
        (
            "resnet50",
            "2",
            "--weights {path} holds weights of another architecture than --arch resnet50: 165 missing keys in "
            "layer1, layer2, layer3, layer4 (e.g. layer1.0.conv3.weight)",
        ),
        ("resnet18", "model", "weights file {path} holds a pickled torchvision.models.resnet.ResNet object"),
        ("resnet18", "empty", "weights file {path} is empty; expected a state dict"),
        ("resnet18", "text", "weights file {path} is not a file written by torch.save"),
        ("resnet18", "truncated", "weights file {path} is not a file written by torch.save"),
    ],
    ids=["classes", "architecture", "pickled-model", "empty", "text", "truncated"],
)
def test_weights_are_checked_before_training_in_one_line(weights_inputs, arch, weights, message, tmp_path, capsys):
    data, files = weights_inputs
    argv = ["--arch", arch, "--data", str(data), "--train-data", str(data), "--weights", str(files[weights])]
    with pytest.raises(SystemExit) as info:
        main([*argv, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1, err
    assert message.format(path=files[weights], data=data) in err
    assert "weights_only" not in err and "Traceback" not in err
    if weights == "2":
        assert err.endswith("use --arch resnet18")
    if weights != "1000":
        assert "expected a state dict" in err or "--arch" in err
    assert not (tmp_path / "o").exists()  # refused before the run started


def test_a_train_checkpoint_is_a_weights_file_of_the_benchmark(weights_inputs):
    from benchmarks.train import check_inputs

    data, files = weights_inputs
    cfg, _ = parse_args(["--arch", "resnet18", "--data", str(data), "--train-data", str(data)])
    for name in ("2", "ckpt"):
        cfg.weights = str(files[name])
        check_inputs(cfg)  # no SystemExit


def test_an_out_that_is_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "results").write_text("not a folder")
    with pytest.raises(SystemExit) as info:
        main([*QUICK, "--out", str(tmp_path / "results")])
    err = capsys.readouterr().err.strip()
    assert info.value.code == 2 and len(err.splitlines()) == 1
    assert err == f"error: --out {tmp_path / 'results'} is a file, not a folder; name a folder (new or existing)"


def test_an_out_that_cannot_be_written_is_one_line(tmp_path, capsys):
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        try:
            (folder / "probe").write_text("")
        except PermissionError:
            pass
        else:
            pytest.skip("this user writes into read-only folders (root): chmod cannot make one")
        for out in (folder, folder / "sub"):
            with pytest.raises(SystemExit) as info:
                main([*QUICK, "--out", str(out)])
            err = capsys.readouterr().err.strip()
            assert info.value.code == 2 and len(err.splitlines()) == 1
            assert err.startswith(f"error: --out {out} cannot be written"), err
    finally:
        folder.chmod(0o755)
