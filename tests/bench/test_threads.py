"""The thread count: chosen on the command line, part of a network's identity, not of the configuration digest."""

import json

import pytest
import torch

from benchmarks.cli import parse_args
from benchmarks.config import Config
from benchmarks.networks import Network
from benchmarks.presets import PRESETS
from benchmarks.report import preset_of


@pytest.fixture
def threads_restored():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_run_computes_on_its_thread_count_and_gives_the_callers_back(monkeypatch, tmp_path, threads_restored):
    import benchmarks.pipeline as pipeline
    from benchmarks.__main__ import main

    seen = []
    monkeypatch.setattr(pipeline, "_run", lambda cfg, store, *a: seen.append((torch.get_num_threads(), store.root)))
    for given, count in (([], 1), (["--threads", "2"], 2)):
        torch.set_num_threads(3)
        main([*given, "--out", str(tmp_path / str(count))])
        assert seen[-1][0] == count and torch.get_num_threads() == 3  # the caller's count back
        # The run's record says what it computed on (the store records the machine when it opens).
        record = json.loads((seen[-1][1] / "config.json").read_text())
        assert record["environment"]["torch_threads"] == count and record["config"]["threads"] == count


@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_thread_count_below_one_is_refused_in_one_line(value, capsys, threads_restored):
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--threads", value])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1
    assert f"--threads must be at least 1, got {value}" in err


def test_the_thread_count_is_part_of_every_networks_identity():
    for net in (Network(0.5), Network(shapes=True)):
        # At the default, left out: a store written before the option keeps its networks.
        assert "threads" not in Config().network(net, 0)
        assert Config(threads=2).network(net, 0)["threads"] == 2
        assert Config(threads=2).network(net, 0) != Config().network(net, 0)


def test_runs_on_other_thread_counts_share_the_digest_and_the_preset():
    # So that they can be compared row by row; any other option changes the digest.
    assert Config(threads=2).digest() == Config().digest()
    assert Config(lr=1e-3).digest() != Config().digest()
    for name in ("quick", "full", "cifar10"):
        assert preset_of(Config(**{**PRESETS[name], "threads": 2})) == name
