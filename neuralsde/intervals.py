"""How a continuous block integrates its own time interval.

Of a stage's ``n`` continuous blocks, block ``k`` owns the interval ``[k h, (k + 1) h]``,
on which the drift is ``(block(x) - x) / h``. For every forward pass the stage describes
how each interval is solved with a [BlockInterval][neuralsde.intervals.BlockInterval] and
calls the block as a module with it, ``block(x, interval=...)``; the block's forward hands
the work to [`BlockInterval.solve`][neuralsde.intervals.BlockInterval.solve], one call of
[`integrate`][neuralsde.solvers.integrate] per interval. So no solver steps across a jump
of W(t), and hooks on a block fire once per forward pass, with the state entering its
interval and the state leaving it, whatever the solver.

An interval also knows how many drift evaluations it costs
([`evaluations`][neuralsde.intervals.BlockInterval.evaluations]): the number of
activation modules the block must hold for hook-based attributions. It is counted by a
dry run of the same solver code on a scalar problem, in a time that does not grow with
the number of steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .blocks import BlockDrift, ResBlock
from .brownian import GridBrownian
from .solvers import SolverStats, integrate, is_adaptive
from .stepping import step_count, step_grid

__all__ = ["NOISE_OFF_METHOD", "BlockInterval", "ZeroDiffusion", "path_seed"]

#: With the noise off, Euler–Maruyama and Milstein are Euler's method (their noise terms
#: vanish with sigma); SRK has no torchdiffeq twin, so it runs with a zero diffusion.
NOISE_OFF_METHOD = {"euler": "euler", "milstein": "euler"}

# Methods whose number of drift evaluations depends on the drift itself.
_DATA_DEPENDENT = ("implicit_adams",)

# Steps after which every solver's evaluations per step are constant (the Adams methods
# start with Runge–Kutta steps until their history holds max_order - 1 = 4 values).
_DRY_STEPS = 8


class ZeroDiffusion(nn.Module):
    """sigma = 0: an SDE method that has no ODE twin run with its noise switched off."""

    elementwise = True

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        return x.new_zeros(()).expand_as(x)


def path_seed(seed: int, stage: int, block: int) -> int:
    """The seed of one block interval's piece of a fixed Brownian path.

    Args:
        seed: the model's path seed.
        stage: the stage's index in its model.
        block: the block's index among the stage's continuous blocks.
    """
    return (int(seed) * 1_000_003 + stage * 1_009 + block) % (2**63)


@dataclass
class BlockInterval:
    """How one block's time interval is integrated, set by its stage for a forward pass.

    Attributes:
        ts: the interval's ends ``(t0, t1)``, or the frozen step grid an adaptive method
            replays.
        h: the time each block of the stage owns; the drift is ``(block(x) - x) / h``.
        method: the solver method (an SDE method when ``diffusion`` is set).
        dt: the largest step of a fixed-step method; None for one step, or for an
            adaptive method.
        adaptive: False replays ``ts`` with an adaptive method's tableau.
        diffusion: sigma(t, x), or None for an ODE interval.
        rtol: relative tolerance of adaptive methods.
        atol: absolute tolerance of adaptive methods.
        adjoint: back-propagate with the adjoint method.
        path_seed: None, or the seed of this interval's piece of a fixed Brownian path
            shared by every sample (with a diffusion only).
        stats: the stage's record, to which the solve adds its counts; None for none.
        recording: None, or a list to which the step grid an adaptive method chooses is
            appended.
    """

    ts: tuple[float, ...]
    h: float
    method: str
    dt: float | None = None
    adaptive: bool = True
    diffusion: Callable[[Tensor, Tensor], Tensor] | None = None
    rtol: float = 1e-4
    atol: float = 1e-5
    adjoint: bool = False
    path_seed: int | None = None
    stats: SolverStats | None = None
    recording: list[list[float]] | None = None

    @property
    def t0(self) -> float:
        """Where the interval starts."""
        return self.ts[0]

    @property
    def t1(self) -> float:
        """Where the interval ends."""
        return self.ts[-1]

    def _fixed_path(self, x: Tensor) -> GridBrownian:
        """The interval's piece of the fixed Brownian path of ``path_seed``, or the zero path for a zero diffusion."""
        zero = isinstance(self.diffusion, ZeroDiffusion)
        generator = None
        if not zero:
            generator = torch.Generator(device=x.device)
            generator.manual_seed(self.path_seed)
        return GridBrownian(
            step_grid(self.ts, self.dt),
            (x.shape[0], math.prod(x.shape[1:])),
            dtype=x.dtype,
            device=x.device,
            levy_area="space-time" if self.method == "srk" else "none",
            generator=generator,
            keep=False,
            shared=True,
            zero=zero,
        )

    def solve(self, block: ResBlock, x: Tensor) -> Tensor:
        """Integrate the block's drift over the interval.

        Args:
            block: the block that owns the interval.
            x: the state at ``t0``, shape ``(B, C, H, W)``.

        Returns:
            The state at ``t1``, same shape. Its finiteness is not checked here: the
            stage checks every block's output once per forward pass.
        """
        bm = None
        if isinstance(self.diffusion, ZeroDiffusion) or (self.diffusion is not None and self.path_seed is not None):
            bm = self._fixed_path(x)  # a zero diffusion draws no increment: they would be multiplied by 0
        recording = self.recording is not None and self.adaptive and is_adaptive(self.method)
        stats = SolverStats(times=[]) if recording else self.stats
        x1 = integrate(
            BlockDrift(block, self.h),
            x,
            self.ts,
            diffusion=self.diffusion,
            method=self.method,
            dt=self.dt,
            rtol=self.rtol,
            atol=self.atol,
            adjoint=self.adjoint,
            bm=bm,
            adaptive=self.adaptive,
            adjoint_params=tuple(block.parameters()) if self.adjoint else None,
            stats=stats,
            check_finite=False,
            saveat="t1",
        )
        if recording:
            if self.stats is not None:
                self.stats.add(stats)
            inner = [t for t in stats.times if self.t0 < t < self.t1 and not math.isclose(t, self.t1)]
            self.recording.append([self.t0, *inner, self.t1])
        return x1

    def evaluations(self) -> int | None:
        """Drift evaluations one solve of this interval makes.

        None where the count depends on the input: an adaptive method choosing its
        steps, or implicit Adams, whose corrector iterates to convergence. The count is
        that of a dry run on a scalar problem; past a few steps every method makes the
        same number of evaluations per step, so the count of any number of steps is
        extrapolated from two short runs.
        """
        if self.adaptive and (is_adaptive(self.method) or self.method in _DATA_DEPENDENT):
            return None
        steps = step_count(self.ts, self.dt)
        if steps <= _DRY_STEPS:
            return self._dry_run(steps)
        a, b = self._dry_run(_DRY_STEPS), self._dry_run(_DRY_STEPS + 1)
        return b + (steps - _DRY_STEPS - 1) * (b - a)

    def _dry_run(self, steps: int) -> int:
        stats = SolverStats()
        integrate(
            lambda t, y: -y,
            torch.zeros(1, 1, dtype=torch.float64),
            [k / steps for k in range(steps + 1)],
            diffusion=None if self.diffusion is None else (lambda t, y: y),
            method=self.method,
            adaptive=False,
            stats=stats,
            check_finite=False,
            saveat="t1",
        )
        return stats.nfe
