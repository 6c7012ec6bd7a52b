"""Noise per stage: ``SDEResNet(sigma=...)`` with one value per stage, 0 making a stage an ODE."""

import pytest
import torch
import torchvision
from helpers import tiny_model

from neuralsde import ODEResNet, SDEResNet

SMALL = dict(widths=(4, 8, 8), blocks=2, num_classes=3)
X = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def sde(sigma, seed=0, **kw):
    return tiny_model(SDEResNet, seed, sigma=sigma, **SMALL, **kw)


@pytest.mark.parametrize("per_stage", [[0.5, 0.5, 0.5], {"layer1": 0.5, "layer2": 0.5, "layer3": 0.5}])
@pytest.mark.parametrize("diffusion", ["normalized", "learned"])
def test_every_stage_at_the_same_sigma_is_bit_identical_to_one_sigma(per_stage, diffusion):
    one, each = sde(0.5, diffusion=diffusion), sde(per_stage, diffusion=diffusion)
    assert each.sigma == 0.5 and each.stage_sigmas == {"layer1": 0.5, "layer2": 0.5, "layer3": 0.5}
    for mode in ("train", "fixed path"):
        outs = []
        for model in (one, each):
            model.train(mode == "train").set_noise(path_seed=None if mode == "train" else 7)
            torch.manual_seed(3)  # the same Brownian draws for both
            outs.append(model(X))
        assert torch.equal(*outs), mode  # bit for bit: the same computation


def test_a_stage_with_sigma_zero_draws_no_noise_at_all(monkeypatch):
    model = sde({"layer3": 0.5}).train()
    calls = []
    for stage in model.stages:  # a sigma-0 stage never evaluates its diffusion
        original = stage.diffusion.forward
        monkeypatch.setattr(
            stage.diffusion, "forward", lambda t, x, f=original, n=stage.name: calls.append(n) or f(t, x)
        )
    torch.manual_seed(0)
    model(X)
    assert calls and set(calls) == {"layer3"}
    # Every stage at 0: an ODE network in train mode, which draws nothing from torch's generator
    # and computes what the ODE twin with the same weights computes.
    zero = sde([0.0, 0.0, 0.0]).train()
    ode = tiny_model(ODEResNet, 0, **SMALL).train()
    state = torch.get_rng_state()
    out = zero(X)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(out, ode(X))


@pytest.mark.parametrize("method", ["euler", "milstein", "srk"])
def test_no_solver_draws_for_a_stage_at_sigma_zero_or_with_its_noise_off(method):
    """SRK has no ODE twin: such a stage runs it with a zero diffusion, along a zero path, drawing nothing."""
    kw = dict(method=method, diffusion="additive")  # SRK needs an element-wise diffusion
    for sigma, mode in (([0.0, 0.0, 0.0], "train"), (0.5, "eval")):
        model = sde(sigma, **kw).train(mode == "train")
        state = torch.get_rng_state()
        out = model(X)
        assert torch.equal(torch.get_rng_state(), state), (sigma, mode)
        assert torch.isfinite(out).all()


def test_noise_in_one_stage_changes_only_from_that_stage_on():
    model = sde({"layer2": 0.5}).train()
    seen = {}
    for stage in model.stages:
        stage.register_forward_hook(lambda m, i, o, name=stage.name: seen.setdefault(name, []).append(o.detach()))
    for seed in (0, 1):
        torch.manual_seed(seed)
        model(X)
    # layer1 has no noise: two different draws give the same output; layer2 has: they differ.
    assert torch.equal(seen["layer1"][0], seen["layer1"][1])
    assert not torch.equal(seen["layer2"][0], seen["layer2"][1])


def test_set_noise_from_torchvision_and_state_dict_take_a_value_per_stage():
    model = sde(0.25).set_noise(sigma={"layer3": 0.75})
    assert model.sigma == {"layer1": 0.0, "layer2": 0.0, "layer3": 0.75}
    model.set_noise(diffusion="learned")  # a new kind keeps each stage's sigma
    assert model.stage_sigmas == {"layer1": 0.0, "layer2": 0.0, "layer3": 0.75}
    model.set_noise(sigma=[0.1, 0.2, 0.3])
    assert [s.diffusion.sigma for s in model.stages] == [0.1, 0.2, 0.3]
    with pytest.raises(ValueError, match="names no stage"):
        model.set_noise(sigma={"layer4": 0.5})
    assert model.stage_sigmas == {"layer1": 0.1, "layer2": 0.2, "layer3": 0.3}  # nothing changed
    # state_dict: a network of the same layout loads it and computes the same.
    copy = sde([0.1, 0.2, 0.3], seed=5, diffusion="learned")
    copy.load_state_dict(model.state_dict())
    for m in (model, copy):
        m.eval().set_noise(path_seed=11)
    assert torch.equal(model(X), copy(X))
    tv = torchvision.models.resnet18(num_classes=4).eval()
    twin = SDEResNet.from_torchvision(tv, sigma=[0.0, 0.0, 0.5, 0.5])
    assert twin.sigma == {"layer1": 0.0, "layer2": 0.0, "layer3": 0.5, "layer4": 0.5}


