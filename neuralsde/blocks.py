"""Residual blocks whose every evaluation has activation modules of its own.

A block is torchvision's BasicBlock or Bottleneck with the same parameter names
(``conv1``, ``bn1``, ..., ``downsample.0``, ``downsample.1``), so state dicts move between
the two unchanged. What differs is the activations: torchvision calls one ``self.relu``
several times per block, and an ODE solver calls a block many times per forward pass.
Captum's DeepLift hooks each activation module and needs every module to be called once
per forward pass (a module called twice makes it fail; a functional ``F.relu`` silently
gets a plain gradient). So each evaluation takes a fresh set of ``nn.ReLU`` modules from
an [`ActivationPool`][neuralsde.blocks.ActivationPool]; the modules hold no weights, so nothing is duplicated.

Inside a continuous stage a shape-preserving block is a time step: called with the
[BlockInterval][neuralsde.intervals.BlockInterval] it owns, its forward integrates its
drift over that interval, so hooks on the block fire once per forward pass with the state
entering the interval and the state leaving it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn

__all__ = ["ActivationPool", "BlockDrift", "Interval", "ResBlock", "has_hooks"]


def has_hooks(module: nn.Module) -> bool:
    """Whether a hook (forward, forward pre-, backward or backward pre-) is registered on ``module`` or inside it.

    The one scan every hook check of the library uses: an attribution method's hooks
    may sit on any submodule, and Captum's layer methods register backward hooks too.
    """
    return any(
        m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks for m in module.modules()
    )


class Interval(Protocol):
    """How a block integrates its time interval (the stage's
    [BlockInterval][neuralsde.intervals.BlockInterval]): what a block's forward needs of it."""

    def solve(self, block: ResBlock, x: Tensor) -> Tensor:
        """The state at the interval's end, from ``x`` at its start."""


def _inplace_relu() -> nn.Module:
    # In place, as torchvision does: the input is always a fresh temporary used once.
    # Captum's DeepLift copies the input in a pre-hook before the module runs.
    return nn.ReLU(inplace=True)


class ActivationPool(nn.Module):
    """Activation modules handed out a fresh set per evaluation.

    ``take()`` returns the next set of ``per_call`` modules; ``reset()`` (called at the
    start of every forward pass of the owning block) starts handing them out from the
    beginning again. The owning stage [reserves][neuralsde.blocks.ActivationPool.reserve]
    as many sets as one forward pass needs, before attribution hooks are registered. A
    pass that needs more (an adaptive method on an unfrozen grid) reuses the sets from
    the first one again, which is harmless without hooks and refused with them.

    Args:
        per_call: modules per evaluation.
        factory: builds one activation module.
    """

    #: The most sets reserved for one forward pass: a solver needing more evaluations
    #: per block interval reuses them (hook-based attributions then refuse to run).
    MAX_SETS = 1024

    def __init__(self, per_call: int, factory: Callable[[], nn.Module] | None = None):
        super().__init__()
        self.per_call = per_call
        self.factory = factory if factory is not None else _inplace_relu
        self.sets = nn.ModuleList([self._new_set()])
        self.cursor = 0
        self.wanted = 1

    def _new_set(self) -> nn.ModuleList:
        return nn.ModuleList(self.factory() for _ in range(self.per_call))

    def reset(self) -> None:
        """Start handing out sets from the first one again."""
        self.cursor = 0

    def hooked(self) -> bool:
        """Whether hooks (an attribution method's) are registered on the pool's modules."""
        return has_hooks(self.sets)

    def take(self) -> nn.ModuleList:
        """The next set of ``per_call`` activation modules.

        Raises:
            RuntimeError: if the reserved sets are used up while hooks are registered on
                them: reusing a hooked module makes Captum's DeepLift fail, and a new,
                unhooked one would silently be treated with plain gradients.
        """
        if self.cursor == len(self.sets):
            if self.hooked():
                raise RuntimeError(self._exhausted())
            self.cursor = 0
        acts = self.sets[self.cursor]
        self.cursor += 1
        return acts

    def _exhausted(self) -> str:
        if self.wanted > len(self.sets):
            return (
                f"the solver needs {self.wanted} drift evaluations per block interval, more than the "
                f"{self.MAX_SETS} sets of activation modules a block prepares, while attribution hooks are "
                "registered on them; use fewer steps per block for hook-based attributions"
            )
        return (
            "this forward pass needs more drift evaluations than the model prepared activation modules for "
            f"({len(self.sets)}), while attribution hooks are registered on them. Adaptive solvers choose "
            "their steps per input: call model.freeze_grid(inputs) before attributing, or use a fixed-step "
            "method."
        )

    def reserve(self, n: int) -> None:
        """Make sure ``n`` sets exist (at most ``MAX_SETS``), for hooks registered before a forward pass.

        Args:
            n: the drift evaluations one forward pass of the owning block needs.
        """
        self.wanted = max(int(n), 1)
        while len(self.sets) < min(self.wanted, self.MAX_SETS):
            self.sets.append(self._new_set())

    def __repr__(self) -> str:
        return f"ActivationPool(per_call={self.per_call}, sets={len(self.sets)})"


