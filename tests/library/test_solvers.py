"""neuralsde.solvers (integrate) and neuralsde.brownian: accuracy, convergence orders, randomness, gradients, errors."""

import math

import numpy as np
import pytest
import torch
import torchsde
from torch import nn

from neuralsde import SolverError, SolverStats, integrate
from neuralsde.brownian import GridBrownian, brownian_interval
from neuralsde.solvers import ADAPTIVE_ODE_METHODS, FIXED_ODE_METHODS, SDE_METHODS, finite_flag, step_grid

# Orders of the fixed-step ODE methods (the Adams methods start with RK4 and run at
# order >= 4 once their history is long enough; the check below asks for >= 3.5).
ODE_ORDERS = {"euler": 1, "midpoint": 2, "heun2": 2, "heun3": 3, "rk4": 4, "explicit_adams": 4, "implicit_adams": 4}


def linear_drift(t, y):
    # dy/dt = -y + sin(t): y(t) = (y0 + 1/2) e^{-t} + (sin t - cos t)/2
    return -y + torch.sin(t).to(y.dtype)


def linear_exact(y0, t):
    return (y0 + 0.5) * math.exp(-t) + 0.5 * (math.sin(t) - math.cos(t))


def test_step_grid_contains_every_time_and_splits_evenly():
    grid = step_grid([0.0, 1.0, 1.5], 0.3)
    assert grid[0] == 0.0 and 1.0 in grid and grid[-1] == 1.5
    assert len(grid) == 1 + 4 + 2  # ceil(1/0.3) = 4 steps, ceil(0.5/0.3) = 2 steps
    assert step_grid([0.0, 1.0], None) == [0.0, 1.0]
    # A dt that divides the interval up to round-off must not add a sliver step.
    assert len(step_grid([0.0, 1.0], 0.1)) == 11


@pytest.mark.parametrize("method", FIXED_ODE_METHODS)
def test_fixed_step_ode_convergence_order(method):
    y0 = torch.full((2, 3), 0.7, dtype=torch.float64)
    errors = []
    dts = [0.2, 0.1, 0.05]
    for dt in dts:
        ys = integrate(linear_drift, y0, [0.0, 2.0], method=method, dt=dt)
        errors.append((ys[-1] - linear_exact(0.7, 2.0)).abs().max().item())
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    # The observed order approaches the method's order as dt -> 0; at these step sizes
    # it is within 0.5 of it (measured: euler 1.0, midpoint 2.0, rk4 4.0).
    assert slope > ODE_ORDERS[method] - 0.5, (method, slope, errors)


@pytest.mark.parametrize("method", ADAPTIVE_ODE_METHODS)
def test_adaptive_ode_error_follows_tolerance(method):
    y0 = torch.full((2, 3), 0.7, dtype=torch.float64)
    ts = [0.0, 0.5, 2.0]
    exact = torch.tensor([linear_exact(0.7, t) for t in ts], dtype=torch.float64)
    errors = []
    for tol in (1e-4, 1e-6):
        stats = SolverStats()
        ys = integrate(linear_drift, y0, ts, method=method, rtol=tol, atol=tol * 1e-2, stats=stats)
        errors.append((ys[:, 0, 0] - exact).abs().max().item())
        assert stats.steps > 0 and stats.nfe > stats.steps
    # Tolerances bound the local error; the global error is a modest multiple of them
    # (measured at rtol=1e-6: 7e-9 (dopri8) to 3e-5 (fehlberg2)), and a hundredfold
    # tighter tolerance must buy at least a tenfold smaller error.
    assert errors[1] < 1e-4 and errors[1] < errors[0] / 10, (method, errors)


