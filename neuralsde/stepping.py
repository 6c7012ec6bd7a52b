"""The fixed step grid and the one loop that walks it, with the library's own Euler step.

Every fixed-grid solve of [`integrate`][neuralsde.solvers.integrate], ODE or SDE, runs
[`fixed_grid`][neuralsde.stepping.fixed_grid] with a stepper: the
[`EulerStep`][neuralsde.stepping.EulerStep] here (Euler and Euler–Maruyama), or one of
the torchdiffeq / torchsde steppers of ``neuralsde._backends``, which follow the same
[`Stepper`][neuralsde.stepping.Stepper] protocol.

The grid contains every time of ``ts``: each interval ``[ts[i], ts[i+1]]`` is cut into
``ceil(len / dt)`` equal steps (one step per interval when ``dt`` is None), with no
accumulated round-off in the step times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

__all__ = ["EulerStep", "SolverStats", "Stepper", "fixed_grid", "step_count", "step_grid", "time_dtype"]


@dataclass
class SolverStats:
    """Counts of the work done by one or more solves.

    Attributes:
        method: the method of the last solve counted.
        steps: accepted steps.
        rejected: rejected steps (adaptive ODE methods only).
        nfe: drift evaluations.
        nfe_diffusion: diffusion evaluations (SDE only).
        times: if a list, the end time of every accepted step of an adaptive ODE
            method is appended to it (the grid the method chose).
    """

    method: str = ""
    steps: int = 0
    rejected: int = 0
    nfe: int = 0
    nfe_diffusion: int = 0
    times: list[float] | None = None

    def reset(self) -> None:
        """Set every count back to zero."""
        self.steps = self.rejected = self.nfe = self.nfe_diffusion = 0

    def add(self, other: SolverStats) -> None:
        """Add another record's counts (and recorded times) to this one."""
        self.method = other.method
        self.steps += other.steps
        self.rejected += other.rejected
        self.nfe += other.nfe
        self.nfe_diffusion += other.nfe_diffusion
        if self.times is not None and other.times is not None:
            self.times.extend(other.times)


def step_grid(ts: Sequence[float], dt: float | None) -> list[float]:
    """The fixed-step grid: every time of ``ts``, each interval cut into equal steps.

    Args:
        ts: increasing times.
        dt: the largest allowed step; None for one step per interval.

    Returns:
        Increasing times starting at ``ts[0]`` and ending at ``ts[-1]`` that contain every
        element of ``ts``.
    """
    grid = [float(ts[0])]
    for a, b in zip(ts[:-1], ts[1:]):
        a, b = float(a), float(b)
        n = 1 if dt is None else max(1, math.ceil((b - a) / dt - 1e-9))
        grid.extend(a + (b - a) * k / n for k in range(1, n))
        grid.append(b)
    return grid


def step_count(ts: Sequence[float], dt: float | None) -> int:
    """The number of steps of [`step_grid`][neuralsde.stepping.step_grid] ``(ts, dt)``, without making it."""
    if dt is None:
        return len(ts) - 1
    return sum(max(1, math.ceil((float(b) - float(a)) / dt - 1e-9)) for a, b in zip(ts[:-1], ts[1:]))


def time_dtype(y0: Tensor) -> torch.dtype:
    """The dtype of step times for a state: float64 for float64 states, else float32."""
    return torch.float64 if y0.dtype == torch.float64 else torch.float32


class Stepper(Protocol):
    """What the fixed-grid loop drives: one solver's step, with its own carried state.

    Attributes:
        time_device: the device the loop puts the step times on.
    """

    time_device: torch.device

    def init(self, t0: Tensor, y0: Tensor) -> Any:
        """The carried state at the first grid time."""

    def step(self, t0: Tensor, t1: Tensor, dt: float, carry: Any, times: tuple[float, float]) -> Any:
        """The carried state after the step from ``t0`` to ``t1`` (``dt = t1 - t0``).

        ``times`` holds the same two times as Python floats (for look-ups that need no
        tensor, such as a Brownian path's).
        """

    def state(self, carry: Any) -> Tensor:
        """The solution ``y``, shaped like ``y0``, held in a carried state."""


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


