"""neuralsde.spectral and neuralsde.theory.local_bound: Lanczos norms, closed forms, never below."""

import math

import pytest
import torch
from helpers import tiny_model
from torch import nn

from neuralsde import ContinuousStage, ODEResNet, SDEResNet
from neuralsde.blocks import ActivationPool, ResBlock
from neuralsde.spectral import jacobian_norm, lanczos_top, log_norm
from neuralsde.theory import local_bound, stage_inputs

F64 = torch.float64
FLOW_KEYS = ("flow_bound", "flow_block_bound", "flow_measured")
PER_IMAGE = ("bound", "measured", *FLOW_KEYS)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Run this module single-threaded (restored afterwards).

    Every operation here is on tensors of a few hundred elements, where intra-op threads
    only add synchronisation; on the 2-core test machine, with another process busy,
    two threads made the model tests ~10x slower. Only the run time depends on this.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed):
    return torch.Generator().manual_seed(seed)


def dense_jacobians(f, x):
    """Per example, the dense Jacobian of ``f`` at ``x[b]``, ``(B, out, in)`` (the diagonal blocks)."""
    batch = x.shape[0]
    full = torch.autograd.functional.jacobian(f, x).reshape(batch, -1, batch, x[0].numel())
    return torch.stack([full[b, :, b] for b in range(batch)])


# -- neuralsde.spectral against dense references ------------------------------------------


def test_lanczos_top_is_the_largest_eigenvalue_per_example():
    g = gen(0)
    n = 7
    sym = torch.randn(4, n, n, generator=g, dtype=F64)
    sym = (sym + sym.transpose(1, 2)) / 2
    sym[1] = sym[1] - 10 * torch.eye(n, dtype=F64)  # negative definite: the largest is negative
    sym[2] = 3 * sym[2]
    sym[3] = 2 * torch.eye(n, dtype=F64)  # an invariant subspace at once (beta = 0 after one step)
    exact = torch.linalg.eigvalsh(sym)[:, -1]
    assert exact[1] < 0 and len({round(v, 6) for v in exact.tolist()}) == 4  # different answers

    def op(v):
        return torch.einsum("bij,bj->bi", sym, v)

    value, residual = lanczos_top(op, torch.randn(4, n, generator=g, dtype=F64), tol=1e-12)
    assert value.shape == residual.shape == (4,) and value.dtype == F64
    # With tol=1e-12 Lanczos runs until each example's Krylov space (dimension <= 7 < 40
    # iterations, full reorthogonalisation) is exhausted: exact up to float64 round-off
    # on entries of order 10.
    torch.testing.assert_close(value, exact, rtol=1e-10, atol=1e-10)
    assert (residual <= 1e-10 * value.abs().clamp_min(1)).all()
    # Example 3 (2 I) stopped at once; the others went on from fresh directions for it.
    assert value[3].item() == pytest.approx(2.0, rel=1e-14)


def test_lanczos_top_at_its_default_tolerance_stays_within_its_residual():
    g = gen(1)
    n = 60  # more than the 40 iterations: the Krylov space is not exhausted
    q, _ = torch.linalg.qr(torch.randn(2, n, n, generator=g, dtype=F64))
    spectrum = torch.stack([torch.linspace(-1, 1, n, dtype=F64), torch.linspace(-3, -2, n, dtype=F64)])
    sym = q @ torch.diag_embed(spectrum) @ q.transpose(1, 2)
    start = torch.randn(2, n, generator=g, dtype=F64)
    value, residual = lanczos_top(lambda v: torch.einsum("bij,bj->bi", sym, v), start)
    exact = spectrum[:, -1]
    # Lanczos approaches the largest eigenvalue from below (round-off 1e-13 allowed), and
    # an eigenvalue lies within the residual of the value: with the top one the nearest
    # (the residual is far below the spectral gap 2/59), the error is at most the residual.
    assert (value <= exact + 1e-13).all()
    assert (exact - value <= residual + 1e-13).all()
    assert (residual > 0).all()