def test_any_batch_first_shape_and_outputs_at_ts():
    y0 = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    ts = [0.0, 0.25, 1.0]
    ys = integrate(lambda t, y: -y, y0, ts, method="rk4", dt=0.05)
    assert ys.shape == (3, 2, 3, 4, 5)
    assert torch.equal(ys[0], y0)
    # rk4 at dt=0.05: error ~ 1e-7 relative; 1e-6 leaves room.
    for k, t in enumerate(ts):
        torch.testing.assert_close(ys[k], y0 * math.exp(-t), rtol=1e-6, atol=1e-9)


def test_stats_count_steps_and_evaluations():
    y0 = torch.zeros(1, 2)
    stats = SolverStats()
    integrate(lambda t, y: y + 1, y0, [0.0, 1.0], method="rk4", dt=0.25, stats=stats)
    assert (stats.steps, stats.nfe) == (4, 16)
    stats = SolverStats()
    integrate(lambda t, y: y, y0, [0.0, 1.0], diffusion=lambda t, y: y, method="euler", dt=0.25, stats=stats)
    assert (stats.steps, stats.nfe, stats.nfe_diffusion) == (4, 4, 4)
    stats = SolverStats()
    integrate(lambda t, y: y, y0, [0.0, 1.0], diffusion=lambda t, y: y, method="srk", dt=0.5, stats=stats)
    # torchsde's SRK step evaluates the drift at 4 stage values but asks for some of them
    # again; repeated evaluations at the same (t, y) are computed once.
    assert (stats.steps, stats.nfe) == (2, 8)


def _gbm_strong_errors(method, dts, paths=1000):
    mu, sigma = 1.0, 1.0
    y0 = torch.ones(paths, 1, dtype=torch.float64)
    torch.manual_seed(1)
    bm = brownian_interval(y0, 0.0, 1.0, levy_area="space-time")
    exact = y0 * torch.exp((mu - sigma**2 / 2) + sigma * bm(0.0, 1.0))
    errors = []
    for dt in dts:
        ys = integrate(
            lambda t, y: mu * y, y0, [0.0, 1.0], diffusion=lambda t, y: sigma * y, method=method, dt=dt, bm=bm
        )
        errors.append((ys[-1] - exact).abs().mean().item())
    return errors


@pytest.mark.parametrize("method, order", [("euler", 0.5), ("milstein", 1.0), ("srk", 1.5)])
def test_strong_order_on_geometric_brownian_motion(method, order):
    """dX = X dt + X dB against X_T = exp(T/2 + B_T), one torchsde path for every dt."""
    dts = [2.0**-k for k in range(3, 8)]
    errors = _gbm_strong_errors(method, dts)
    slope = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    # Theory: 0.5 (Euler–Maruyama), 1.0 (Milstein), 1.5 (SRK, commutative noise). With
    # 1000 paths the fitted slope scatters by a few hundredths (measured 0.48, 0.97, 1.46
    # with 4000 paths); 0.15 separates each order from its neighbours.
    assert abs(slope - order) < 0.15, (method, slope, errors)


def test_euler_steps_match_torchdiffeq_and_torchsde_on_the_same_path():
    """The library's own Euler and Euler–Maruyama steps against the two libraries' ones."""
    import torchdiffeq
    import torchsde

    y0 = torch.randn(3, 2, 4, dtype=torch.float64)
    ts = [0.0, 0.5, 1.0]
    ours = integrate(linear_drift, y0, ts, method="euler", dt=0.125)
    theirs = torchdiffeq.odeint(
        linear_drift, y0, torch.tensor(ts, dtype=torch.float64), method="euler", options={"step_size": 0.125}
    )
    # Same arithmetic up to association (y + dt f vs. y + (dt f)): a few ulps in float64.
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)

    class SDE(torch.nn.Module):
        noise_type, sde_type = "diagonal", "ito"

        def f(self, t, y):
            return torch.sin(y) - y

        def g(self, t, y):
            return 0.3 + 0.2 * torch.cos(y)

    sde = SDE()
    flat = y0.flatten(1)
    bm = brownian_interval(y0, 0.0, 1.0)
    theirs = torchsde.sdeint(sde, flat, torch.tensor(ts, dtype=torch.float64), method="euler", dt=0.125, bm=bm)
    ours = integrate(lambda t, y: sde.f(t, y), y0, ts, diffusion=lambda t, y: sde.g(t, y), dt=0.125, bm=bm)
    torch.testing.assert_close(ours.flatten(2), theirs, rtol=1e-12, atol=1e-12)


