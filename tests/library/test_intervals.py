"""neuralsde.intervals: a block's interval solved through its module call, and its evaluation count."""

import pytest
import torch
import torchvision

from neuralsde import integrate
from neuralsde.blocks import ResBlock
from neuralsde.diffusion import MultiplicativeDiffusion
from neuralsde.intervals import BlockInterval
from neuralsde.solvers import FIXED_ODE_METHODS, SolverStats


def block(randomize_bn):
    torch.manual_seed(0)
    layer = randomize_bn(torchvision.models.resnet18()).eval().layer1
    return ResBlock.from_torchvision(layer[1]).eval()


@pytest.mark.parametrize("method, dt", [("euler", None), ("euler", 0.25), ("rk4", 0.5), ("heun3", 1 / 3)])
def test_a_block_called_with_its_interval_solves_its_drift_over_it(randomize_bn, method, dt):
    b = block(randomize_bn)
    x = torch.randn(2, 64, 6, 6)
    interval = BlockInterval(ts=(2.0, 4.0), h=2.0, method=method, dt=None if dt is None else 2.0 * dt)
    with torch.no_grad():
        out = b(x, interval=interval)
        ref = integrate(lambda t, y: b.velocity(y, 2.0), x, [2.0, 4.0], method=method, dt=interval.dt)[-1]
    # The Euler step is the block's own (x + fraction * (block(x) - x) as one lerp):
    # float32 rounding differs from x + dt * velocity by an ulp of |x| per step.
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    if method == "euler" and dt is None:
        torch.testing.assert_close(out, b(x), rtol=0, atol=0)  # one whole step is the block itself


def test_an_interval_adds_its_counts_to_the_stage_record(randomize_bn):
    b = block(randomize_bn)
    stats = SolverStats()
    b(torch.randn(1, 64, 4, 4), interval=BlockInterval(ts=(0.0, 1.0), h=1.0, method="rk4", dt=0.25, stats=stats))
    assert (stats.steps, stats.nfe) == (4, 16)


@pytest.mark.parametrize("method", [m for m in FIXED_ODE_METHODS if m != "implicit_adams"])
@pytest.mark.parametrize("steps", [1, 4, 9, 10, 37])
def test_the_evaluation_count_equals_a_full_dry_run(method, steps):
    interval = BlockInterval(ts=(0.0, 1.0), h=1.0, method=method, dt=1.0 / steps)
    # A full dry run through the same solver code, step by step.
    assert interval.evaluations() == interval._dry_run(steps)


@pytest.mark.parametrize("method, per_step", [("euler", 1), ("milstein", 1), ("srk", 4)])
def test_sde_evaluation_counts(method, per_step):
    interval = BlockInterval(ts=(0.0, 1.0), h=1.0, method=method, dt=0.01, diffusion=MultiplicativeDiffusion(0.1))
    assert interval.evaluations() == 100 * per_step == interval._dry_run(100)


def test_input_dependent_counts_are_unknown():
    assert BlockInterval(ts=(0.0, 1.0), h=1.0, method="dopri5").evaluations() is None
    assert BlockInterval(ts=(0.0, 1.0), h=1.0, method="implicit_adams", dt=0.1).evaluations() is None
    # A frozen grid replayed with the tableau: dopri5 evaluates 7 times per step here.
    frozen = BlockInterval(ts=(0.0, 0.3, 1.0), h=1.0, method="dopri5", adaptive=False)
    assert frozen.evaluations() == 14
