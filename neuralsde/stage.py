"""A ResNet stage reparameterised as a drift network integrated over time.

The stage's shape-preserving blocks become time-dependent dynamics with piecewise-constant
weights W(t): of the stage's ``n`` continuous blocks, block ``k`` owns the interval
``[k h, (k + 1) h]`` with ``h = T / n``, and on it

    dX/dt = G_k(X) = (block_k(X) - X) / h.

One Euler step per block is therefore exactly the discrete stage, and finer or adaptive
solvers integrate the same dynamics. Each block is called as a module for its own
interval, ``block(x, interval=stage.interval(k))``, and solves it with one call of
[`integrate`][neuralsde.solvers.integrate] (see [`neuralsde.intervals`][neuralsde.intervals]):
no solver ever steps across a jump of W(t) (adaptive methods would otherwise shrink their
steps to resolve the discontinuity), and hooks on a block fire once per forward pass with
the state entering its interval and the state leaving it, which a hook may replace
(Captum's layer methods do).

Finiteness: each block's output's extremes stay on the device; one read back per pass.

Shape-changing blocks (stride, channel change, a ``downsample`` branch) cannot be time
steps; they stay discrete transitions at the head of the stage:
``stage(x) = stage.flow(stage.transition(x))``.

With a diffusion and noise switched on, the stage solves the Itô SDE
``dX = G(X, t) dt + sigma(X, t) dB`` instead; each block interval gets an independent
piece of the Brownian path, drawn from torch's generator, or, with ``path_seed`` set,
one fixed path shared by every sample of every batch (common random numbers).

For attribution methods that hook activation modules (Captum's DeepLift, GuidedBackprop)
every drift evaluation must use modules of its own, prepared before the hooks are
registered: after every change of solver the stage counts the evaluations each block
interval needs (a dry run on a scalar problem, through the same solver code) and reserves
that many activation sets. Adaptive methods choose their evaluations per input; a step
grid found once ([`freeze`][neuralsde.stage.ContinuousStage.freeze] with the grids
recorded by a forward pass) is replayed with the same Runge–Kutta tableau, which makes
their count fixed too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .blocks import ResBlock
from .diffusion import Diffusion
from .intervals import NOISE_OFF_METHOD, BlockInterval, ZeroDiffusion, path_seed
from .settings import SolverSettings
from .solvers import SolverError, SolverStats, all_finite, extrema, is_adaptive

__all__ = ["ContinuousStage"]


class ContinuousStage(nn.Module):
    """A stage of residual blocks: discrete transitions plus continuous dynamics.

    Children are named ``"0"``, ``"1"``, ... like the ``nn.Sequential`` of a torchvision
    ResNet layer, so parameter names match torchvision's.

    Args:
        blocks: the stage's blocks in order.
        method: ODE method, or SDE method when ``diffusion`` is given.
        steps_per_block: fixed steps per block interval (fixed-step methods).
        T: length of the stage's time interval; None gives each continuous block unit
            time. The ODE does not depend on T (the drift is scaled by ``1/h``); the SDE
            noise over one block has variance proportional to ``h = T / n``.
        rtol: relative tolerance of adaptive methods.
        atol: absolute tolerance of adaptive methods.
        adjoint: back-propagate with the adjoint method (ODE only).
        diffusion: sigma(X, t) for an SDE stage, or None for an ODE stage.
        name: the stage's name in error messages.
        index: the stage's position in its model (keeps fixed noise paths of different
            stages independent).

    Attributes:
        solver: the [SolverSettings][neuralsde.settings.SolverSettings] (change them with
            [set_solver][neuralsde.stage.ContinuousStage.set_solver]).
        noise: whether an SDE stage draws noise (set by the model per forward pass).
        path_seed: None, or the seed of the fixed Brownian path shared by every sample.
        frozen: None, or per continuous block the step grid an adaptive method replays.
        direct_backprop: back-propagate through the solver even if ``adjoint`` is set
            (the model sets it while attributions are computed).
        stats: steps and evaluations of the last forward pass.
    """

    def __init__(
        self,
        blocks: Sequence[ResBlock],
        *,
        method: str = "euler",
        steps_per_block: int = 1,
        T: float | None = None,
        rtol: float = 1e-4,
        atol: float = 1e-5,
        adjoint: bool = False,
        diffusion: Diffusion | None = None,
        name: str = "stage",
        index: int = 0,
    ):
        super().__init__()
        if len(blocks) == 0:
            raise ValueError("a stage needs at least one block")
        for i, block in enumerate(blocks):
            if not isinstance(block, ResBlock):
                raise ValueError(f"block {i} must be a neuralsde ResBlock, got {type(block).__name__}")
            self.add_module(str(i), block)
        self.continuous = [block.shape_preserving for block in blocks]
        first = self._split()
        if not all(self.continuous[first:]):
            raise ValueError(
                f"stage {name!r}: shape-changing blocks must come before the shape-preserving ones "
                f"(got {self.continuous}), as in every ResNet stage"
            )
        self.diffusion = diffusion
        self.name = name
        self.index = int(index)
        self.noise = diffusion is not None
        self.path_seed: int | None = None
        self.frozen: list[list[float]] | None = None
        self.direct_backprop = False
        self._recording: list[list[float]] | None = None
        self._extrema: list[tuple[Tensor, Tensor]] = []
        self.stats = SolverStats()
        self.solver = SolverSettings(
            method, steps_per_block, T, rtol, atol, adjoint, sde=diffusion is not None, elementwise=self._elementwise()
        )
        self.reserve_activations()

    @property
    def blocks(self) -> list[ResBlock]:
        """The blocks in order."""
        return [module for name, module in self.named_children() if name.isdigit()]

    def __getitem__(self, index: int) -> ResBlock:
        """Block ``index``, as for the ``nn.Sequential`` of a torchvision layer."""
        return self.blocks[index]

    def __len__(self) -> int:
        return len(self.continuous)

    def __iter__(self):
        return iter(self.blocks)

    @property
    def num_continuous(self) -> int:
        """How many blocks are time steps."""
        return sum(self.continuous)

    @property
    def method(self) -> str:
        """The solver method."""
        return self.solver.method

    @property
    def steps_per_block(self) -> int:
        """Fixed steps per block interval."""
        return self.solver.steps_per_block

    @property
    def horizon(self) -> float:
        """The stage's time horizon T."""
        return float(self.num_continuous) if self.solver.T is None else self.solver.T

    @property
    def h(self) -> float:
        """The time each continuous block owns, T / n."""
        return self.horizon / max(self.num_continuous, 1)

    @property
    def is_sde(self) -> bool:
        """Whether the stage has a diffusion."""
        return self.diffusion is not None

    def _elementwise(self, diffusion: Diffusion | None = None) -> bool:
        diffusion = self.diffusion if diffusion is None else diffusion
        return diffusion is None or bool(diffusion.elementwise)

    def set_solver(self, settings: SolverSettings | None = None, **changes: Any) -> None:
        """Change the solver settings; a frozen step grid is dropped.

        Args:
            settings: the new settings, made for this stage (e.g. by
                ``stage.solver.updated(...)``); or None to update the current ones.
            **changes: with ``settings`` None, the fields of
                [SolverSettings][neuralsde.settings.SolverSettings] to change (None keeps
                a value).

        Raises:
            ValueError: for an invalid setting (nothing changes), or settings made for
                a stage with another kind of noise.
        """
        if settings is None:
            settings = self.solver.updated(**changes)
        elif changes:
            raise ValueError("give either settings or the changes to make, not both")
        if (settings.sde, settings.elementwise) != (self.is_sde, self._elementwise()):
            raise ValueError(f"these solver settings were made for another kind of stage than {self.name!r}")
        self.solver = settings
        self.frozen = None
        self.reserve_activations()

    def set_diffusion(self, diffusion: Diffusion) -> None:
        """Replace the diffusion of an SDE stage.

        Raises:
            ValueError: if the stage is an ODE stage or its method cannot handle it.
        """
        if not self.is_sde:
            raise ValueError(f"stage {self.name!r} is an ODE stage; it has no diffusion to replace")
        try:
            settings = self.solver.updated(elementwise=self._elementwise(diffusion))
        except ValueError as err:
            raise ValueError(f"the {diffusion.kind!r} diffusion: {err}") from None
        self.diffusion = diffusion
        self.solver = settings
        self.reserve_activations()

    # -- how each block interval is solved ---------------------------------------------
    @property
    def continuous_blocks(self) -> list[ResBlock]:
        """The blocks that are time steps, in order (the last ``num_continuous`` blocks)."""
        return list(self.blocks[self._split() :])

    @property
    def transition_blocks(self) -> list[ResBlock]:
        """The discrete, shape-changing blocks in front of the continuous dynamics."""
        return list(self.blocks[: self._split()])

    def set_noise_mode(self, noise: bool, path_seed: int | None = None) -> None:
        """Switch the SDE noise on or off for the next forward passes, along fresh paths or one fixed path.

        Args:
            noise: whether the noise is on (ignored by a stage without diffusion).
            path_seed: the seed of a fixed Brownian path, or None for fresh paths.
        """
        self.noise = bool(noise)
        self.path_seed = path_seed

    def interval(self, k: int, noise: bool | None = None) -> BlockInterval:
        """How continuous block ``k`` integrates its interval ``[k h, (k + 1) h]``.

        Args:
            k: the block's index among the continuous blocks.
            noise: whether the SDE noise is on (None: as the stage's ``noise`` says).
        """
        # A stage whose diffusion has sigma 0 is an ODE: it draws no noise at all.
        noise = self.is_sde and (self.noise if noise is None else noise) and self.diffusion.sigma > 0
        h = self.h
        method, diffusion = self.method, None
        if self.is_sde:
            if noise:
                diffusion = self.diffusion
            elif method in NOISE_OFF_METHOD:
                method = NOISE_OFF_METHOD[method]
            else:
                diffusion = ZeroDiffusion()
        common = dict(
            h=h,
            method=method,
            diffusion=diffusion,
            rtol=self.solver.rtol,
            atol=self.solver.atol,
            path_seed=None if not noise or self.path_seed is None else path_seed(self.path_seed, self.index, k),
            stats=self.stats,
            recording=self._recording,
        )
        if self.frozen is not None:
            return BlockInterval(ts=tuple(self.frozen[k]), adaptive=False, **common)
        adjoint = self.solver.adjoint and not self.direct_backprop
        dt = None if is_adaptive(method) else h / self.steps_per_block
        return BlockInterval(ts=(k * h, (k + 1) * h), dt=dt, adjoint=adjoint, **common)

    def evaluations_per_block(self) -> list[int | None]:
        """Drift evaluations each continuous block needs per forward pass.

        None where the count depends on the input (an adaptive method without a frozen
        grid, or implicit Adams, whose corrector iterates to convergence). Counted in a
        time independent of the number of steps (see
        [`BlockInterval.evaluations`][neuralsde.intervals.BlockInterval.evaluations]).
        """
        counts: list[int | None] = []
        for k in range(self.num_continuous):
            per_mode = [self.interval(k, noise).evaluations() for noise in ((False, True) if self.is_sde else (False,))]
            counts.append(None if None in per_mode else max(per_mode))
        return counts

    def reserve_activations(self) -> None:
        """Create the activation modules every drift evaluation of a forward pass uses.

        At most [`ActivationPool.MAX_SETS`][neuralsde.blocks.ActivationPool] sets per
        block; a solver needing more reuses them, which hook-based attributions refuse.
        """
        counts = iter(self.evaluations_per_block())
        for block, continuous in zip(self.blocks, self.continuous):
            n = next(counts) if continuous else 1
            block.acts.reserve(n if n is not None else 1)

    def freeze(self, grids: list[list[float]]) -> None:
        """Replay these step grids (one per continuous block) instead of adapting.

        Args:
            grids: for block ``k``, increasing times from ``k h`` to ``(k + 1) h``.
        """
        if len(grids) != self.num_continuous:
            raise ValueError(f"expected {self.num_continuous} grids, got {len(grids)}")
        h = self.h
        for k, grid in enumerate(grids):
            if not math.isclose(grid[0], k * h) or not math.isclose(grid[-1], (k + 1) * h) or len(grid) < 2:
                raise ValueError(f"grid {k} must run from {k * h} to {(k + 1) * h}, got {grid[0]} .. {grid[-1]}")
        self.frozen = [list(map(float, g)) for g in grids]
        self.reserve_activations()

    def record_grids(self) -> None:
        """Record the step grids of the next forward pass (read them from ``recorded``)."""
        self._recording = []

    def stop_recording(self) -> None:
        """Stop recording step grids; what was recorded is dropped."""
        self._recording = None

    @property
    def recorded(self) -> list[list[float]] | None:
        """The step grids recorded since [`record_grids`][neuralsde.stage.ContinuousStage.record_grids].

        One per continuous block.
        """
        return self._recording

    def drift(self, t: float, x: Tensor) -> Tensor:
        """G(X, W(t)): the drift at stage time ``t`` in ``[0, T]``.

        Block ``k`` owns ``[k h, (k + 1) h)``; ``t = T`` belongs to the last block. The
        block's module is not called (its hooks do not fire): this is the bare drift.

        Args:
            t: stage time.
            x: state, shape ``(B, C, H, W)`` (the shape inside the continuous blocks).

        Returns:
            dX/dt, shape ``(B, C, H, W)``.
        """
        blocks = self.continuous_blocks
        if not blocks:
            raise ValueError(f"stage {self.name!r} has no continuous blocks")
        k = min(int(float(t) / self.h), len(blocks) - 1)
        if float(t) < 0 or float(t) > self.horizon:
            raise ValueError(f"t must be in [0, {self.horizon}], got {float(t)}")
        blocks[k].acts.reset()
        return blocks[k].velocity(x, self.h)

    def _split(self) -> int:
        """Index of the first continuous block; every block from there on is one."""
        return self.continuous.index(True) if True in self.continuous else len(self.continuous)

    def transition(self, x: Tensor) -> Tensor:
        """The discrete blocks in front of the continuous dynamics (identity if none).

        ``stage(x) == stage.flow(stage.transition(x))``.
        """
        for block in self.transition_blocks:
            x = block(x)
        return x

    def flow(self, x: Tensor, *, check_finite: bool = True) -> Tensor:
        """The continuous dynamics alone: ``X(0) -> X(T)``, the map of Theorem 1.

        Each continuous block is called as a module for its own interval (see
        [`interval`][neuralsde.stage.ContinuousStage.interval]), so hooks on it fire
        once, and what a forward hook returns is the state the next block starts from.

        Args:
            x: state at stage time 0, shape ``(B, C, H, W)`` (after the transitions).
            check_finite: raise SolverError at the end if a block's output was not
                finite (one read back to the host); False leaves the check to the
                caller ([`check_finite`][neuralsde.stage.ContinuousStage.check_finite]).

        Returns:
            State at time T, same shape.

        Raises:
            SolverError: if the state stops being finite (names this stage).
        """
        self.stats.reset()
        noise = self.is_sde and self.noise
        track = not torch.compiler.is_compiling()  # tracing (compile, export): no tensor may be read back
        self._extrema = []
        for k, block in enumerate(self.continuous_blocks):
            try:
                x = block(x, interval=self.interval(k, noise))
            except SolverError as err:
                raise err.in_stage(self.name) from err
            if track:  # one operator per block; the flags are formed once, when read
                self._extrema.append(extrema(x))
        if check_finite:
            self.check_finite()
        return x

    def finite_flags(self) -> list[Tensor]:
        """Per continuous block, whether its output in the last forward pass was finite.

        0-d bool tensors on the state's device, not read back (empty under
        ``torch.compile``, which cannot read them back without breaking the graph).
        """
        return [all_finite(pair) for pair in self._extrema]

    def block_extrema(self) -> list[Tensor]:
        """Each continuous block's last output's smallest and largest element (0-d, in order)."""
        return [v for pair in self._extrema for v in pair]

    def check_finite(self) -> None:
        """Raise if a block's output in the last forward pass was not finite.

        Raises:
            SolverError: naming this stage, the end of the first block interval whose
                output was not finite, and the method.
        """
        if not (values := self.block_extrema()) or bool(all_finite(values)):  # none under torch.compile
            return
        k = [bool(f) for f in self.finite_flags()].index(False)
        since = f" (finite at t={k * self.h:.6g})" if k > 0 else ""
        method = self.interval(k).method
        raise SolverError(
            f"the state stopped being finite{since}", method=method, time=(k + 1) * self.h, stage=self.name
        )

    def forward(self, x: Tensor, *, check_finite: bool = True) -> Tensor:
        """Apply the stage: the discrete transitions, then the continuous dynamics.

        Args:
            x: input, shape ``(B, C_in, H, W)``.
            check_finite: as for [`flow`][neuralsde.stage.ContinuousStage.flow] (a model
                checks all its stages at once, at the end of its forward pass).

        Returns:
            Output, shape ``(B, C_out, H', W')``.

        Raises:
            SolverError: if the state stops being finite (names this stage).
        """
        return self.flow(self.transition(x), check_finite=check_finite)

    def extra_repr(self) -> str:
        kind = f"sde, diffusion={self.diffusion.kind}" if self.is_sde else "ode"
        return (
            f"name={self.name!r}, {kind}, method={self.method!r}, steps_per_block={self.steps_per_block}, "
            f"T={self.horizon}, continuous={self.continuous}"
        )
