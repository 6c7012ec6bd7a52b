"""The mechanism measures and the local-bound summaries of the main job."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from benchmarks.cells import activation_stats
from benchmarks.report.stats import correlation, pearson
from neuralsde.metrics import sensitivity


class _Tiny(nn.Module):
    """A stem ReLU and one 'layer1' ReLU, both in place, on a fixed linear map."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.lin.weight.copy_(torch.eye(2))
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(nn.Linear(2, 2, bias=False), nn.ReLU(inplace=True))
        with torch.no_grad():
            self.layer1[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))

    def forward(self, x):
        return self.layer1(self.relu(self.lin(x)))


def test_activation_stats_count_flips_and_margins_before_the_inplace_relu():
    model = _Tiny().eval()
    x = torch.tensor([[1.0, -2.0]])
    # stem pre-activations z = x = (1, -2); a perturbation to (-1, -2) flips unit 0 of 2.
    perturbed = torch.tensor([[[-1.0, -2.0]], [[1.0, -2.0]]])  # 2 perturbations, 1 image
    stats = activation_stats(model, x, perturbed)
    stem = stats["stem"]
    # The exact fractions: 1 of 2 units flips under the first draw, none under the second.
    assert stem["flip"] == [0.25] and stem["flip_any"] == [0.5]
    # Margins come from the ReLU's input (1 and 2), not its in-place output (1 and 0).
    assert stem["margin"] == [1.0]  # torch's median of (1, 2) is the lower middle value
    assert stem["margin_q10"] == [pytest.approx(1.1)]  # linear interpolation: 1 + 0.1 * (2 - 1)
    # RMS change of z: sqrt((2^2 + 0) / 2) for the first draw, 0 for the second; mean over draws.
    assert stem["change"] == [pytest.approx(math.sqrt(2) / 2)]
    # layer1 sees relu(z) = (1, 0) -> (1, -0) and (0, 0) -> (0, -0): unit 0 turns off under the first draw.
    assert stats["layer1"]["flip"] == [0.25]
    # No perturbation, no flip.
    same = activation_stats(model, x, x.unsqueeze(0))
    assert same["stem"]["flip"] == [0.0] and same["stem"]["change"] == [0.0]


def test_sensitivity_parts_of_a_two_pixel_linear_model_in_closed_form():
    """F(x) = w · x on two pixels, explained by gradient × input: A(x) = w ⊙ x, so A(x + δ) − A(x) = w ⊙ δ.

    The denominator is ‖w ⊙ x‖ by hand, and the numerator max over the draws of ‖w ⊙ δ‖,
    with the draws read back from the inputs the explanation was called with. Float64
    throughout: agreement to 1e-12 relative is round-off.
    """
    w = torch.tensor([3.0, -4.0], dtype=torch.float64).view(1, 1, 1, 2)
    x = torch.tensor([[1.0, 2.0], [-0.5, 0.25]], dtype=torch.float64).view(2, 1, 1, 2)
    calls = []

    def grad_times_input(inputs, target):
        calls.append(inputs.detach().clone())
        return inputs * w

    torch.manual_seed(0)
    parts = sensitivity(grad_times_input, x, radius=0.1, n_perturb=6, parts=True)
    assert parts["norm"].tolist() == pytest.approx([math.sqrt(9 + 64), math.sqrt(2.25 + 1)], rel=1e-12)
    # Each perturbed input belongs to the example within the radius (the examples are far apart).
    rows = torch.cat(calls).flatten(1)
    owner = (rows[:, None, :] - x.flatten(1)[None]).abs().amax(-1).argmin(1)
    delta = rows - x.flatten(1)[owner]
    perturbed = delta.abs().amax(1) > 0  # the unperturbed call explains x itself
    assert delta.abs().max() <= 0.1 and perturbed.sum() == 2 * 6
    change = (delta * w.flatten()).norm(dim=1)
    expected = [change[perturbed & (owner == b)].max().item() for b in range(2)]
    assert parts["change"].tolist() == pytest.approx(expected, rel=1e-12)
    # Never more than the radius allows: ‖w ⊙ δ‖ <= r ‖w‖ = 0.5.
    assert (parts["change"] <= 0.1 * 5.0 + 1e-12).all()