@pytest.mark.parametrize(
    "sigma, message",
    [
        ({"layer9": 0.1}, r"sigma names no stage \['layer9'\]; the network's stages are"),
        ([0.1, 0.2], "sigma has 2 values for the network's 3 stages"),
        ({"layer1": -0.1}, "sigma must be a finite number >= 0, got -0.1"),
        ([0.1, "a", 0.2], "sigma must be numbers >= 0, got 'a'"),
        ([], "sigma is an empty sequence"),
    ],
)
def test_a_per_stage_sigma_that_does_not_fit_is_one_clear_error(sigma, message):
    with pytest.raises(ValueError, match=message):
        sde(sigma)


@pytest.mark.parametrize(
    "value",
    [torch.tensor(0.5), torch.tensor(0.5, dtype=torch.float64), __import__("numpy").float32(0.5), 0.5],
    ids=["tensor", "tensor64", "numpy", "float"],
)
def test_one_sigma_rule_for_numbers_tensors_and_numpy_scalars(value):
    # Everywhere a sigma is given: the constructor, per stage, by name, and set_noise.
    for spec in (value, [value, value, value], {"layer1": value, "layer2": value, "layer3": value}):
        assert sde(spec).stage_sigmas == {"layer1": 0.5, "layer2": 0.5, "layer3": 0.5}
        assert sde(0.1).set_noise(sigma=spec).stage_sigmas == {"layer1": 0.5, "layer2": 0.5, "layer3": 0.5}


@pytest.mark.parametrize(
    "bad, message",
    [({}, "empty mapping"), ([], "empty sequence"), (torch.tensor([0.5]), "numbers >= 0"), (float("nan"), "finite")],
)
def test_empty_and_other_sigmas_are_refused_alike(bad, message):
    with pytest.raises(ValueError, match=message):
        sde(bad)
    model = sde(0.5)
    with pytest.raises(ValueError, match=message):
        model.set_noise(sigma=bad)
    assert model.stage_sigmas == {"layer1": 0.5, "layer2": 0.5, "layer3": 0.5}  # nothing changed


def test_a_stage_of_transitions_alone_takes_no_sigma():
    # One block per stage: layer2 and layer3 hold only their strided first block, a transition.
    one_block = dict(SMALL, blocks=1)
    model = tiny_model(SDEResNet, 0, sigma=0.5, **one_block)
    assert [s.num_continuous for s in model.stages] == [1, 0, 0]
    assert model.stage_sigmas == {"layer1": 0.5, "layer2": 0.0, "layer3": 0.0}  # what it does, not what was asked
    for spec in ({"layer2": 0.5}, [0.5, 0.5, 0.0]):
        with pytest.raises(ValueError, match="stage layer2, which has no continuous block"):
            tiny_model(SDEResNet, 0, sigma=spec, **one_block)
        with pytest.raises(ValueError, match="stage layer2, which has no continuous block"):
            model.set_noise(sigma=spec)
    assert model.stage_sigmas == {"layer1": 0.5, "layer2": 0.0, "layer3": 0.0}


def test_sigma_is_checked_once_and_each_diffusion_built_once(monkeypatch):
    """SDEResNet(sigma=...) reads sigma once and builds each stage's diffusion once; set_noise builds none to check."""
    import neuralsde.sde_models as sde_models

    built, read = [], []
    make = sde_models.make_diffusion
    monkeypatch.setattr(sde_models, "make_diffusion", lambda *a, **k: built.append(a) or make(*a, **k))
    init = sde_models.StageSigmas.__init__
    monkeypatch.setattr(sde_models.StageSigmas, "__init__", lambda self, s: read.append(s) or init(self, s))
    model = sde({"layer2": 0.25, "layer3": 0.5})
    assert read == [{"layer2": 0.25, "layer3": 0.5}]
    assert [(kind, sigma) for kind, sigma, _ in built] == [
        ("normalized", 0.0),
        ("normalized", 0.25),
        ("normalized", 0.5),
    ]
    built.clear()
    model.set_noise(sigma=0.75)  # the same kind: each stage's sigma changes, no diffusion is built
    assert built == [] and model.stage_sigmas == {"layer1": 0.75, "layer2": 0.75, "layer3": 0.75}
    with pytest.raises(ValueError, match="unknown diffusion 'nope'"):
        model.set_noise(diffusion="nope")
    assert built == [] and model.diffusion == "normalized"