class EulerStep:
    """Euler (ODE) or Euler–Maruyama (Itô SDE, diagonal noise) on the fixed step grid.

    The library's own step rather than torchdiffeq's/torchsde's because it is one line,
    and owning it removes every pass over the state that the generic steppers add: the
    separate ``dt * f`` and ``g * dW`` products, torchsde's flattening of the state and of
    ``sigma``, and, through ``drift.euler_step``, the ``(block(x) - x) / h`` velocity of a
    residual block, whose Euler step of length ``h`` is the block itself. Each step is
    ``y + dt f(t, y) + sigma(t, y) dW`` with ``dW = W(t + dt) - W(t)``, exactly
    torchdiffeq's Euler and torchsde's Itô Euler–Maruyama step.

    Args:
        drift: ``drift(t, y)``, possibly with its own ``euler_step(t, y, dt)``.
        diffusion: ``diffusion(t, y)``, or None for an ODE.
        bm: the Brownian path of shape ``(B, prod(S))``, queried at the grid's float
            times (None for an ODE).
        shape: the state's shape ``(B, *S)``.
        stats: counts the evaluations.
    """

    # Step times stay on the CPU: the Brownian look-ups only do scalar arithmetic with
    # them, and CPU scalars keep them free of device synchronisation.
    time_device = torch.device("cpu")

    def __init__(
        self,
        drift: Callable[[Tensor, Tensor], Tensor],
        diffusion: Callable[[Tensor, Tensor], Tensor] | None,
        bm: Callable[..., Tensor] | None,
        shape: torch.Size,
        stats: SolverStats,
    ):
        self.drift, self.diffusion, self.bm, self.shape, self.stats = drift, diffusion, bm, shape, stats
        self.own_step = getattr(drift, "euler_step", None)

    def init(self, t0: Tensor, y0: Tensor) -> Tensor:
        return y0

    def state(self, y: Tensor) -> Tensor:
        return y

    def _drift_step(self, t: Tensor, y: Tensor, dt: float) -> Tensor:
        """``y + dt * drift(t, y)``, or ``drift.euler_step(t, y, dt)`` where the drift has one."""
        if self.own_step is not None:
            out, what = self.own_step(t, y, dt), "drift.euler_step(t, y, dt)"
        else:
            out, what = self.drift(t, y), "drift(t, y)"
        if not isinstance(out, Tensor) or out.shape != y.shape:
            got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"{what} must return a tensor of y's shape {tuple(y.shape)}, got {got}")
        return out if self.own_step is not None else torch.add(y, out, alpha=dt)

    def step(self, t0: Tensor, t1: Tensor, dt: float, y: Tensor, times: tuple[float, float]) -> Tensor:
        self.stats.nfe += 1
        if self.diffusion is None:
            return self._drift_step(t0, y, dt)
        self.stats.nfe_diffusion += 1
        sigma = self.diffusion(t0, y)
        if not isinstance(sigma, Tensor) or (sigma.shape != self.shape and not _broadcasts_to(sigma.shape, self.shape)):
            got = tuple(sigma.shape) if isinstance(sigma, Tensor) else type(sigma).__name__
            raise ValueError(f"diffusion(t, y) must return a tensor of y's shape {tuple(self.shape)}, got {got}")
        # The path is queried at the grid's own (float) times: no tensor is read back.
        dW = self.bm(*times).reshape(self.shape)
        return torch.addcmul(self._drift_step(t0, y, dt), sigma, dW)


def fixed_grid(stepper: Stepper, y0: Tensor, grid: list[float], saved: set[float], stats: SolverStats) -> list[Tensor]:
    """The one fixed-grid loop: step along ``grid``, keep the states at the ``saved`` times.

    Args:
        stepper: the method's step.
        y0: the state at ``grid[0]``, shape ``(B, *S)``.
        grid: the step times (see [`step_grid`][neuralsde.stepping.step_grid]).
        saved: the grid times whose states are returned.
        stats: counts the steps.

    Returns:
        The states at ``grid[0]`` (if saved) and at every later saved grid time, in order.
    """
    t = torch.tensor(grid, dtype=time_dtype(y0), device=stepper.time_device)
    ys = [y0] if grid[0] in saved else []
    carry = stepper.init(t[0], y0)
    for k in range(len(grid) - 1):
        stats.steps += 1
        carry = stepper.step(t[k], t[k + 1], grid[k + 1] - grid[k], carry, (grid[k], grid[k + 1]))
        if grid[k + 1] in saved:
            ys.append(stepper.state(carry))
    return ys