def test_drift_euler_step_replaces_the_generic_step():
    calls = []

    class Drift:
        def __call__(self, t, y):
            return -y

        def euler_step(self, t, y, dt):
            calls.append(dt)
            return y * (1.0 - dt)

    y0 = torch.ones(2, 3)
    ys = integrate(Drift(), y0, [0.0, 1.0], method="euler", dt=0.25)
    assert calls == [0.25] * 4
    torch.testing.assert_close(ys[-1], y0 * 0.75**4)
    torch.manual_seed(0)
    integrate(Drift(), y0, [0.0, 1.0], diffusion=lambda t, y: 0.1 * y, method="euler", dt=0.5)
    assert calls[4:] == [0.5] * 2

    class Wrong(Drift):
        def euler_step(self, t, y, dt):
            return y[:1]

    with pytest.raises(ValueError, match=r"euler_step\(t, y, dt\) must return a tensor of y's shape"):
        integrate(Wrong(), y0, [0.0, 1.0], method="euler")
    with pytest.raises(ValueError, match=r"diffusion\(t, y\) must return a tensor of y's shape"):
        integrate(Drift(), y0, [0.0, 1.0], diffusion=lambda t, y: y[:, :2], method="euler")


def test_sde_reproducible_under_manual_seed_and_different_across_seeds():
    y0 = torch.ones(4, 2, 3)

    def run(seed):
        torch.manual_seed(seed)
        return integrate(lambda t, y: -y, y0, [0.0, 1.0], diffusion=lambda t, y: 0.5 * y, dt=0.1)

    assert torch.equal(run(0), run(0))
    assert not torch.allclose(run(0), run(1))


def test_brownian_interval_reproducible_under_manual_seed():
    y0 = torch.ones(3, 2)
    torch.manual_seed(5)
    a = brownian_interval(y0, 0.0, 1.0)(0.0, 0.7)
    torch.manual_seed(5)
    b = brownian_interval(y0, 0.0, 1.0)(0.0, 0.7)
    torch.manual_seed(6)
    c = brownian_interval(y0, 0.0, 1.0)(0.0, 0.7)
    assert a.shape == (3, 2) and torch.equal(a, b) and not torch.equal(a, c)


def test_grid_brownian_increments_are_brownian():
    torch.manual_seed(0)
    grid = [0.0, 0.1, 0.5, 1.0]
    bm = GridBrownian(grid, (20000, 1), dtype=torch.float64)
    for a, b in zip(grid[:-1], grid[1:]):
        w = bm(a, b)
        # Sample variance of 20000 N(0, h) draws has relative std sqrt(2/20000) = 1%;
        # 5% is five of those.
        assert abs(w.var().item() / (b - a) - 1) < 0.05
        assert abs(w.mean().item()) < 5 * math.sqrt((b - a) / 20000)
    # Consistency: the increment over a span is the sum over its intervals.
    torch.testing.assert_close(bm(0.0, 1.0), bm(0.0, 0.1) + bm(0.1, 0.5) + bm(0.5, 1.0))
    assert torch.equal(bm(0.1, 0.5), bm(0.1, 0.5))
    with pytest.raises(ValueError, match="grid points"):
        bm(0.0, 0.3)


def test_grid_brownian_without_keep_refuses_released_intervals():
    bm = GridBrownian([0.0, 1.0, 2.0], (2, 2), keep=False)
    bm(0.0, 1.0)
    bm(1.0, 2.0)
    with pytest.raises(ValueError, match="released"):
        bm(0.0, 1.0)


class TinyDrift(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 3).double()

    def forward(self, t, y):
        return torch.tanh(self.lin(y))


