"""Nothing in the store that is not the file it should be ends in a traceback, and a path says what it is."""

import json
import shutil

import pytest
import torch

from benchmarks.pipeline import run
from benchmarks.sensitivity import SENSITIVITY

QUICK = ["--preset", "quick", "--seeds", "0"]


def _copy(quick_run, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(quick_run[0], copy)
    return copy


def test_a_cell_or_checkpoint_that_is_a_folder_is_set_aside_and_made_again(quick_run, tmp_path, capsys):
    copy = _copy(quick_run, tmp_path)
    cell = copy / "cells" / "sensitivity" / "s0" / "ode--saliency--rep0.json"
    before = json.loads(cell.read_text())["result"]
    cell.unlink()
    cell.mkdir()  # a folder where the cell was
    ckpt = copy / "checkpoints" / "s0" / "sde-0.5.pt"
    weights = torch.load(ckpt, weights_only=True)["model"]
    ckpt.unlink()
    (ckpt / "inside").mkdir(parents=True)  # a folder, not empty, where the checkpoint was
    capsys.readouterr()
    for _ in range(2):  # the second run finds everything in place again
        run([*QUICK, "--out", str(copy), "--quiet"], [SENSITIVITY], report=False)
    err = capsys.readouterr().err
    assert "cells/sensitivity/s0/ode--saliency--rep0.json: not a file but a folder; set aside as " in err
    assert "checkpoints/s0/sde-0.5.pt: not a file but a folder; set aside as sde-0.5.pt.damaged; training" in err
    assert "Traceback" not in err and err.count("not a file") == 2
    assert (ckpt.parent / "sde-0.5.pt.damaged" / "inside").is_dir()  # kept, not deleted
    assert json.loads(cell.read_text())["result"]["values"] == before["values"]  # made again, the same
    retrained = torch.load(ckpt, weights_only=True)["model"]
    assert all(torch.equal(retrained[k], v) for k, v in weights.items())  # the same seed trains the same network


def test_weights_that_are_a_folder_are_named_as_one(tmp_path):
    from neuralsde import ODEResNet

    with pytest.raises(ValueError, match=r"is a folder, not a file"):
        ODEResNet("resnet18", weights=str(tmp_path))
    with pytest.raises(ValueError, match=r"is a folder, not a file"):
        ODEResNet("resnet20", weights=tmp_path)


def test_gpu_out_that_is_a_file_is_one_line(tmp_path, capsys):
    from benchmarks.gpu import main

    (tmp_path / "f").write_text("")
    with pytest.raises(SystemExit) as exit_:
        main(["--device", "cpu", "--out", str(tmp_path / "f")])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"--out {tmp_path / 'f'} is a file, not a folder")


@pytest.mark.parametrize("content", ["[]", "{}", "not json"])
def test_compare_with_a_run_that_is_no_run_is_one_line(quick_run, tmp_path, capsys, content):
    from benchmarks.docs import main

    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(content)
    with pytest.raises(SystemExit) as exit_:
        main(["--results", str(quick_run[0]), "--docs", str(tmp_path / "docs"), "--compare", str(other)])
    assert exit_.value.code == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(other / "results.json") in last and ("does not hold a finished run" in last or "unreadable" in last)
    assert not (tmp_path / "docs").exists()


@pytest.mark.parametrize("data", ["/nope", "digts"])
def test_a_missing_data_path_is_named_before_anything_else(data, capsys):
    from benchmarks.cli import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--data", data])  # an ImageFolder run would also need a torchvision --arch: said second
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"--data {data}: no such file or folder (named data sets: digits, cifar10)"), err


def test_the_last_line_counts_what_was_reused(quick_run, tmp_path, capsys):
    copy = _copy(quick_run, tmp_path)
    (copy / "cells" / "sensitivity" / "s0" / "ode--saliency--rep0.json").unlink()
    capsys.readouterr()
    run([*QUICK, "--out", str(copy), "--quiet"], [SENSITIVITY], report=False)
    out = capsys.readouterr().out.strip().splitlines()[-1]
    # Seed 0 of the quick preset: 2 trainings and 2 accuracies, 2 networks x 5 methods x 2 repetitions of
    # sensitivity, of which one is computed again.
    assert out.startswith("1 results computed, 23 reused; ")