def test_jacobian_norm_of_a_batch_of_linear_maps():
    g = gen(2)
    mats = torch.randn(3, 5, 7, generator=g, dtype=F64) * torch.tensor([0.1, 1.0, 4.0], dtype=F64)[:, None, None]

    def f(x):
        return torch.einsum("bij,bj->bi", mats, x)

    x = torch.randn(3, 7, generator=g, dtype=F64)
    exact = torch.linalg.matrix_norm(dense_jacobians(f, x), 2)
    got = jacobian_norm(f, x)
    assert got.shape == (3,) and got.dtype == F64
    # J^T J is 7x7: Lanczos exhausts its Krylov space within the 40 iterations, or stops
    # earlier with a residual <= 1e-7 of the top Ritz value, whose error is then of the
    # order of residual^2 / gap; round-off of float64 on entries of order 10.
    torch.testing.assert_close(got, exact, rtol=1e-9, atol=0)
    assert exact.max() / exact.min() > 10  # the examples' answers differ


def test_jacobian_norm_of_a_nonlinear_map_per_example():
    g = gen(3)
    w1 = torch.randn(6, 6, generator=g, dtype=F64)
    w2 = torch.randn(4, 6, generator=g, dtype=F64)

    def f(x):  # (B, 2, 3) -> (B, 4), each example on its own
        return torch.tanh(x.flatten(1) @ w1.T) @ w2.T

    x = torch.randn(3, 2, 3, generator=g, dtype=F64) * torch.tensor([0.1, 1.0, 3.0], dtype=F64)[:, None, None]
    exact = torch.linalg.matrix_norm(dense_jacobians(f, x), 2)
    # As for the linear maps: a 6-dimensional Krylov space, float64.
    torch.testing.assert_close(jacobian_norm(f, x), exact, rtol=1e-9, atol=0)
    assert exact.max() / exact.min() > 1.5  # tanh saturates differently at each example


def log_norm_reference(f, x):
    jac = dense_jacobians(f, x)
    return torch.linalg.eigvalsh((jac + jac.transpose(1, 2)) / 2)[:, -1]


def test_log_norm_of_a_batch_of_linear_maps_including_a_negative_one():
    g = gen(4)
    n = 6
    mats = torch.randn(3, n, n, generator=g, dtype=F64)
    mats[0] = mats[0] - 5 * torch.eye(n, dtype=F64)  # contractive: mu_2 < 0
    mats[2] = mats[2] + 20 * torch.triu(torch.ones(n, n, dtype=F64), 1)  # strongly non-normal

    def f(x):
        return torch.einsum("bij,bj->bi", mats, x)

    x = torch.randn(3, n, generator=g, dtype=F64)
    exact = log_norm_reference(f, x)
    got = log_norm(f, x)
    assert got.shape == (3,) and got.dtype == F64
    assert exact[0] < 0 < exact[2]
    # The symmetric part is 6x6: exhausted Krylov space (or a residual <= 1e-7 relative,
    # an error ~ residual^2 / gap), float64 round-off on entries up to ~60.
    torch.testing.assert_close(got, exact, rtol=1e-9, atol=1e-12)
    # It is the symmetric part's eigenvalue, not the largest real part of an eigenvalue
    # (which a non-normal matrix keeps far below it).
    assert got[2] > torch.linalg.eigvals(mats[2]).real.max() + 1


def test_log_norm_of_a_nonlinear_map_per_example():
    g = gen(5)
    w0 = torch.randn(5, 5, generator=g, dtype=F64) - 2 * torch.eye(5, dtype=F64)
    w1 = torch.randn(5, 5, generator=g, dtype=F64)
    w2 = torch.randn(5, 5, generator=g, dtype=F64)

    def f(x):
        return x @ w0.T + torch.tanh(x @ w1.T) @ w2.T

    x = torch.randn(3, 5, generator=g, dtype=F64) * torch.tensor([0.1, 1.0, 10.0], dtype=F64)[:, None]
    exact = log_norm_reference(f, x)
    # A 5-dimensional symmetric operator: as above.
    torch.testing.assert_close(log_norm(f, x), exact, rtol=1e-9, atol=1e-12)
    assert (exact[1:] - exact[:-1]).abs().min() > 1e-3  # the examples' answers differ


