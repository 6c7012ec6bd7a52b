"""neuralsde.theory: operator norms, Theorem 1's bound against measurement, completeness."""

import pytest
import torch
from captum.attr import DeepLift, IntegratedGradients
from torch import nn

from neuralsde import ODEResNet, SDEResNet
from neuralsde.theory import amplification, completeness_residual, conv_bn_norm, stage_bound, stage_inputs


@pytest.mark.parametrize("stride, groups", [(1, 1), (2, 1), (1, 2)])
def test_conv_bn_norm_is_the_spectral_norm_of_the_dense_matrix(stride, groups):
    torch.manual_seed(stride + groups)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=1, groups=groups, bias=False)
    bn = nn.BatchNorm2d(6).eval()
    with torch.no_grad():
        bn.running_var.uniform_(0.3, 3.0)
        bn.weight.uniform_(-2, 2)
        bn.running_mean.uniform_(-1, 1)  # a shift: does not change the norm
    shape = (4, 5, 5)
    dense = torch.autograd.functional.jacobian(lambda z: bn(conv(z)).flatten(), torch.zeros(1, *shape))
    exact = torch.linalg.matrix_norm(dense.reshape(-1, 100).double(), ord=2).item()
    # Power iteration run to 1e-7 relative change; float32 weights in the dense matrix.
    assert conv_bn_norm(conv, bn, shape) == pytest.approx(exact, rel=1e-4)


def random_model(cls, seed, **kw):
    torch.manual_seed(seed)
    model = cls.small(in_channels=1, num_classes=5, widths=(4, 8), blocks=3, **kw)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.2, 2.0, generator=gen)
                m.weight.uniform_(0.5, 2.0, generator=gen)
    return model.eval()


@pytest.mark.parametrize(
    "seed, settings",
    [
        (0, dict(method="euler")),
        (1, dict(method="euler", steps_per_block=3, T=0.5)),
        (2, dict(method="rk4", steps_per_block=2)),
    ],
)
def test_the_bound_is_at_least_the_measured_amplification(seed, settings):
    model = random_model(ODEResNet, seed, **settings)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(seed))
    for stage, state in zip(model.stages, stage_inputs(model, x)):
        bound = stage_bound(stage, tuple(state.shape[1:]))
        amp = amplification(stage.flow, state, power_iters=15, pgd_steps=10)
        measured = amp["max"].max().item()
        assert measured >= 1e-3  # something was measured
        assert measured <= bound["bound_onesided"] <= bound["bound"] <= bound["bound_max_C"] * (1 + 1e-9)
        # The search cannot do worse than the worst direction it starts from.
        assert (amp["pgd"] >= amp["power"] - 1e-6).all()


def test_worst_direction_finds_the_jacobian_norm():
    torch.manual_seed(0)
    model = random_model(ODEResNet, 3)
    stage = model.layer2
    x = stage_inputs(model, torch.rand(1, 1, 8, 8))[1].double()
    stage.double()
    dense = torch.autograd.functional.jacobian(lambda z: stage.flow(z).flatten(), x).reshape(x.numel(), x.numel())
    exact = torch.linalg.matrix_norm(dense, ord=2).item()
    amp = amplification(stage.flow, x, power_iters=60, pgd_steps=0)
    # Power iteration converges to the largest singular value from below.
    assert amp["jacobian_norm"].item() == pytest.approx(exact, rel=1e-3)


def test_completeness_residual_of_deeplift_and_ig():
    model = random_model(SDEResNet, 4, method="euler")
    x = 3 * torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    x_hat = x + 0.5 * torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(2))

    def output(inp):
        return model(inp)[:, 1]

    dl = completeness_residual(lambda inp: DeepLift(model).attribute(inp, target=1), output, x, x_hat)
    # DeepLIFT is complete up to float32 round-off on logits of order 1 (measured ~1e-6).
    assert (dl["residual"] < 1e-4 * dl["output_change"].abs()).all()

    def ig(n):
        return completeness_residual(
            lambda inp: IntegratedGradients(model).attribute(inp, target=1, n_steps=n, method="riemann_trapezoid"),
            output,
            x,
            x_hat,
        )["residual"]

    # IG's residual is the error of its quadrature: it shrinks as the steps grow
    # (measured ~1/n: 0.17 -> 0.043 mean from 16 to 64 steps).
    assert (ig(64) < ig(16) / 2).all() and (ig(16) > 1e-3).all()
