"""Empirical checks of Theorem 1: Lipschitz bounds of the drift, e^{CT}, measured amplification.

Theorem 1 (Jha et al., IJCAI 2021) bounds the flow of a neural ODE with a drift of
Lipschitz constant C: ``||F(x') - F(x)|| <= ||x' - x|| e^{CT}`` (Gronwall). Here F is a
stage's continuous dynamics, ``stage.flow``: ``X(0) -> X(T)``, and the drift is the one
the library integrates. Block k owns ``[k h, (k+1) h]`` with

    G_k(X) = (relu(X + R_k(X)) - X) / h,      R_k = BN o conv (o ReLU o BN o conv ...).

**Bound on C.** With D the diagonal 0/1 Jacobian of the outer ReLU, the Jacobian of G_k is
``((D - I) + D R_k') / h``, so

* ``Lip(G_k) <= (1 + L_k) / h`` (as ``||D - I|| <= 1``), with ``L_k`` = the product of the
  operator norms of the block's convolutions with BatchNorm folded in (eval mode;
  ReLU is 1-Lipschitz). This is Theorem 1's C; the flow bound is
  ``exp(integral of C) = prod_k exp(1 + L_k)`` (and ``exp(C_max T)`` with one constant).
* The one-sided (logarithmic-norm) constant is at most ``L_k / h`` (``D - I`` is negative
  semi-definite), which bounds the exact flow more tightly: ``prod_k exp(L_k)``.

Both bounds hold for the exact flow and for Euler's method with one or more steps per
block (``||I + dt G'|| <= 1 + (dt/h) L_k`` for ``dt <= h``); a higher-order solver's step map
obeys them up to its own error. Operator norms come from power iteration, run until the
estimate changes by less than ``tol`` relative.

**Measured amplification** ``||F(x + d) - F(x)|| / ||d||`` per image, over random
directions, the locally worst direction (power iteration on ``J^T J`` of the flow) and a
projected gradient search; each must stay below the bound.

**The local, linearised statement** ([`local_bound`][neuralsde.theory.local_bound]) bounds
the Jacobian ``dF/dx`` at each image instead of the worst case over all inputs, along
the image's own trajectory, with Jacobian-vector products only (see
[`neuralsde.spectral`][neuralsde.spectral]).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .linearised import local_bound
from .models import ODEResNet
from .stage import ContinuousStage

__all__ = [
    "amplification",
    "completeness_residual",
    "conv_bn_norm",
    "local_bound",
    "stage_bound",
    "stage_inputs",
]


def conv_bn_norm(
    conv: nn.Conv2d,
    bn: nn.Module | None,
    input_shape: tuple[int, ...],
    *,
    iters: int = 500,
    tol: float = 1e-7,
    seed: int = 0,
) -> float:
    """Operator (spectral) norm of ``x -> BN(conv(x))`` without biases, by power iteration.

    BatchNorm is folded in as its eval-mode per-channel scale
    ``weight / sqrt(running_var + eps)``; its shift does not change differences.

    Args:
        conv: the convolution (any stride, padding, groups, dilation).
        bn: the BatchNorm2d after it, or None.
        input_shape: ``(C, H, W)`` of the convolution's input (zero padding makes the
            norm depend on the size).
        iters: the most power iterations.
        tol: stop when the estimate changes by less than this, relatively.
        seed: seed of the starting vector.

    Returns:
        The operator norm (power iteration converges from below; at ``tol = 1e-7`` the
        remaining gap is far below the looseness of the product bound).
    """
    if bn is not None and not isinstance(bn, nn.BatchNorm2d):
        raise ValueError(f"operator norms fold in BatchNorm2d (eval mode) only, got {type(bn).__name__}")
    weight = conv.weight.detach().double()
    scale = torch.ones(weight.shape[0], dtype=torch.float64, device=weight.device)
    if bn is not None:
        scale = bn.weight.detach().double() / torch.sqrt(bn.running_var.detach().double() + bn.eps)

    def apply(x: Tensor) -> Tensor:
        y = nn.functional.conv2d(x, weight, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        return y * scale.view(1, -1, 1, 1)

    gen = torch.Generator().manual_seed(seed)
    v = torch.randn((1, *input_shape), generator=gen, dtype=torch.float64).to(weight.device)
    v = v / v.norm()
    sigma = 0.0
    for _ in range(iters):
        x = v.clone().requires_grad_(True)
        y = apply(x)
        (w,) = torch.autograd.grad(y, x, y)  # A^T A v
        norm = w.norm().item()
        new_sigma = math.sqrt(norm)
        v = (w / norm).detach()
        if abs(new_sigma - sigma) <= tol * new_sigma:
            sigma = new_sigma
            break
        sigma = new_sigma
    with torch.no_grad():
        return max(sigma, apply(v).norm().item())


def _residual_norm(block, input_shape: tuple[int, ...]) -> tuple[float, list[float]]:
    """``L_k``: product of the conv/BN operator norms of a block's residual branch."""
    pairs = [(block.conv1, block.bn1), (block.conv2, block.bn2)]
    if block.bottleneck:
        pairs.append((block.conv3, block.bn3))
    norms, shape = [], tuple(input_shape)
    for conv, bn in pairs:
        norms.append(conv_bn_norm(conv, bn, shape))
        with torch.no_grad():
            out = conv(torch.zeros((1, *shape), device=conv.weight.device, dtype=conv.weight.dtype))
        shape = tuple(out.shape[1:])
    return math.prod(norms), norms