def test_sensitivity_parts_are_its_numerator_and_denominator():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x = torch.randn(5, 1, 4, 4)

    def saliency(inputs, target):
        with torch.enable_grad():  # Captum explains under no_grad
            inputs = inputs.detach().requires_grad_(True)
            out = model(inputs).gather(1, target[:, None]).sum()
            return torch.autograd.grad(out, inputs)[0].abs()

    target = torch.tensor([0, 1, 2, 0, 1])
    torch.manual_seed(1)
    plain = sensitivity(saliency, x, target=target, radius=0.1, n_perturb=4)
    torch.manual_seed(1)
    parts = sensitivity(saliency, x, target=target, radius=0.1, n_perturb=4, parts=True)
    # Same draws, same values: recording the parts changes nothing.
    assert torch.equal(parts["sensitivity"], plain)
    # Every draw of radius 0.1 changes these saliency maps: each numerator is positive.
    assert (parts["change"] > 0).all()


def test_correlation_and_its_seed_bootstrap():
    line = [(s, float(i), 2.0 * i + 1.0) for s in range(4) for i in range(3 * s, 3 * s + 3)]
    c = correlation(line, seed=0)
    # A perfect line has r = 1 in every resample (rounding aside).
    assert c["r"] == pytest.approx(1.0, abs=1e-12)
    assert c["low"] == pytest.approx(1.0, abs=1e-12) and c["high"] == pytest.approx(1.0, abs=1e-12)
    anti = [(s, x, -y) for s, x, y in line]
    assert correlation(anti, seed=0)["r"] == pytest.approx(-1.0, abs=1e-12)
    # Reproducible from its seed; undefined below three points or without spread.
    noisy = [(s, x, y + (-1) ** int(x) * 5.0) for s, x, y in line]
    assert correlation(noisy, seed=3) == correlation(noisy, seed=3)
    assert math.isnan(pearson([1.0, 2.0], [1.0, 2.0])) and math.isnan(pearson([1.0] * 4, [1.0, 2.0, 3.0, 4.0]))


def test_main_job_measures_local_bounds_and_mechanisms(quick_run):
    out, results = quick_run
    lb = results["local_bound"]
    # Every statement of the bound is at or above its measured value, for every image.
    assert all(n == 0 for n in lb["below"].values()), lb["below"]
    assert {"network", "flow_log_norm", "flow_blocks", "pathwise"} <= set(next(iter(lb["stages"].values())))
    cell = json.loads((out / "cells" / "theorem1" / "s0" / "sde-0.5.json").read_text())["result"]
    for st in cell["stages"]:
        n = len(cell["images"])
        assert len(st["local"]["bound"]) == n and len(st["pathwise"]["measured"]) == n
    # The local Jacobian norm and the finite-perturbation amplification it linearises agree
    # (rel_eps = 1e-3 perturbations): within 10% for every image.
    for rows in lb["stages"].values():
        q = rows["jacobian_over_amplification"]
        assert 0.9 < q["q0"] and q["q100"] < 1.1
    mech = results["mechanism"]
    for method, rows in mech["decomposition"].items():
        for parts in rows.values():
            # log sensitivity = log numerator - log denominator, seed by seed. The cells store
            # float32 values (relative rounding 6e-8 each), so the identity holds to ~1e-7 in logs.
            for seed, value in parts["sens"]["per_seed"].items():
                expected = parts["change"]["per_seed"][seed] - parts["norm"]["per_seed"][seed]
                assert value == pytest.approx(expected, abs=1e-6), method
    assert set(mech["stages"]) == {"stem", "layer1", "layer2"}
    for name in ("ode", "sde-0.5"):
        flips = mech["levels"]["flip"][name]["mean"]
        assert 0.0 <= flips < 0.5  # a perturbation of radius 0.02 flips a small fraction of units
    text = (out / "tables.md").read_text()
    assert text.index("## Theorem 1") < text.index("## What explains it") < text.index("## Completeness residual")
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert {"local_bound.png", "mechanism.png"} <= figures
