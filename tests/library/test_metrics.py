"""neuralsde.metrics against hand-computed cases and scipy."""

import pytest
import torch
from scipy import stats

from neuralsde import ODEResNet
from neuralsde.metrics import (
    importance,
    kendall_tau,
    localisation,
    sensitivity,
    topk_attack,
    topk_intersection,
)


def maps(*rows):
    """Attributions (B, 1, 2, 2) from per-pixel rows."""
    return torch.tensor(rows, dtype=torch.float64).view(len(rows), 1, 2, 2)


def test_importance_sums_absolute_values_over_channels():
    a = torch.tensor([[[[1.0, -2.0]], [[-3.0, 0.5]]]])  # (1, 2, 1, 2)
    assert torch.equal(importance(a), torch.tensor([[4.0, 2.5]]))


def test_kendall_tau_matches_scipy_and_hand_cases():
    a = maps([1, 2, 3, 4], [4, 1, 3, 2])
    b = maps([1, 2, 3, 4], [1, 2, 3, 4])
    tau = kendall_tau(a, b)
    assert tau[0] == 1.0
    # Hand count for (4,1,3,2) vs (1,2,3,4): pairs concordant 2, discordant 4 -> -1/3.
    assert tau[1].item() == pytest.approx(-1 / 3)
    assert tau[1].item() == pytest.approx(stats.kendalltau([4, 1, 3, 2], [1, 2, 3, 4]).statistic)
    assert kendall_tau(maps([1, 2, 3, 4]), maps([4, 3, 2, 1]))[0] == -1.0
    # Importance uses magnitudes: a sign flip changes nothing.
    assert kendall_tau(maps([1, -2, 3, -4]), maps([1, 2, 3, 4]))[0] == 1.0


def test_topk_intersection_and_localisation_by_hand():
    a = maps([4, 3, 2, 1])
    b = maps([1, 3, 4, 2])
    assert topk_intersection(a, b, 1)[0] == 0.0  # {0} vs {2}
    assert topk_intersection(a, b, 2)[0] == 0.5  # {0,1} vs {2,1}
    assert topk_intersection(a, b, 4)[0] == 1.0
    with pytest.raises(ValueError, match="k must be"):
        topk_intersection(a, b, 5)
    mask = torch.tensor([[True, False], [False, True]]).view(1, 1, 2, 2)
    assert localisation(a, mask)[0].item() == pytest.approx((4 + 1) / 10)


def test_sensitivity_of_simple_explanations():
    x = torch.ones(3, 1, 4, 4)
    torch.manual_seed(0)
    # A(x) = x: sensitivity = max ||d|| / ||x|| <= radius * sqrt(16) / 4 = radius.
    s = sensitivity(lambda inp, target: inp, x, radius=0.1, n_perturb=20)
    assert s.shape == (3,) and (s > 0.05).all() and (s <= 0.1 + 1e-6).all()
    # A constant explanation does not move at all.
    assert torch.equal(sensitivity(lambda inp, target: torch.ones_like(inp), x, radius=0.1), torch.zeros(3))
    # The target is expanded with the perturbed copies.
    seen = []
    sensitivity(lambda inp, target: seen.append(target) or inp, x, target=torch.tensor([0, 1, 2]), n_perturb=2)
    assert torch.equal(seen[-1], torch.tensor([0, 0, 1, 1, 2, 2]))


def test_topk_attack_moves_attribution_mass_and_keeps_labels():
    torch.manual_seed(0)
    model = ODEResNet.small(in_channels=1, num_classes=4, widths=(4, 8)).eval()
    x = torch.rand(4, 1, 8, 8)
    label = model(x).argmax(1)

    def saliency(inputs, differentiable):
        inputs = inputs if inputs.requires_grad else inputs.clone().requires_grad_(True)
        out = model(inputs).gather(1, label[:, None]).sum()
        (g,) = torch.autograd.grad(out, inputs, create_graph=differentiable)
        return g

    k, eps = 8, 0.05
    x_adv = topk_attack(model, saliency, x, k=k, epsilon=eps, steps=8)
    assert (x_adv - x).abs().max() <= eps + 1e-6
    assert torch.equal(model(x_adv).argmax(1), label)
    top = importance(saliency(x, False)).topk(k, dim=1).indices

    def mass(inp):
        imp = importance(saliency(inp, False))
        return imp.gather(1, top).sum(1) / imp.sum(1)

    random = (x + eps * (2 * torch.rand_like(x) - 1)).clamp(x - eps, x + eps)
    # The attack removes more of the original top-k mass than a random perturbation.
    assert mass(x_adv).mean() < mass(random).mean() < mass(x).mean() + 0.05