def test_log_norm_of_a_non_square_map_is_refused():
    w = torch.randn(3, 4, generator=gen(6), dtype=F64)
    with pytest.raises(ValueError, match=r"square Jacobian: f maps \(2, 4\) to \(2, 3\)"):
        log_norm(lambda x: x @ w.T, torch.randn(2, 4, generator=gen(7), dtype=F64))


# -- linear symmetric drift: every statement in closed form -------------------------------


def linear_block(m, s):
    """A ResBlock computing ``X + m^T diag(s) m X`` at every pixel (float64).

    1x1 convolutions ``m`` and ``m^T`` without biases, a BatchNorm whose scale is exactly
    its weight ``s`` (running mean 0, running variance ``1 - eps``, bias 0) and identity
    activations.
    """
    c = m.shape[0]
    conv1, conv2 = nn.Conv2d(c, c, 1, bias=False).double(), nn.Conv2d(c, c, 1, bias=False).double()
    bn1 = nn.BatchNorm2d(c).double().eval()
    with torch.no_grad():
        conv1.weight.copy_(m[:, :, None, None])
        conv2.weight.copy_(m.T[:, :, None, None])
        bn1.running_mean.zero_()
        bn1.running_var.fill_(1 - bn1.eps)
        bn1.weight.copy_(s)
        bn1.bias.zero_()
    block = ResBlock(conv1, bn1, conv2, nn.Identity())
    block.acts = ActivationPool(2, factory=nn.Identity)
    return block


def rk4_poly(z):
    """The classical RK4 step's amplification ``1 + z + z^2/2 + z^3/6 + z^4/24``."""
    return 1 + z + z**2 / 2 + z**3 / 6 + z**4 / 24


def rk4_matrix(z):
    """The classical RK4 step's map for the linear drift ``dX/dt = (z / dt) X``."""
    return sum(torch.linalg.matrix_power(z, k) / math.factorial(k) for k in range(5))


C = 4