class ResBlock(nn.Module):
    """torchvision's BasicBlock (``conv3 is None``) or Bottleneck, post-activation.

    ``forward(x) = relu(identity(x) + R(x))`` with ``identity`` the downsample branch or
    ``x`` itself, exactly as torchvision computes it. As a time step of a continuous stage
    the block defines the drift ``velocity(x, h) = (forward(x) - x) / h``: one Euler step
    of length ``h`` reproduces the block.

    Args:
        conv1: the first convolution.
        bn1: its normalisation.
        conv2: the second convolution.
        bn2: its normalisation.
        conv3: the third convolution of a bottleneck block, or None.
        bn3: its normalisation, or None.
        downsample: the projection of the identity branch, or None.
    """

    def __init__(
        self,
        conv1: nn.Module,
        bn1: nn.Module,
        conv2: nn.Module,
        bn2: nn.Module,
        conv3: nn.Module | None = None,
        bn3: nn.Module | None = None,
        downsample: nn.Module | None = None,
    ):
        super().__init__()
        self.conv1, self.bn1, self.conv2, self.bn2 = conv1, bn1, conv2, bn2
        self.conv3, self.bn3 = conv3, bn3
        self.downsample = downsample
        self.bottleneck = conv3 is not None
        self.acts = ActivationPool(3 if self.bottleneck else 2)

    @classmethod
    def from_torchvision(cls, block: nn.Module) -> ResBlock:
        """Wrap the layers of a torchvision BasicBlock or Bottleneck (shared, not copied)."""
        return cls(
            block.conv1,
            block.bn1,
            block.conv2,
            block.bn2,
            getattr(block, "conv3", None),
            getattr(block, "bn3", None),
            block.downsample,
        )

    @property
    def in_channels(self) -> int:
        return self.conv1.in_channels

    @property
    def out_channels(self) -> int:
        last = self.conv3 if self.bottleneck else self.conv2
        return last.out_channels

    @property
    def shape_preserving(self) -> bool:
        """True if the block maps a state to one of the same shape (it can be a time step)."""
        strided = any(getattr(c, "stride", (1, 1)) != (1, 1) for c in (self.conv1, self.conv2, self.conv3) if c)
        return self.downsample is None and not strided and self.in_channels == self.out_channels

    def apply_block(self, x: Tensor, acts: nn.ModuleList) -> Tensor:
        """The block's output ``relu(identity(x) + R(x))`` with the given activations.

        Args:
            x: input, shape ``(B, C_in, H, W)``.
            acts: ``per_call`` activation modules, each used once.

        Returns:
            Output, shape ``(B, C_out, H', W')``.
        """
        out = acts[0](self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.bottleneck:
            out = self.bn3(self.conv3(acts[1](out)))
        identity = x if self.downsample is None else self.downsample(x)
        out += identity  # out is a fresh normalisation output that nothing else keeps
        return acts[-1](out)

    def forward(self, x: Tensor, interval: Interval | None = None) -> Tensor:
        """The discrete block, or the flow of its drift over its time interval.

        A continuous stage calls each of its blocks as a module, ``block(x,
        interval=...)``, so forward hooks on the block see the state entering its
        interval and the state at its end (and may replace it), whatever the solver.

        Args:
            x: input, shape ``(B, C, H, W)``.
            interval: None for the discrete block, as torchvision computes it; else how
                to integrate [`velocity`][neuralsde.blocks.ResBlock.velocity] over the
                block's time interval (a
                [BlockInterval][neuralsde.intervals.BlockInterval], set by the stage).

        Returns:
            The block's output, or the state at the end of its interval; shape
            ``(B, C', H', W')``.
        """
        self.acts.reset()  # every forward pass takes its activation modules from the first set
        if interval is None:
            return self.apply_block(x, self.acts.take())
        return interval.solve(self, x)

    def velocity(self, x: Tensor, h: float = 1.0) -> Tensor:
        """The drift ``(block(x) - x) / h`` of a shape-preserving block.

        Args:
            x: state, shape ``(B, C, H, W)``.
            h: the length of the time interval the block owns.

        Returns:
            dX/dt, shape ``(B, C, H, W)``.
        """
        v = self.apply_block(x, self.acts.take()) - x
        return v if h == 1.0 else v.div_(h)

    def step(self, x: Tensor, fraction: float = 1.0) -> Tensor:
        """An Euler step of length ``fraction * h`` of [`velocity`][neuralsde.blocks.ResBlock.velocity] ``(x, h)``.

        ``x + fraction * (block(x) - x)``, computed as one ``lerp``; a whole step
        (``fraction == 1``) is the block itself, with no pass over the state beyond it.

        Args:
            x: state, shape ``(B, C, H, W)``.
            fraction: step length divided by the interval ``h`` the block owns.

        Returns:
            The state after the step, shape ``(B, C, H, W)``.
        """
        out = self.apply_block(x, self.acts.take())
        # A step computed as the difference of two grid points can miss h by an ulp.
        return out if math.isclose(fraction, 1.0, rel_tol=1e-12) else torch.lerp(x, out, fraction)


class BlockDrift:
    """The drift ``(block(x) - x) / h`` of one block's interval, with the block's own Euler step.

    What [`integrate`][neuralsde.solvers.integrate] is given as the drift of a block
    interval: a callable ``(t, y)`` and, for Euler and Euler–Maruyama, ``euler_step``
    (see [`ResBlock.step`][neuralsde.blocks.ResBlock.step]).

    Args:
        block: the block.
        h: the length of the time interval the block owns.
    """

    def __init__(self, block: ResBlock, h: float):
        self.block, self.h = block, h

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        return self.block.velocity(y, self.h)

    def euler_step(self, t: Tensor, y: Tensor, dt: float) -> Tensor:
        return self.block.step(y, dt / self.h)
