"""A network of a run is a record (benchmarks/networks.py): its name is the store's key, unchanged.

Every name below is a key a store written before the record existed holds (its
checkpoints, cells and results): the record must reproduce them exactly, or a resumed run
would recompute everything.
"""

import re
from pathlib import Path

import pytest
import torch
from helpers import ROOT

from benchmarks.config import Config
from benchmarks.data import Data
from benchmarks.networks import ODE, Network, sigma_of
from benchmarks.train import build_model

#: The networks of a default run's store, as its checkpoint files name them.
DEFAULT_STORE = [
    "ode", "sde-0.1", "sde-0.25", "sde-0.5", "sde-0.75",
    "sde-at-layer1-0.75", "sde-at-layer2-0.75", "sde-at-layer3-0.75", "sde-at-layer2+layer3-0.75",
    "shapes-ode", "shapes-sde-0.5",
]  # fmt: skip


def test_a_default_run_names_its_networks_as_before():
    cfg = Config()
    nets = cfg.table_networks() + cfg.intervention_networks() + cfg.shape_networks()
    assert [n.name for n in nets] == DEFAULT_STORE
    assert cfg.attribution_time_network.name == "ode+noise-at-attribution-0.75"  # cells only, no checkpoint
    assert ODE == "ode" and cfg.table_sde.name == "sde-0.5"


@pytest.mark.parametrize("name", [*DEFAULT_STORE, "ode+noise-at-attribution-0.75", "sde-2", "sde-at-layer4-1.5"])
def test_a_name_reads_back_into_its_record(name):
    net = Network.parse(name)
    assert net.name == name and Network.parse(net.name) == net


def test_what_the_record_says():
    deep = Network.parse("sde-at-layer2+layer3-0.75")
    assert (deep.sigma, deep.stages, deep.shapes, deep.at_attribution) == (0.75, ("layer2", "layer3"), False, False)
    assert deep.noise() == {"layer2": 0.75, "layer3": 0.75} and deep.where() == "layer2 and layer3"
    assert Network.parse("sde-0.5").noise() == 0.5 and Network.parse("ode").noise() is None
    shapes = Network.parse("shapes-sde-0.5")
    assert shapes.shapes and shapes.data == "shapes" and shapes.sigma == 0.5
    at = Network.parse("ode+noise-at-attribution-0.75")
    assert at.is_ode and at.sigma == 0.75 and at.noise() == 0.75
    assert [sigma_of(n) for n in ("ode", "shapes-ode", "sde-0.25", "sde-at-layer1-0.75")] == [0, 0, 0.25, 0.75]


def test_a_sigma_written_with_an_exponent_reads_back():
    # "sde-1e-05": the string parsing this record replaced took the text after the last "-" (σ = 5).
    for net in (Network(1e-5), Network(1e-5, ("layer1",)), Network(2.5e-7, at_attribution=True)):
        assert "e-" in net.name and Network.parse(net.name).sigma == net.sigma


@pytest.mark.parametrize(
    "name",
    ["", "sde", "sde-", "sde-0", "sde--0.5", "sde-nan", "sde-inf", "sde-x", "sde-at-", "sde-at-layer1",
     "sde-at-layer1-0", "sde-at-+layer1-0.5", "ode-0.5", "shapes-", "shapes-sde-at-layer1-0.5",
     "shapes-ode+noise-at-attribution-0.5", "ode+noise-at-attribution-0", "SDE-0.5", " sde-0.5", None, 0.5],
)  # fmt: skip
def test_what_names_no_network_is_refused(name):
    with pytest.raises(ValueError, match="not a network's name"):
        Network.parse(name)


@pytest.mark.parametrize(
    "kwargs",
    [dict(sigma=-1.0), dict(sigma=float("nan")), dict(sigma=True), dict(sigma=0.5, stages=()),
     dict(sigma=0.0, stages=("layer1",)), dict(sigma=0.5, stages=("layer-1",)), dict(at_attribution=True),
     dict(sigma=0.5, stages=("layer1",), at_attribution=True), dict(sigma=0.5, shapes=True, stages=("layer1",))],
)  # fmt: skip
def test_a_record_no_run_has_is_refused(kwargs):
    with pytest.raises((ValueError, TypeError)):
        Network(**kwargs)


def test_a_four_stage_architecture_has_noise_in_its_last_stage_alone():
    """--arch resnet18 --interventions: a network with noise in layer4 alone, built with noise there only."""
    cfg = Config(arch="resnet18", intervention_sigma=0.75)
    nets = cfg.intervention_networks()
    assert [n.stages for n in nets] == [
        ("layer1",),
        ("layer2",),
        ("layer3",),
        ("layer4",),
        ("layer2", "layer3", "layer4"),
    ]
    data = Data("tiny", None, None, in_channels=3, num_classes=4, value_range=(0.0, 1.0), shap_baselines=torch.zeros(1))
    model = build_model(cfg, nets[3], 0, data)
    noisy = {name for name, sigma in model.stage_sigmas.items() if sigma > 0}
    assert noisy == {"layer4"} and model.stage_sigmas["layer4"] == 0.75
    model = build_model(cfg, nets[-1], 0, data)
    assert {name for name, sigma in model.stage_sigmas.items() if sigma > 0} == {"layer2", "layer3", "layer4"}


def test_stage_names_are_read_from_the_built_network():
    assert Config(arch="small", widths=[4, 8, 16, 32]).stage_names() == ["layer1", "layer2", "layer3", "layer4"]
    assert Config(arch="small", widths=[4, 8]).stage_names() == ["layer1", "layer2"]
    assert Config(arch="resnet20").stage_names() == ["layer1", "layer2", "layer3"]
    assert Config(arch="resnet50").stage_names() == ["layer1", "layer2", "layer3", "layer4"]


#: What parsing a network's name by hand looks like: splitting it, or testing its start or end.
_PARSING = re.compile(
    r"""-at-|\.(?:r?split|startswith|endswith|r?partition)\(\s*["'](?:-["']|sde|ode|shapes-)"""
    r"""|f["']sde-|f["']ode\+|\bsde\[4:\]"""
)
#: A line that splits a string that is not a network's name says so.
EXEMPT = "# not a network's name"


def test_no_name_is_parsed_outside_the_records_module():
    """benchmarks/ and tests/ ask the record; only benchmarks/networks.py reads a name (and this test's patterns)."""
    own = {ROOT / "benchmarks" / "networks.py", Path(__file__).resolve()}
    found = []
    for path in sorted([*(ROOT / "benchmarks").rglob("*.py"), *(ROOT / "tests").rglob("*.py")]):
        if path in own:
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if EXEMPT in line or code.lstrip().startswith(('"', "'", "(``", "``")):
                continue
            if _PARSING.search(code):
                found.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()}")
    assert not found, "\n".join(found)


def test_the_scan_would_see_the_old_parsing():
    old = [
        'return 0.0 if name.endswith("ode") else float(name.rsplit("-", 1)[1])',
        'if name.startswith("sde-") and "-at-" not in name:',
        'twin = "shapes-ode" if name.startswith("shapes-") else "ode"',
        'trained_sde = f"sde-{cfg.intervention_sigma:g}"',
        'f" This run reached at worst (σ = {sde[4:]}; half the "',
    ]
    assert all(_PARSING.search(line) for line in old)
