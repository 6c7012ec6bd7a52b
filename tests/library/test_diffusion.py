"""neuralsde.diffusion: the formulas, the element-wise flags, the factory's errors."""

import math

import pytest
import torch

from neuralsde import (
    AdditiveDiffusion,
    LearnedDiffusion,
    MultiplicativeDiffusion,
    NormalizedDiffusion,
    integrate,
    make_diffusion,
)
from neuralsde.diffusion import DIFFUSIONS


def test_formulas():
    x = torch.tensor([[[1.0, -2.0], [0.0, 2.0]], [[3.0, 0.0], [0.0, 4.0]]])  # (2, 2, 2)
    t = torch.tensor(0.0)
    assert torch.equal(AdditiveDiffusion(0.3)(t, x), torch.full_like(x, 0.3))
    assert torch.equal(MultiplicativeDiffusion(0.5)(t, x), 0.5 * x)
    rms = torch.tensor([math.sqrt((1 + 4 + 0 + 4) / 4), math.sqrt((9 + 16) / 4)])
    expected = (0.25 * rms).view(2, 1, 1).expand_as(x)
    # eps = 1e-6 enters as eps^2 under the root: a relative change of ~1e-12.
    torch.testing.assert_close(NormalizedDiffusion(0.25)(t, x), expected, rtol=1e-6, atol=0)
    learned = LearnedDiffusion(channels=2, sigma=0.1)
    torch.testing.assert_close(learned(t, x), torch.full_like(x, 0.1))  # a = b = 0: sigma everywhere


def test_normalized_noise_has_the_stated_noise_to_signal_ratio():
    """One Euler–Maruyama step of unit length adds noise whose RMS is sigma * RMS(X)."""
    torch.manual_seed(0)
    x = 3.0 * torch.randn(4, 8, 16, 16)
    noise = integrate(lambda t, y: torch.zeros_like(y), x, [0.0, 1.0], diffusion=NormalizedDiffusion(0.5))[-1] - x
    ratio = noise.flatten(1).pow(2).mean(1).sqrt() / x.flatten(1).pow(2).mean(1).sqrt()
    # 2048 Gaussian draws per sample: the RMS has a relative std of ~1.6%; 5% is 3 of those.
    torch.testing.assert_close(ratio, torch.full((4,), 0.5), rtol=0.05, atol=0)


@pytest.mark.parametrize("kind", list(DIFFUSIONS))
def test_elementwise_flag_matches_the_jacobian(kind):
    """Element-wise means d sigma_i / d x_j = 0 for i != j."""
    torch.manual_seed(0)
    diffusion = make_diffusion(kind, 0.4, channels=3)
    if kind == "learned":
        with torch.no_grad():
            diffusion.slope.uniform_(-1, 1)
    x = torch.randn(1, 3, 2, 2, dtype=torch.float64)
    diffusion = diffusion.double()
    jac = torch.autograd.functional.jacobian(lambda y: diffusion(torch.tensor(0.0), y), x).reshape(12, 12)
    off_diagonal = jac - torch.diag(torch.diagonal(jac))
    mixes = off_diagonal.abs().max().item() > 1e-12
    assert diffusion.elementwise == (not mixes)


def test_factory_and_errors():
    assert isinstance(make_diffusion("normalized", 0.1), NormalizedDiffusion)
    with pytest.raises(ValueError, match="valid diffusions: additive, multiplicative, normalized, learned"):
        make_diffusion("gaussian", 0.1)
    with pytest.raises(ValueError, match="sigma must be a finite number >= 0"):
        make_diffusion("additive", -0.1)
    with pytest.raises(ValueError, match="sigma must be"):
        NormalizedDiffusion(float("nan"))
    with pytest.raises(ValueError, match="channels"):
        make_diffusion("learned", 0.1)
    d = MultiplicativeDiffusion(0.2)
    with pytest.raises(ValueError, match="sigma must be"):
        d.sigma = -1.0
    assert d.sigma == 0.2
    with pytest.raises(ValueError, match="3 channels"):
        LearnedDiffusion(3, 0.1)(torch.tensor(0.0), torch.zeros(1, 2, 4, 4))