def stage_bound(stage: ContinuousStage, input_shape: tuple[int, ...]) -> dict:
    """Theorem 1's bound for a stage's flow.

    Args:
        stage: the stage (eval-mode BatchNorm statistics are used).
        input_shape: ``(C, H, W)`` of the flow's state.

    Returns:
        A dict with per-block ``L`` (residual Lipschitz bounds), ``C`` (drift Lipschitz
        bounds ``(1 + L)/h``), ``C_onesided`` (``L/h``), ``h``, ``T``, and the bounds
        ``bound`` = ``exp(sum C_k h)``, ``bound_max_C`` = ``exp(max C * T)`` and
        ``bound_onesided`` = ``exp(sum L_k)``.
    """
    blocks = stage.continuous_blocks
    h, T = stage.h, stage.horizon
    L, convs = [], []
    for block in blocks:
        lk, norms = _residual_norm(block, input_shape)
        L.append(lk)
        convs.append(norms)
    C = [(1 + lk) / h for lk in L]
    return {
        "stage": stage.name,
        "h": h,
        "T": T,
        "L": L,
        "conv_norms": convs,
        "C": C,
        "C_onesided": [lk / h for lk in L],
        "bound": math.exp(sum(c * h for c in C)),
        "bound_max_C": math.exp(max(C) * T) if C else 1.0,
        "bound_onesided": math.exp(sum(L)),
    }


@torch.no_grad()
def stage_inputs(model: ODEResNet, x: Tensor) -> list[Tensor]:
    """The states entering each stage's flow (after its transitions) for images ``x``."""
    model.check_input(x)
    states = []
    h = model.stem(x)
    for stage in model.stages:
        h = stage.transition(h)
        states.append(h)
        h = stage.flow(h)
    return states


def _per_sample_norm(t: Tensor) -> Tensor:
    return t.flatten(1).norm(dim=1)


def _unit(t: Tensor) -> Tensor:
    return t / _per_sample_norm(t).clamp_min(1e-30).view(-1, *([1] * (t.dim() - 1)))