ALL_SOLVES = (
    [("ode", m, False) for m in FIXED_ODE_METHODS]
    + [("ode", m, False) for m in ("dopri5", "bosh3")]
    + [("ode", m, True) for m in ("rk4", "dopri5")]
    + [("sde", m, False) for m in SDE_METHODS]
)


@pytest.mark.parametrize("kind, method, adjoint", ALL_SOLVES)
def test_gradcheck_through_every_solver(kind, method, adjoint):
    torch.manual_seed(0)
    y0 = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    # One fixed Brownian path (keep=True) so that every evaluation sees the same noise.
    bm = GridBrownian(step_grid([0.0, 0.5], 0.125), (2, 3), dtype=torch.float64, levy_area="space-time")
    dt = None if method in ADAPTIVE_ODE_METHODS else 0.125
    if adjoint and method == "rk4":
        dt = 1 / 32  # the adjoint solves its own ODE backwards: O(dt^4) from exact

    def f(y, w):
        tol = 1e-7 if method in ADAPTIVE_ODE_METHODS else 1e-6
        kwargs = dict(method=method, dt=dt, rtol=tol, atol=tol)
        if adjoint:
            kwargs.update(adjoint=True, adjoint_params=(w,))
        if kind == "sde":
            kwargs.update(diffusion=lambda t, x: 0.3 * torch.sin(x), bm=bm)
        return integrate(lambda t, x: torch.tanh(x @ w.T), y, [0.0, 0.5], **kwargs)[-1]

    # gradcheck: float64 central differences against autograd, with its own tolerances.
    # (Euler's adjoint is O(dt) from the gradient of the discrete forward pass; it is
    # compared with direct back-propagation in the next test.)
    assert torch.autograd.gradcheck(f, (y0, weight))


def _adjoint_gap(method, dt):
    torch.manual_seed(0)
    drift = TinyDrift()
    y0 = torch.randn(2, 3, dtype=torch.float64)
    grads = []
    for adjoint in (True, False):
        out = integrate(drift, y0, [0.0, 0.5], method=method, dt=dt, adjoint=adjoint, rtol=1e-10, atol=1e-10)
        grads.append(torch.autograd.grad(out[-1].sum(), drift.lin.weight)[0])
    assert grads[0].abs().sum() > 0  # the adjoint found the module's parameters
    return (grads[0] - grads[1]).abs().max().item()


@pytest.mark.parametrize("method, dt", [("rk4", 1 / 32), ("dopri5", None)])
def test_adjoint_finds_module_parameters(method, dt):
    # The adjoint solves its own ODE backwards; with a fourth/fifth-order method it
    # matches direct back-propagation to ~1e-9 here.
    assert _adjoint_gap(method, dt) < 1e-6


def test_euler_adjoint_converges_to_backpropagation_at_first_order():
    # Euler's adjoint differs from the gradient of the discrete forward pass by O(dt).
    coarse, fine = _adjoint_gap("euler", 1 / 16), _adjoint_gap("euler", 1 / 64)
    assert fine < coarse / 3, (coarse, fine)


def test_unknown_methods_are_refused_with_the_valid_names():
    y0 = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="valid ODE methods: euler"):
        integrate(lambda t, y: y, y0, [0.0, 1.0], method="magic")
    with pytest.raises(ValueError, match="valid SDE methods: euler, milstein, srk"):
        integrate(lambda t, y: y, y0, [0.0, 1.0], diffusion=lambda t, y: y, method="rk4")


