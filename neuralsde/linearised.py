"""Theorem 1 at each input, linearised along the input's own trajectory.

[`local_bound`][neuralsde.theory.local_bound] (exported by
[`neuralsde.theory`][neuralsde.theory]) bounds the Jacobian ``dF/dx`` of a stage's flow
at each input, instead of the worst case over all inputs that Theorem 1's global
constant covers, and measures that Jacobian's norm beside it. Every norm comes from
Jacobian-vector products ([`neuralsde.spectral`][neuralsde.spectral]).

Two statements, each against the map it is about (every norm by Lanczos on
Jacobian-vector products, never a dense Jacobian):

* **The stage as computed** (``bound``, ``measured``): the stage's flow under its own
  solver is the composition of its block intervals' maps ``Phi_k``, so
  ``||dF/dx|| <= prod_k ||dPhi_k/dX(X_k)||`` at the states ``X_k`` the trajectory
  passes. With one Euler step per block, ``Phi_k`` is the discrete block and this is
  the discrete network itself. ``measured`` is ``||dF/dx||`` of the whole flow (with
  a single block, the flow is that block's map and the two coincide).
* **The continuous flow of the drift** (``flow_bound``, ``flow_measured``; not with
  ``path_seed``): ``||dX(T)/dX(0)|| <= exp(int_0^T mu_2(J_G(X(t), t)) dt)``, with
  ``mu_2`` the logarithmic norm (the largest eigenvalue of the Jacobian's symmetric
  part), integrated by the trapezoidal rule at the points of a classical RK4
  trajectory with ``steps`` steps per block; ``flow_measured`` is the Jacobian norm of
  that RK4 map, which approximates the exact flow's. In a ReLU network ``J_G`` is
  constant between activation flips along the path, so the quadrature is exact there.
  ``flow_block_bound`` is the product of the norms of the blocks' RK4 maps at the
  trajectory's block boundaries (the semigroup property). For the exact flow maps,
  ``||dF/dx|| <= prod_k ||dPhi_k|| <= exp(int mu_2)``, so it shows how much of the
  logarithmic norm's slack comes from within the blocks (where ``mu_2`` exceeds the
  growth rate of a non-normal Jacobian). The flow's bound is for the exact flow and
  the other two are norms of RK4 maps: they compare with it up to RK4's error, which
  is small when ``steps`` resolves the drift (``|lambda| h / steps`` well below 1)
  and can be large otherwise (a strongly contracting block with one step).

With ``path_seed`` an SDE stage runs with its noise on, along one fixed Brownian path
(the same for every input), and both numbers are the pathwise derivative's. Only
the first statement is made then: for state-dependent noise, the step maps' norms
gain a term of order ``sqrt(dt)`` each, whose sum grows as the steps shrink.

For the drift ``G(X) = A X`` with a symmetric ``A``, both bounds are exact:
``exp(T lambda_max(A))`` and ``prod_k ||I + h A||``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .solvers import SolverError, finite_flag
from .spectral import jacobian_norm, log_norm
from .stage import ContinuousStage
from .validate import check_count, check_positive, check_seed

__all__ = ["local_bound"]


def _rk4_step(f: Callable[[Tensor], Tensor], y: Tensor, dt: float) -> Tensor:
    k1 = f(y)
    k2 = f(y + dt / 2 * k1)
    k3 = f(y + dt / 2 * k2)
    k4 = f(y + dt * k3)
    return y + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)


class _Mode:
    """The stage's noise and fixed path for the duration of a computation (restored after)."""

    def __init__(self, stage: ContinuousStage, path_seed: int | None):
        self.stage, self.path_seed = stage, path_seed

    def __enter__(self):
        self.saved = (self.stage.noise, self.stage.path_seed)
        self.stage.set_noise_mode(self.path_seed is not None, self.path_seed)

    def __exit__(self, *exc):
        self.stage.set_noise_mode(*self.saved)