@pytest.mark.parametrize(
    "eigs",
    [
        [-1.2, -0.4, 0.1, 0.5],  # growth: lambda_max rules the Euler map and the flow
        [-2.8, -0.3, 0.05, 0.2],  # |1 + lambda_min| = 1.8 rules the Euler map, lambda_max the flow
        [-1.5, -0.9, -0.6, -0.3],  # contractive: every eigenvalue negative
    ],
)
def test_a_linear_symmetric_drift_gives_the_closed_forms(eigs):
    g = gen(10)
    eigs = torch.tensor(eigs, dtype=F64)
    q, _ = torch.linalg.qr(torch.randn(C, C, generator=g, dtype=F64))
    d = 0.5 + torch.rand(C, generator=g, dtype=F64)
    m = d[:, None] * q  # not orthogonal; m^T diag(s) m = q^T diag(d^2 s) q
    s = eigs / d**2  # mixed signs but for the contractive case
    a = m.T @ torch.diag(s) @ m
    lam = torch.linalg.eigvalsh(a)
    torch.testing.assert_close(lam, eigs, rtol=0, atol=1e-14)  # the construction
    n, steps = 3, 4
    stage = ContinuousStage([linear_block(m, s) for _ in range(n)]).eval()
    assert stage.h == 1.0
    x = torch.randn(2, C, 3, 2, generator=g, dtype=F64)  # 6 pixels: the operators are I_6 (x) A
    with torch.no_grad():
        pixels = x.permute(0, 2, 3, 1) @ torch.linalg.matrix_power(torch.eye(C, dtype=F64) + a, n).T
        torch.testing.assert_close(stage.flow(x), pixels.permute(0, 3, 1, 2), rtol=1e-13, atol=1e-13)

    out = local_bound(stage, x, steps=steps)
    lam_max = lam[-1].item()
    euler = (1 + lam).abs().max().item()
    # Every norm is of I_6 (x) S with S a polynomial in A: a Krylov space of dimension <= 4
    # (distinct eigenvalues), exhausted within the 40 Lanczos iterations, so each norm
    # is exact up to float64 round-off (~1e-15 relative; 1e-8 leaves a wide margin), and
    # log_norms are lambda_max(A) to round-off on entries of order 3.
    torch.testing.assert_close(out["log_norms"], torch.full((2, n, steps + 1), lam_max, dtype=F64), rtol=0, atol=1e-12)
    torch.testing.assert_close(out["block_norms"], torch.full((2, n), euler, dtype=F64), rtol=1e-8, atol=0)
    # The Euler step map I + A is normal: the product of its norms is the norm of its power.
    for key in ("bound", "measured"):
        torch.testing.assert_close(out[key], torch.full((2,), euler**n, dtype=F64), rtol=1e-8, atol=0)
    # The trapezoidal rule integrates the constant lambda_max exactly: exp(n h lambda_max),
    # up to the round-off of the log norms above (1e-12 absolute in the exponent).
    flow = torch.full((2,), math.exp(n * lam_max), dtype=F64)
    torch.testing.assert_close(out["flow_bound"], flow, rtol=1e-10, atol=0)
    # The RK4 map is p(A dt)^(n steps), symmetric; p is positive and increasing on
    # [-0.7, 0.125] (lambda dt here), so its norm is p(lambda_max dt)^(n steps), exactly.
    dt = stage.h / steps
    rk4 = rk4_poly(lam_max * dt) ** (n * steps)
    torch.testing.assert_close(out["flow_measured"], torch.full((2,), rk4, dtype=F64), rtol=1e-8, atol=0)
    torch.testing.assert_close(out["flow_block_bound"], out["flow_measured"], rtol=1e-8, atol=0)
    # ... which is the exact flow exp(n lambda_max) up to RK4's error: per step
    # |p(z) e^-z - 1| <= e^(2|z|) |z|^5 / 120 (Taylor remainder), over n * steps steps;
    # a factor 2 covers e^(2|z|) <= 1.3 and the compounding.
    z = abs(lam_max * dt)
    rk4_error = 2 * n * steps * z**5 / 120
    assert (out["flow_measured"] / math.exp(n * lam_max) - 1).abs().max() <= rk4_error