def amplification(
    flow: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    rel_eps: float = 1e-3,
    directions: int = 8,
    power_iters: int = 20,
    pgd_steps: int = 20,
    seed: int = 0,
) -> dict:
    """Measured amplification ``||F(x + d) - F(x)|| / ||d||`` of a flow, per example.

    ``||d|| = rel_eps * ||x||`` for every example. The flow must act on each example
    independently (eval mode), which all the library's models do.

    Args:
        flow: the map F, e.g. ``stage.flow``.
        x: points ``(B, ...)``.
        rel_eps: perturbation size relative to each example's norm.
        directions: random Gaussian directions tried.
        power_iters: power iterations on ``J^T J`` for the locally worst direction.
        pgd_steps: projected gradient-ascent steps on the sphere ``||d|| = eps``,
            started from the worst direction.
        seed: seed of the random directions.

    Returns:
        ``{"random", "power", "pgd", "max", "jacobian_norm"}``, each a ``(B,)`` tensor:
        the largest ratio over random directions, the ratio along the power-iteration
        direction, the best ratio of the search, their maximum, and the estimated local
        Lipschitz constant ``||J(x)||``.
    """
    x = x.detach()
    shape = (-1,) + (1,) * (x.dim() - 1)
    eps = (rel_eps * _per_sample_norm(x)).clamp_min(1e-12)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        fx = flow(x)

    def ratio(d: Tensor) -> Tensor:
        with torch.no_grad():
            return _per_sample_norm(flow(x + d) - fx) / _per_sample_norm(d)

    rand = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(directions):
        u = torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)
        rand = torch.maximum(rand, ratio(_unit(u) * eps.view(shape)))

    # Power iteration on J^T J (J v by double back-propagation, J^T w by one).
    v = _unit(torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device))
    sigma = torch.zeros_like(rand)
    for _ in range(power_iters):
        xv = x.clone().requires_grad_(True)
        y = flow(xv)
        probe = torch.zeros_like(y, requires_grad=True)
        (jt,) = torch.autograd.grad(y, xv, probe, create_graph=True)
        (jv,) = torch.autograd.grad(jt, probe, v)
        (jtjv,) = torch.autograd.grad(y, xv, jv)
        sigma = _per_sample_norm(jtjv).sqrt()
        v = _unit(jtjv.detach())
    power = ratio(v * eps.view(shape))

    # Projected gradient ascent on the sphere ||d|| = eps, from the worst direction.
    d = (v * eps.view(shape)).detach()
    best = power.clone()
    step = 0.5
    for _ in range(pgd_steps):
        dv = d.clone().requires_grad_(True)
        gain = _per_sample_norm(flow(x + dv) - fx).sum()
        (g,) = torch.autograd.grad(gain, dv)
        d = (_unit(d + step * eps.view(shape) * _unit(g)) * eps.view(shape)).detach()
        best = torch.maximum(best, ratio(d))
    return {
        "random": rand,
        "power": power,
        "pgd": best,
        "max": torch.maximum(torch.maximum(rand, power), best),
        "jacobian_norm": sigma,
    }


def completeness_residual(
    explain: Callable[[Tensor], Tensor],
    output: Callable[[Tensor], Tensor],
    x: Tensor,
    x_hat: Tensor,
) -> dict:
    """How far ``sum_k (A_k(x_hat) - A_k(x))`` is from ``F(x_hat) - F(x)`` (eq. 9).

    For a complete attribution method, ``sum_k A_k(x) = F(x) - F(baseline)``, so the
    difference of the sums over two inputs is the difference of the outputs, whatever
    the baseline.

    Args:
        explain: ``inputs -> attributions`` (same baseline for both calls).
        output: ``inputs -> (B,)`` the explained output F (e.g. the target logit).
        x: a batch of inputs.
        x_hat: the same inputs, perturbed.

    Returns:
        ``{"residual", "relative", "output_change"}``, each ``(B,)``: the absolute
        residual, the residual over ``|F(x_hat) - F(x)|``, and ``F(x_hat) - F(x)``.
    """
    a, a_hat = explain(x), explain(x_hat)
    with torch.no_grad():
        change = output(x_hat) - output(x)
    total = (a_hat - a).flatten(1).sum(dim=1).detach()
    residual = (total - change).abs()
    return {"residual": residual, "relative": residual / change.abs().clamp_min(1e-12), "output_change": change}