def _empty(x: Tensor, blocks: int, steps: int, pathwise: bool) -> dict[str, Tensor]:
    """The results for an empty batch: every tensor with a batch of 0."""
    zeros = dict(dtype=torch.float64, device=x.device)
    out = {"bound": torch.zeros(0, **zeros), "measured": torch.zeros(0, **zeros)}
    out["block_norms"] = torch.zeros(0, blocks, **zeros)
    if not pathwise:
        for key in ("flow_bound", "flow_block_bound", "flow_measured"):
            out[key] = torch.zeros(0, **zeros)
        out["log_norms"] = torch.zeros(0, blocks, steps + 1, **zeros)
    return out


def local_bound(
    stage: ContinuousStage,
    x: Tensor,
    *,
    steps: int = 4,
    path_seed: int | None = None,
    iters: int = 40,
    tol: float = 1e-7,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Theorem 1 at each input: bounds on ``||dF/dx||_2`` along its own trajectory, and that norm.

    Two statements, each against the map it is about (``neuralsde.linearised``'s docstring gives
    both): the stage as computed (``bound``, ``measured``) and, without ``path_seed``,
    the continuous flow of its drift (``flow_bound``, ``flow_block_bound``,
    ``flow_measured``). Every norm comes from Lanczos on Jacobian-vector products.

    Args:
        stage: the stage, in eval mode (its images must not interact).
        x: the state entering the stage's continuous blocks, ``(B, C, H, W)``: the stage's
            input after its transition blocks (``stage.transition``, or
            [`stage_inputs`][neuralsde.theory.stage_inputs] for a model).
        steps: RK4 steps per block interval for the continuous statement.
        path_seed: None for the stage's deterministic map (an SDE stage with its noise
            off), or the seed of the fixed Brownian path along which an SDE stage is
            differentiated.
        iters: the most Lanczos steps per norm. Each step keeps one vector of the state's
            size per image (``x[0].numel()`` values of ``x``'s dtype: 1 MiB for a float32
            state of 64 x 64 x 64), and most norms converge in tens of steps; an ``iters``
            whose whole basis would not fit in half the memory available is capped, with
            a warning.
        tol: Lanczos convergence tolerance (relative, on the squared norm).
        seed: seed of the Lanczos starting vectors.

    Returns:
        ``(B,)`` float64 tensors ``bound``, ``measured`` and, without ``path_seed``,
        ``flow_bound``, ``flow_block_bound``, ``flow_measured``; also ``block_norms`` ``(B, n)`` (the factors of
        ``bound``) and, without ``path_seed``, ``log_norms`` ``(B, n, steps + 1)`` (``mu_2``
        at the trajectory points of each block).

    An empty batch gives empty results.

    Raises:
        ValueError: for something other than a ContinuousStage (a model: pass one of its
            stages), a stage in training mode or without continuous blocks, an ``x``
            that is not a tensor of the right shape, ``steps`` or ``iters`` that is not an
            integer >= 1, ``tol`` not a finite number > 0, or a seed that is not an
            integer in ``[0, 2**63)``, or a ``path_seed`` for an ODE stage.
        SolverError: if ``x``, or the state along its trajectory, is not finite.
    """
    blocks = _checked_stage(stage, x)
    steps = check_count(steps, "steps", 1)
    iters = check_count(iters, "iters", 1)
    tol = check_positive(tol, "tol")
    seed = check_seed(seed, "seed")
    path_seed = check_seed(path_seed, "path_seed", optional=True)
    if path_seed is not None and not stage.is_sde:
        raise ValueError(f"stage {stage.name!r} is an ODE stage: a path_seed needs an SDE stage")
    x = x.detach()
    if x.shape[0] == 0:
        return _empty(x, len(blocks), steps, path_seed is not None)
    if not bool(finite_flag(x)):
        raise SolverError("the input x is not finite", method=stage.method, time=0.0, stage=stage.name)
    norm = dict(iters=iters, tol=tol, seed=seed)
    with _Mode(stage, path_seed):
        out = _as_computed(stage, blocks, x, path_seed is not None, norm)
    if path_seed is None:
        out.update(_continuous_flow(stage, blocks, x, steps, norm))
    return out


def _checked_stage(stage, x) -> list:
    """The stage's continuous blocks, after checking that ``stage`` and ``x`` are what ``local_bound`` takes."""
    if not isinstance(stage, ContinuousStage):
        hint = (
            " (a model: pass one of its stages, e.g. model.layer1, and x from "
            "neuralsde.theory.stage_inputs(model, images))"
            if isinstance(stage, nn.Module) and hasattr(stage, "stages")
            else ""
        )
        raise ValueError(f"stage must be a neuralsde ContinuousStage, got {type(stage).__name__}{hint}")
    if stage.training:
        raise ValueError("local_bound needs the stage in eval mode (BatchNorm in training mode couples the images)")
    blocks = stage.continuous_blocks
    if not blocks:
        raise ValueError(f"stage {stage.name!r} has no continuous blocks")
    if not torch.is_tensor(x):
        raise ValueError(f"x must be a torch.Tensor (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[1] != blocks[0].in_channels:
        raise ValueError(
            f"stage {stage.name!r}: x must be the state entering its continuous blocks, "
            f"(B, {blocks[0].in_channels}, H, W) (after stage.transition; for a model's images, "
            f"neuralsde.theory.stage_inputs(model, images)), got {tuple(x.shape)}"
        )
    return blocks


def _as_computed(stage: ContinuousStage, blocks: list, x: Tensor, noise: bool, norm: dict) -> dict[str, Tensor]:
    """The first statement: ``bound`` (the product of the block intervals' map norms), ``measured``, ``block_norms``.

    Each factor is the norm of one block interval's map under the stage's own solver, at
    the state the trajectory reaches there; ``measured`` is the norm of the whole flow.
    """
    states, factors = x, []
    for k, block in enumerate(blocks):
        interval = stage.interval(k, noise)

        def piece(z: Tensor, block=block, interval=interval) -> Tensor:
            return block(z, interval=interval)

        factors.append(jacobian_norm(piece, states, **norm))
        with torch.no_grad():
            states = piece(states)
        if not bool(finite_flag(states)):
            raise SolverError(
                "the state stopped being finite",
                method=interval.method,
                time=interval.t1,
                stage=stage.name,
            )
    out = {"block_norms": torch.stack(factors, 1)}
    out["bound"] = out["block_norms"].prod(1)
    if len(blocks) == 1:  # the flow is that block's map, whose norm is measured already
        out["measured"] = out["block_norms"][:, 0].clone()
    else:
        out["measured"] = jacobian_norm(lambda z: stage.flow(z, check_finite=False), x, **norm)
    return out


def _continuous_flow(stage: ContinuousStage, blocks: list, x: Tensor, steps: int, norm: dict) -> dict[str, Tensor]:
    """The second statement: ``flow_bound``, ``flow_block_bound``, ``flow_measured`` and ``log_norms``.

    ``mu_2`` of the drift's Jacobian at the points of an RK4 trajectory of ``steps`` steps
    per block, integrated by the trapezoidal rule; the norms of the blocks' RK4 maps; the
    norm of the RK4 flow.
    """
    h, dt = stage.h, stage.h / steps
    y, logs, factors = x, [], []
    for block in blocks:

        def drift(z: Tensor, block=block) -> Tensor:
            return block.velocity(z, h)

        def block_map(z: Tensor, drift=drift) -> Tensor:
            for _ in range(steps):
                z = _rk4_step(drift, z, dt)
            return z

        factors.append(jacobian_norm(block_map, y, **norm))
        mus = [log_norm(drift, y, **norm)]
        for _ in range(steps):
            with torch.no_grad():
                y = _rk4_step(drift, y, dt)
            mus.append(log_norm(drift, y, **norm))
        logs.append(torch.stack(mus, 1))
    out = {"log_norms": torch.stack(logs, 1)}
    weights = torch.ones(steps + 1, dtype=torch.float64, device=x.device)
    weights[0] = weights[-1] = 0.5
    out["flow_bound"] = torch.exp(dt * (out["log_norms"] * weights).sum((1, 2)))
    out["flow_block_bound"] = torch.stack(factors, 1).prod(1)

    def rk4_flow(z: Tensor) -> Tensor:
        for block in blocks:
            for _ in range(steps):
                z = _rk4_step(lambda s, block=block: block.velocity(s, h), z, dt)
        return z

    if len(blocks) == 1:  # the RK4 flow is the block's RK4 map
        out["flow_measured"] = factors[0].clone()
    else:
        out["flow_measured"] = jacobian_norm(rk4_flow, x, **norm)
    return out