@pytest.mark.parametrize("T", [None, 0.5])
def test_different_symmetric_drifts_per_block_give_the_dense_products(T):
    """Non-commuting A_k: each product statement against the dense C x C matrices."""
    g = gen(11)
    n, steps = 3, 2
    ms = [0.6 * torch.randn(C, C, generator=g, dtype=F64) for _ in range(n)]
    ss = [torch.tensor([0.5, -0.5, 0.3, -0.8], dtype=F64)[torch.randperm(C, generator=g)] for _ in range(n)]
    mats = [m.T @ torch.diag(s) @ m for m, s in zip(ms, ss)]
    assert (mats[0] @ mats[1] - mats[1] @ mats[0]).abs().max() > 0.1  # they do not commute
    stage = ContinuousStage([linear_block(m, s) for m, s in zip(ms, ss)], T=T).eval()
    h = stage.h
    x = torch.randn(3, C, 2, 3, generator=g, dtype=F64)
    out = local_bound(stage, x, steps=steps)

    eye = torch.eye(C, dtype=F64)
    # block(X) = X + A_k X whatever h; the drift is A_k / h, integrated over h.
    euler = [eye + a for a in mats]
    rk4 = [torch.linalg.matrix_power(rk4_matrix(a / steps), steps) for a in mats]  # (A/h) dt = A / steps

    def norm(mat):
        return torch.linalg.matrix_norm(mat, 2).item()

    def prod(factors):
        out = eye
        for f in factors:
            out = f @ out
        return out

    expected = {
        "block_norms": torch.tensor([norm(e) for e in euler], dtype=F64).expand(3, n),
        "bound": math.prod(norm(e) for e in euler),
        "measured": norm(prod(euler)),
        "flow_bound": math.exp(h * sum(torch.linalg.eigvalsh(a / h)[-1].item() for a in mats)),
        "flow_block_bound": math.prod(norm(r) for r in rk4),
        "flow_measured": norm(prod(rk4)),
    }
    # As in the shared-drift test: Krylov spaces of dimension <= 4 (exact up to round-off)
    # for every norm; 1e-8 relative leaves a wide margin over float64 round-off.
    for key, value in expected.items():
        value = torch.as_tensor(value, dtype=F64).expand(out[key].shape)
        torch.testing.assert_close(out[key], value, rtol=1e-8, atol=0, msg=key)
    # Submultiplicativity is strict for non-commuting factors: the bounds have slack.
    assert (out["bound"] > out["measured"] * 1.01).all()
    assert (out["flow_bound"] >= out["flow_block_bound"] * (1 - 1e-8)).all()
    assert (out["flow_block_bound"] > out["flow_measured"] * 1.01).all()


# -- never below, on small networks -------------------------------------------------------


def small_model(cls, seed, **kw):
    """A random float64 'small' model in eval mode, with non-trivial BatchNorm statistics."""
    return tiny_model(cls, seed, blocks=3, **kw).double()


def images(n, seed):
    return torch.rand(n, 1, 8, 8, generator=gen(seed), dtype=F64)


# Lanczos approaches each norm from below, stopping at a residual <= 1e-7 of the squared
# norm: a norm is low by at most ~5e-8 relative, a product of 3 factors by ~1.5e-7. The
# bounds are rigorous for the maps measured, so a relative slack of 1e-5 is ample.
SLACK = 1e-5


def assert_never_below(out):
    assert (out["bound"] >= out["measured"] * (1 - SLACK)).all()
    assert (out["measured"] > 1e-3).all()  # something was measured
    if "flow_bound" in out:
        assert (out["flow_bound"] >= out["flow_measured"] * (1 - SLACK)).all()
        assert (out["flow_block_bound"] >= out["flow_measured"] * (1 - SLACK)).all()
        assert (out["flow_bound"] >= out["flow_block_bound"] * (1 - SLACK)).all()


def test_the_local_bounds_are_never_below_on_a_random_ode_resnet():
    model = small_model(ODEResNet, 0)
    x = images(3, 0)
    for stage, state in zip(model.stages, stage_inputs(model, x)):
        out = local_bound(stage, state)
        assert_never_below(out)
        assert stage.num_continuous >= 2  # a product of several block norms, not one norm twice


def test_the_local_bounds_are_never_below_on_a_random_sde_resnet():
    model = small_model(SDEResNet, 1, sigma=0.5)
    x = images(3, 1)
    model(x)  # eval mode: the stages' noise is off for stage_inputs
    assert not any(stage.noise for stage in model.stages)
    for stage, state in zip(model.stages, stage_inputs(model, x)):
        assert_never_below(local_bound(stage, state))
        pathwise = local_bound(stage, state, path_seed=5)
        assert not set(FLOW_KEYS) & set(pathwise)
        assert_never_below(pathwise)


# -- the result's shape, determinism and independence -------------------------------------


