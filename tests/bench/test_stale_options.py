"""A guard against stale results: every option a measurement reads is one its stored cells depend on.

A cell is reused when its dependencies match (networks, images, the measurement options
its part declares for its kind in ``Part.options`` and its method's in
``METHOD_OPTIONS``). An option the cell code reads but its kind does not declare would
let a changed value silently reuse a cell computed with the old one. This test runs
every part of the main job, records each configuration field read while a cell is
computed, and checks it against what that cell depends on.
"""

import dataclasses
import shutil

import pytest

from benchmarks.__main__ import main
from benchmarks.config import SHAPES_TRAIN_OPTIONS, Config
from benchmarks.networks import Network
from benchmarks.sensitivity import SENSITIVITY
from benchmarks.store import Store

FIELDS = {f.name: f.metadata["role"] for f in dataclasses.fields(Config)}
RUN = {name for name, role in FIELDS.items() if role == "run"}
TRAIN = {name for name, role in FIELDS.items() if role == "train"}


def _of_shapes(key: str) -> bool:
    """Whether a cell's network is a shapes network; a figure's label ("ODE") or "pretrained" names none."""
    try:
        return Network.parse(key).shapes
    except ValueError:
        return False


def _allowed(kind: str, name: str, depends: dict) -> set[str]:
    """What a cell may read: its declared options, the run options and what its networks were trained with."""
    figure = name.startswith("shapes--")  # not a network's name: the shapes figures' cell key
    shapes = figure or any(_of_shapes(n) for n in depends.get("networks", {}))
    # A train option retrains the networks, which changes the cell's networks: safe to read.
    # The shapes networks depend on a subset of them only.
    return set(depends.get("options", {})) | RUN | (set(SHAPES_TRAIN_OPTIONS) if shapes else TRAIN)


@pytest.fixture(scope="module")
def reads(tmp_path_factory, quick_run):
    """(kind, cell, option) read while computing a cell but not among its dependencies, for one quick run.

    The run leaves ``radius`` out of the sensitivity cells' declared options, which the
    guard must catch (the sensitivity code reads it): a guard that cannot fail is none.
    It starts from the quick run's networks of its seed (the guard is about the cells,
    every one of which it computes).
    """
    found: set[tuple[str, str, str]] = set()
    active: list[tuple[str, str, set[str]]] = []
    original_getattribute = Config.__getattribute__
    original_cell = Store.cell

    def getattribute(self, attr):
        if active and attr in FIELDS and attr not in active[-1][2]:
            found.add((active[-1][0], active[-1][1], attr))
        return original_getattribute(self, attr)

    def cell(self, kind, name, compute, *, depends, rng=None):
        def recorded():
            active.append((kind, name, _allowed(kind, name, depends)))
            try:
                return compute()
            finally:
                active.pop()

        return original_cell(self, kind, name, recorded, depends=depends, rng=rng)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Config, "__getattribute__", getattribute)
        mp.setattr(Store, "cell", cell)
        declared = tuple(o for o in SENSITIVITY.options["sensitivity"] if o != "radius")
        mp.setitem(SENSITIVITY.options, "sensitivity", declared)
        out = tmp_path_factory.mktemp("stale") / "results"
        shutil.copytree(quick_run[0] / "checkpoints" / "s0", out / "checkpoints" / "s0")
        results = main(["--preset", "quick", "--seeds", "0", "--quiet", "--out", str(out)])
    return found, results["config"]


def test_every_option_a_cell_reads_is_one_it_depends_on(reads):
    undeclared = {(kind, option) for kind, _, option in reads[0]}
    # The one option left out on purpose is caught, in every sensitivity cell ...
    assert ("sensitivity", "radius") in undeclared
    # ... and nothing else is read without being declared.
    assert undeclared == {("sensitivity", "radius")}, sorted(undeclared)


def test_the_guard_saw_every_sensitivity_cell(reads):
    found, cfg = reads
    cells = {cell for kind, cell, _ in found if kind == "sensitivity"}
    # Each sensitivity cell (per network, method and repetition of seed 0) read the undeclared radius.
    assert len(cells) == (1 + len(cfg["sigmas"])) * len(cfg["methods"]) * cfg["repetitions"] > 0