def test_bad_arguments_are_refused():
    y0 = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="strictly increasing"):
        integrate(lambda t, y: y, y0, [0.0, 0.0])
    with pytest.raises(ValueError, match="dt must be a finite number > 0"):
        integrate(lambda t, y: y, y0, [0.0, 1.0], dt=0.0)
    with pytest.raises(ValueError, match="shape"):
        integrate(lambda t, y: y.sum(1), y0, [0.0, 1.0])
    with pytest.raises(ValueError, match="adjoint"):
        integrate(lambda t, y: y, y0, [0.0, 1.0], diffusion=lambda t, y: y, adjoint=True)
    with pytest.raises(ValueError, match="bm must have shape"):
        integrate(lambda t, y: y, y0, [0.0, 1.0], diffusion=lambda t, y: y, bm=GridBrownian([0.0, 1.0], (1, 3)))


def test_milstein_and_srk_refuse_a_diffusion_that_is_not_elementwise():
    class Mixing(nn.Module):
        elementwise = False

        def forward(self, t, y):
            return y.mean(dim=1, keepdim=True).expand_as(y)

    y0 = torch.ones(2, 3)
    for method in ("milstein", "srk"):
        with pytest.raises(ValueError, match="element-wise"):
            integrate(lambda t, y: y, y0, [0.0, 1.0], diffusion=Mixing(), method=method)
    # Euler–Maruyama is right for any diffusion.
    assert integrate(lambda t, y: y, y0, [0.0, 1.0], diffusion=Mixing(), method="euler").shape == (2, 2, 3)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_blow_up_raises_solver_error_with_time_and_method(method):
    # dy/dt = y^2, y(0) = 1 explodes at t = 1.
    y0 = torch.ones(1, 1)
    with pytest.raises(SolverError) as info:
        integrate(lambda t, y: y * y, y0, [0.0, 0.5, 1.0, 3.0], method=method, dt=0.01)
    err = info.value
    # The error names the first output time at which the state is not finite and the
    # last at which it was: the explosion happens between them.
    assert err.method == method and err.time == 3.0 and "finite at t=1" in str(err)
    assert isinstance(err, RuntimeError)


def test_adaptive_blow_up_raises_solver_error():
    y0 = torch.ones(1, 1, dtype=torch.float64)
    with pytest.raises(SolverError, match="dopri5"):
        integrate(lambda t, y: y * y, y0, [0.0, 3.0], method="dopri5")


def test_non_positive_tolerances_are_refused():
    # With rtol = atol = -1 every step passed the error test: y' = -30 y gave 6.3e5.
    y0 = torch.ones(1, 1)
    for rtol, atol in ((-1.0, -1.0), (1e-5, 0.0), (0.0, 1e-6), (float("nan"), 1e-6)):
        with pytest.raises(ValueError, match="must be a finite number > 0"):
            integrate(lambda t, y: -30 * y, y0, [0.0, 1.0], method="dopri5", rtol=rtol, atol=atol)


def test_adjoint_of_a_plain_function_needs_its_parameters():
    w = torch.tensor(0.5, requires_grad=True)
    y0 = torch.ones(1, 1)
    with pytest.raises(ValueError, match="adjoint_params"):
        integrate(lambda t, y: -w * y, y0, [0.0, 1.0], method="rk4", dt=0.1, adjoint=True)
    out = integrate(lambda t, y: -w * y, y0, [0.0, 1.0], method="rk4", dt=0.1, adjoint=True, adjoint_params=(w,))
    (grad,) = torch.autograd.grad(out[-1].sum(), w)
    # y(1) = exp(-w): dy/dw = -exp(-w); rk4 at dt=0.1 and its adjoint are ~1e-6 from it.
    assert abs(grad.item() + math.exp(-0.5)) < 1e-5
    # A function using no parameters says so with adjoint_params=().
    integrate(lambda t, y: -y, y0, [0.0, 1.0], method="rk4", dt=0.1, adjoint=True, adjoint_params=())