def test_shapes_and_the_pathwise_result():
    model = small_model(SDEResNet, 2, sigma=0.5)
    x = images(2, 2)
    model(x)
    stage, state = model.layer2, stage_inputs(model, x)[1]
    n = stage.num_continuous
    assert n == 2
    out = local_bound(stage, state, steps=3)
    assert set(out) == {"block_norms", "log_norms", *PER_IMAGE}
    for key in PER_IMAGE:
        assert out[key].shape == (2,) and out[key].dtype == F64, key
    assert out["block_norms"].shape == (2, n) and out["log_norms"].shape == (2, n, 4)

    first = local_bound(stage, state, path_seed=1)
    again = local_bound(stage, state, path_seed=1)
    other = local_bound(stage, state, path_seed=2)
    assert set(first) == {"block_norms", "bound", "measured"}
    assert first["block_norms"].shape == (2, n)
    for key in first:  # one fixed path: deterministic, bit for bit
        assert torch.equal(first[key], again[key]), key
    # Another path changes the derivative (the normalized noise depends on the state);
    # the differences measured are ~1e-2 relative, far above round-off.
    assert ((first["measured"] - other["measured"]).abs() > 1e-6 * first["measured"]).all()
    assert ((first["measured"] - out["measured"]).abs() > 1e-6 * out["measured"]).all()


@pytest.mark.parametrize("cls, path_seed", [(ODEResNet, None), (SDEResNet, 3)])
def test_an_image_alone_gets_what_it_gets_in_a_batch(cls, path_seed):
    model = small_model(cls, 3)
    x = images(3, 3)
    model(x)
    stage, state = model.layer2, stage_inputs(model, x)[1]
    batch = local_bound(stage, state, path_seed=path_seed)
    alone = local_bound(stage, state[:1], path_seed=path_seed)
    # The maps act on each image separately, but in a batch Lanczos runs until every
    # image converged, so image 0 may get more iterations. A Ritz value's error is of the
    # order of its residual squared over the spectral gap: at the stopping residual
    # (1e-7 relative) that is ~1e-14, round-off level (measured: <= 3e-15 relative).
    for key in alone:
        torch.testing.assert_close(alone[key], batch[key][:1], rtol=1e-10, atol=0, msg=key)


def test_the_stage_noise_settings_are_restored():
    model = small_model(SDEResNet, 4, sigma=0.5)
    x = images(2, 4)
    model(x)
    stage, state = model.layer1, stage_inputs(model, x)[0]
    stage.noise, stage.path_seed = True, 17  # as a fixed-path forward pass leaves them
    off = local_bound(stage, state)
    assert (stage.noise, stage.path_seed) == (True, 17)
    local_bound(stage, state, path_seed=3)
    assert (stage.noise, stage.path_seed) == (True, 17)
    # Without a path_seed the noise was off whatever the stage said: the result is the
    # deterministic map's (identical to a call with the noise off to begin with).
    stage.noise, stage.path_seed = False, None
    reference = local_bound(stage, state)
    assert (stage.noise, stage.path_seed) == (False, None)
    for key in reference:
        assert torch.equal(off[key], reference[key]), key


# -- errors -------------------------------------------------------------------------------


def test_clear_errors():
    ode = small_model(ODEResNet, 5)
    stage = ode.layer1
    state = stage_inputs(ode, images(1, 5))[0]
    with pytest.raises(ValueError, match="eval mode"):
        local_bound(stage.train(), state)
    stage.eval()
    with pytest.raises(ValueError, match=r"x must be the state entering .* \(B, 4, H, W\)"):
        local_bound(stage, torch.zeros(1, 3, 8, 8, dtype=F64))
    with pytest.raises(ValueError, match=r"x must be the state entering"):
        local_bound(stage, state[0])  # no batch dimension
    for steps in (0, 1.5):
        with pytest.raises(ValueError, match=r"steps must be an integer >= 1"):
            local_bound(stage, state, steps=steps)
    with pytest.raises(ValueError, match="is an ODE stage: a path_seed needs an SDE stage"):
        local_bound(stage, state, path_seed=0)
    transition_only = ODEResNet.small(in_channels=1, widths=(4, 8), blocks=1).layer2.eval()
    with pytest.raises(ValueError, match="has no continuous blocks"):
        local_bound(transition_only, torch.zeros(1, 4, 8, 8))
