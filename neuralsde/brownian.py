"""Brownian paths for the fixed-grid SDE solvers.

[`GridBrownian`][neuralsde.brownian.GridBrownian] is the default path of
[`integrate`][neuralsde.solvers.integrate]: one Gaussian per step, drawn from torch's
generator. [`brownian_interval`][neuralsde.brownian.brownian_interval] gives torchsde's
``BrownianInterval``, queryable at any time, seeded from torch's generator too.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence

import torch
import torchsde
from torch import Tensor

__all__ = ["GridBrownian", "brownian_interval"]


class GridBrownian(torchsde.BaseBrownian):
    """A Brownian path known exactly at the points of a fixed time grid.

    Its increments over consecutive grid intervals are independent Gaussians
    ``N(0, dt_k)``, drawn from torch's generator (so ``torch.manual_seed`` reproduces
    them) when an interval is first queried; ``W(t_j) - W(t_i)`` for two grid points is
    the sum of the increments between them. That is a correct Brownian path observed on
    the grid, at the cost of one ``randn`` per step, which is all a fixed-step method
    asks for. Queries between grid points are refused.

    The grid is kept in double precision whatever the dtype of the increments (a
    half-precision grid would merge or move nearby times); a query matches the nearest
    grid point if it is that point rounded to float32 or finer.

    With ``levy_area="space-time"`` it also carries the space-time Lévy area of each
    interval, ``H ~ N(0, dt/12)`` independent of the increment, which torchsde's SRK
    method needs.

    Args:
        grid: increasing times, the points where the path is known.
        shape: ``(batch, noise_dims)``, the shape of one increment.
        dtype: floating dtype of the increments.
        device: device of the increments.
        levy_area: ``"none"`` or ``"space-time"``.
        generator: a torch.Generator; None for torch's default one.
        keep: keep every increment drawn, so any later query is consistent with earlier
            ones. With ``keep=False`` (used by [`integrate`][neuralsde.solvers.integrate], whose steps move
            forward) only the latest interval is kept, which bounds memory by one state,
            and querying an earlier interval again raises.
        shared: draw one path of shape ``(1, noise_dims)`` and give it to every batch
            element (common random numbers: every sample sees the same noise).
        zero: the path that stays at 0, drawing nothing: what a solver needs to run an
            SDE method with a diffusion that is zero (a stage at sigma = 0, or its noise
            off, under a method with no ODE twin), whose increments would only be
            multiplied by 0.
    """

    __slots__ = (
        "_grid",
        "_index",
        "_shape",
        "_dtype",
        "_device",
        "_levy",
        "_generator",
        "_keep",
        "_cache",
        "_released",
        "_shared",
        "_zero",
        "queries",
    )

    def __init__(
        self,
        grid: Sequence[float],
        shape: Sequence[int],
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
        levy_area: str = "none",
        generator: torch.Generator | None = None,
        keep: bool = True,
        shared: bool = False,
        zero: bool = False,
    ):
        if levy_area not in ("none", "space-time"):
            raise ValueError(f"levy_area must be 'none' or 'space-time', got {levy_area!r}")
        if len(shape) != 2:
            raise ValueError(f"shape must be (batch, noise_dims), got {tuple(shape)}")
        self._grid = [float(t) for t in grid]
        if len(self._grid) < 2 or any(b <= a for a, b in zip(self._grid[:-1], self._grid[1:])):
            raise ValueError(f"grid must hold at least two strictly increasing times, got {self._grid}")
        self._index = {t: i for i, t in enumerate(self._grid)}
        self._shape = tuple(int(s) for s in shape)
        self._dtype = dtype
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._levy = levy_area
        self._generator = generator
        self._keep = keep
        self._shared = shared
        self._zero = bool(zero)
        self._cache: dict[int, tuple[Tensor, Tensor | None]] = {}
        self._released = -1
        self.queries = 0

    def _position(self, t) -> int:
        key = float(t)
        i = self._index.get(key)
        if i is None:
            # A grid time rounded to float32 (a solver's time tensor) still names it.
            j = bisect.bisect_left(self._grid, key)
            near = [n for n in (j - 1, j) if 0 <= n < len(self._grid)]
            best = min(near, key=lambda n: abs(self._grid[n] - key))
            if abs(self._grid[best] - key) <= 1e-7 * max(1.0, abs(key)):
                i = best
        if i is None:
            raise ValueError(
                f"GridBrownian knows the path only at its grid points {self._grid}; got t={key}. "
                "Use a fixed-step method on this grid, or pass a torchsde.BrownianInterval as bm."
            )
        return i

    def _gaussian(self, std: float) -> Tensor:
        if self._zero:
            return torch.zeros((), dtype=self._dtype, device=self._device).expand(self._shape)
        shape = (1, self._shape[1]) if self._shared else self._shape
        z = torch.empty(shape, dtype=self._dtype, device=self._device)
        z.normal_(0.0, std, generator=self._generator)  # scaled inside the sampler: one pass
        return z.expand(self._shape) if self._shared else z

    def _interval(self, k: int) -> tuple[Tensor, Tensor | None]:
        hit = self._cache.get(k)
        if hit is not None:
            return hit
        if k <= self._released:
            raise ValueError(f"grid interval {k} of this GridBrownian was released (keep=False)")
        h = self._grid[k + 1] - self._grid[k]
        W = self._gaussian(math.sqrt(h))
        H = self._gaussian(math.sqrt(h / 12.0)) if self._levy == "space-time" else None
        if not self._keep:
            self._released = max(self._released, *self._cache) if self._cache else self._released
            self._cache.clear()
        self._cache[k] = (W, H)
        return W, H

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if return_A:
            raise ValueError("GridBrownian carries no space-space Lévy area; use torchsde.BrownianInterval")
        if tb is None:
            ta, tb = self._grid[0], ta
        i, j = self._position(ta), self._position(tb)
        if j < i:
            raise ValueError(f"GridBrownian queried backwards in time: ({float(ta)}, {float(tb)})")
        self.queries += 1
        if j == i:
            W = torch.zeros((), dtype=self._dtype, device=self._device).expand(self._shape)
        elif j == i + 1:
            W = self._interval(i)[0]
        else:
            W = sum(self._interval(k)[0] for k in range(i, j))
        if not return_U:
            return W
        if self._levy != "space-time":
            raise ValueError("this GridBrownian was made without a space-time Lévy area (levy_area='space-time')")
        if j != i + 1:
            raise ValueError("the space-time Lévy area is only known over one grid interval")
        h = self._grid[j] - self._grid[i]
        U = h * (0.5 * W + self._interval(i)[1])
        return W, U

    def __repr__(self) -> str:
        return f"GridBrownian(steps={len(self._grid) - 1}, shape={self._shape}, levy_area={self._levy!r})"

    @property
    def t0(self) -> float:
        """The first grid time."""
        return self._grid[0]

    @property
    def t1(self) -> float:
        """The last grid time."""
        return self._grid[-1]

    @property
    def dtype(self):
        return self._dtype

    @property
    def device(self):
        return self._device

    @property
    def shape(self):
        return self._shape

    @property
    def levy_area_approximation(self):
        return self._levy


def brownian_interval(
    y0: Tensor,
    t0: float,
    t1: float,
    *,
    levy_area: str = "none",
    generator: torch.Generator | None = None,
) -> torchsde.BrownianInterval:
    """A torchsde BrownianInterval over ``[t0, t1]`` for states shaped like ``y0``.

    The path can be queried at any times, so one path can drive solves at several step
    sizes (convergence studies). Its entropy is drawn from torch's generator, not NumPy's,
    so ``torch.manual_seed`` reproduces it.

    Args:
        y0: the initial state, shape ``(B, *S)``; the path has shape ``(B, prod(S))``.
        t0: start time.
        t1: end time.
        levy_area: torchsde's Lévy area approximation ("none", "space-time", ...).
        generator: a torch.Generator; None for torch's default one.
    """
    entropy = int(torch.randint(0, 2**62, (1,), generator=generator).item())
    size = (y0.shape[0], int(math.prod(y0.shape[1:])))
    return torchsde.BrownianInterval(
        t0=float(t0),
        t1=float(t1),
        size=size,
        dtype=y0.dtype,
        device=y0.device,
        entropy=entropy,
        levy_area_approximation=levy_area,
    )