def test_a_brownian_path_must_cover_the_solve():
    y0 = torch.ones(4, 3)
    short = brownian_interval(y0, 0.0, 0.5)
    with pytest.raises(ValueError, match=r"cover the integration interval \[0, 1\], got a path over \[0, 0.5\]"):
        integrate(lambda t, y: 0 * y, y0, [0.0, 1.0], diffusion=lambda t, y: torch.ones_like(y), bm=short, dt=0.1)
    tree = torchsde.BrownianTree(t0=0.2, w0=torch.zeros(4, 3), t1=1.0)
    with pytest.raises(ValueError, match=r"over \[0.2, 1\]"):
        integrate(lambda t, y: 0 * y, y0, [0.0, 1.0], diffusion=lambda t, y: torch.ones_like(y), bm=tree, dt=0.1)
    grid = GridBrownian([0.0, 0.5], (4, 3))
    with pytest.raises(ValueError, match="cover"):
        integrate(lambda t, y: 0 * y, y0, [0.0, 1.0], diffusion=lambda t, y: torch.ones_like(y), bm=grid)
    # A path over a longer interval is fine.
    long = brownian_interval(y0, 0.0, 2.0)
    out = integrate(lambda t, y: 0 * y, y0, [0.0, 1.0], diffusion=lambda t, y: torch.ones_like(y), bm=long, dt=0.1)
    torch.testing.assert_close(out[-1] - y0, long(0.0, 1.0))  # zero drift: y(1) - y(0) = W(1) - W(0)


def test_finiteness_check_of_a_half_precision_state_does_not_overflow():
    # 8 x 3 x 64 x 64 elements of 1000: every one finite, their sum (9.8e7) past fp16's 65504.
    for dtype in (torch.float16, torch.bfloat16):
        y0 = torch.full((8, 3, 64, 64), 1000.0, dtype=dtype)
        out = integrate(lambda t, y: torch.zeros_like(y), y0, [0.0, 1.0], dt=0.5)
        assert torch.equal(out[-1], y0)
        bad = y0.clone()
        bad[3, 1, 2, 3] = float("-inf")
        with pytest.raises(SolverError):
            integrate(lambda t, y: torch.zeros_like(y), bad, [0.0, 1.0])
        assert finite_flag(y0) and not finite_flag(bad) and finite_flag(y0[:0])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("method", SDE_METHODS)
def test_sde_solves_in_half_precision_on_grids_that_half_precision_cannot_hold(dtype, method):
    # Steps of 0.1 over [0, 0.3]: 0.1, 0.2 and 0.3 are not fp16/bf16 numbers, and
    # rounded to bf16 two of them would merge.
    y0 = torch.ones(64, 5, dtype=dtype)
    torch.manual_seed(0)
    out = integrate(
        lambda t, y: 0 * y, y0, [0.0, 0.3], diffusion=lambda t, y: torch.ones_like(y), method=method, dt=0.1
    )
    increments = (out[-1] - y0).float()
    assert torch.isfinite(increments).all()
    # W(0.3) ~ N(0, 0.3): 320 draws, sample variance within 30% (4 standard errors).
    assert abs(increments.var().item() / 0.3 - 1) < 0.3


def test_grid_brownian_matches_grid_times_rounded_to_float32():
    grid = step_grid([0.0, 0.3], 0.1)
    bm = GridBrownian(grid, (2, 3), dtype=torch.bfloat16, generator=torch.Generator().manual_seed(0))
    assert (bm.t0, bm.t1) == (0.0, 0.3) and bm.dtype == torch.bfloat16
    as_float32 = torch.tensor(grid, dtype=torch.float32)
    assert torch.equal(bm(as_float32[1], as_float32[2]), bm(grid[1], grid[2]))
    with pytest.raises(ValueError, match="grid points"):
        bm(0.15, 0.2)


def test_an_empty_batch_is_integrated_to_an_empty_batch():
    y0 = torch.zeros(0, 3, 4)
    for diffusion in (None, lambda t, y: torch.ones_like(y)):
        for method in ("euler", "rk4") if diffusion is None else SDE_METHODS:
            out = integrate(lambda t, y: -y, y0, [0.0, 1.0], diffusion=diffusion, method=method, dt=0.5)
            assert out.shape == (2, 0, 3, 4)
