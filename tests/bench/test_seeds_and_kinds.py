"""benchmarks/: the named seeds of a run's draws, and the kinds of result a store knows."""

import pytest
from helpers import ROOT

from benchmarks.cli import parse_args
from benchmarks.seeds import MAX_REPETITIONS, PURPOSES, images_seed, purpose_seed
from benchmarks.store import KINDS, Store


def test_the_purposes_keep_the_seeds_every_stored_cell_was_drawn_with():
    # A stored cell does not depend on these offsets (its digest holds options, networks and
    # images), so a changed offset would mix old reused numbers with new recomputed ones:
    # they are the values every store so far was made with.
    assert {p: purpose_seed(3, p) for p in PURPOSES} == {
        "robustness noise": 3017,
        "completeness perturbation": 3023,
        "pathwise path": 3031,
        "mechanism perturbations": 3041,
        "attribution-time paths": 3043,
    }
    assert [images_seed(3, r) for r in range(3)] == [3000, 3001, 3002]


def test_no_two_draws_of_a_training_seed_share_a_seed():
    for seed in (0, 1, 39):
        drawn = [images_seed(seed, r) for r in range(MAX_REPETITIONS)] + [purpose_seed(seed, p) for p in PURPOSES]
        assert len(set(drawn)) == len(drawn)
    with pytest.raises(ValueError, match="at most 17 repetitions"):
        images_seed(0, MAX_REPETITIONS)
    with pytest.raises(ValueError, match="purposes: robustness noise"):
        purpose_seed(0, "robustnes noise")


def test_more_repetitions_than_image_seeds_are_refused_in_one_line(capsys):
    parse_args(["--repetitions", str(MAX_REPETITIONS)])
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--repetitions", str(MAX_REPETITIONS + 1)])
    assert exit_.value.code == 2
    assert "--repetitions must be at most 17, got 18" in capsys.readouterr().err.strip().splitlines()[-1]


def test_a_store_asked_for_a_kind_it_does_not_know_raises(tmp_path):
    cfg, _ = parse_args(["--preset", "quick"])
    with Store(tmp_path / "s", cfg) as store:
        assert store.results("sensitivity") == {} and store.results("profile") == {}  # known, none measured
        with pytest.raises(ValueError, match="no kind of result 'sensitivty'; kinds: accuracy, completeness"):
            store.results("sensitivty")
    assert {"sensitivity", "train", "accuracy", "start_accuracy", "figures", "interventions"} <= KINDS


def test_the_sensitivity_cells_are_read_in_one_place():
    """The sections that summarise the sensitivity cells share one read (stats.sensitivity_cells)."""
    import re

    report = ROOT / "benchmarks" / "report"
    readers = {p.stem for p in report.glob("*.py") if re.search(r"""results\(\s*["']sensitivity["']""", p.read_text())}
    assert readers == {"stats"}
    users = {p.stem for p in report.glob("*.py") if "sensitivity_cells(store)" in p.read_text()}
    assert {"dose", "power", "sensitivity", "mechanism", "interventions"} <= users
