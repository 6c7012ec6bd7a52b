"""One solver-agnostic entry point for neural ODEs and Itô SDEs.

``integrate(drift, y0, ts)`` solves ``dy/dt = drift(t, y)`` with torchdiffeq's methods;
``integrate(drift, y0, ts, diffusion=sigma)`` solves the Itô SDE with diagonal noise
``dy = drift(t, y) dt + sigma(t, y) dB`` with torchsde's. The state may have any shape
with the batch first, e.g. ``(B, C, H, W)``; torchsde's 2-D view is made here.

Fixed-step methods step exactly on a grid that contains every time in ``ts``: each
interval ``[ts[i], ts[i+1]]`` is cut into ``ceil(len / dt)`` equal steps (one step per
interval when ``dt`` is None). There is no accumulated round-off in the step times, so a
drift that is piecewise constant in time between the ``ts`` is integrated exactly piece
by piece.

The steps are torchdiffeq's and torchsde's, with one exception: the fixed-grid Euler and
Euler–Maruyama step ``y + dt f + sigma dW`` is written here (see ``_fixed_grid_euler``),
so that a drift can supply its own Euler step and the state is not flattened; the tests
pin it to both libraries' steps. For the other methods on fixed grids this module
walks the grid and calls the libraries' step functions (each solver object's
``_step_func`` / ``step``) rather than their ``odeint`` / ``sdeint`` loops: those loops
copy every output state, linearly interpolate onto ``ts`` even when a step lands on it,
and (torchdiffeq) take ``y.abs()`` of the whole state at every evaluation, which together
cost about as much as the residual additions themselves at ResNet scale. Adaptive and
adjoint solves go through ``torchdiffeq.odeint`` / ``odeint_adjoint`` unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torchdiffeq
import torchsde
from einops import rearrange
from torch import Tensor, nn
from torchdiffeq._impl.odeint import SOLVERS as _ODE_SOLVERS
from torchdiffeq._impl.rk_common import _ButcherTableau, _runge_kutta_step
from torchsde._core.base_sde import ForwardSDE as _ForwardSDE
from torchsde._core.methods import select as _select_sde_solver

__all__ = [
    "ADAPTIVE_ODE_METHODS",
    "FIXED_ODE_METHODS",
    "ODE_METHODS",
    "SDE_METHODS",
    "GridBrownian",
    "SolverError",
    "SolverStats",
    "brownian_interval",
    "integrate",
    "is_adaptive",
    "solve",
    "step_grid",
]

FIXED_ODE_METHODS: tuple[str, ...] = (
    "euler",
    "midpoint",
    "heun2",
    "heun3",
    "rk4",
    "explicit_adams",
    "implicit_adams",
)
ADAPTIVE_ODE_METHODS: tuple[str, ...] = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")
ODE_METHODS: tuple[str, ...] = FIXED_ODE_METHODS + ADAPTIVE_ODE_METHODS
#: Itô methods of torchsde for diagonal noise. ``"euler"`` is Euler–Maruyama.
SDE_METHODS: tuple[str, ...] = ("euler", "milstein", "srk")
#: SDE methods whose correction terms are only right for an element-wise diffusion.
ELEMENTWISE_ONLY_SDE_METHODS: tuple[str, ...] = ("milstein", "srk")


class SolverError(RuntimeError):
    """A numerical failure during integration (non-finite state, step-size underflow).

    Attributes:
        method: the solver method.
        time: the time at which the failure was detected (None if unknown).
        stage: the name of the model stage being integrated (None outside a model).
    """

    def __init__(self, reason: str, *, method: str, time: float | None = None, stage: str | None = None):
        self.reason = reason
        self.method = method
        self.time = time
        self.stage = stage
        where = f"stage {stage!r}, " if stage is not None else ""
        when = f"t={time:.6g}, " if time is not None else ""
        super().__init__(f"{where}{when}method {method!r}: {reason}")

    def in_stage(self, stage: str) -> SolverError:
        """Return the same error, naming the model stage it happened in."""
        return SolverError(self.reason, method=self.method, time=self.time, stage=stage)


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


def is_adaptive(method: str) -> bool:
    """Whether ``method`` chooses its own steps (adaptive ODE methods)."""
    return method in ADAPTIVE_ODE_METHODS


def check_method(method: str, sde: bool) -> None:
    """Raise ValueError unless ``method`` is a valid ODE (or SDE) method name."""
    valid = SDE_METHODS if sde else ODE_METHODS
    if method not in valid:
        kind = "SDE" if sde else "ODE"
        raise ValueError(f"unknown {kind} method {method!r}; valid {kind} methods: {', '.join(valid)}")


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


def _as_times(ts: Tensor | Sequence[float]) -> list[float]:
    values = ts.detach().cpu().tolist() if torch.is_tensor(ts) else [float(t) for t in ts]
    if len(values) < 2:
        raise ValueError(f"ts needs at least two times, got {len(values)}")
    if any(not math.isfinite(t) for t in values):
        raise ValueError(f"ts must be finite, got {values}")
    if any(b <= a for a, b in zip(values[:-1], values[1:])):
        raise ValueError(f"ts must be strictly increasing, got {values}")
    return values


def _flat_pattern(shape: torch.Size) -> tuple[str, str, dict[str, int]]:
    """einops patterns flattening ``(B, *rest)`` to ``(B, prod(rest))`` and back."""
    names = [f"d{i}" for i in range(len(shape) - 1)]
    sizes = dict(zip(names, shape[1:]))
    full = "b " + " ".join(names)
    flat = "b (" + " ".join(names) + ")"
    return full, flat, sizes


class _Memo:
    """Evaluates ``fn(t, y)`` once per (t, y) pair within one solve.

    torchsde evaluates the drift and diffusion at ``(ts[0], y0)`` to check shapes before
    stepping, and its SRK step re-evaluates stage values it already has; both would cost
    whole network evaluations. Entries hold ``y`` itself, so an ``id`` is never reused
    while its entry lives; the memo is cleared after every solve.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]):
        self.fn = fn
        self.entries: dict[tuple[float, int], tuple[Tensor, int, Tensor]] = {}

    def __call__(self, t: Tensor, y: Tensor) -> tuple[Tensor, bool]:
        key = (float(t), id(y))
        hit = self.entries.get(key)
        if hit is not None and hit[0] is y and hit[1] == y._version:
            return hit[2], False
        out = self.fn(t, y)
        self.entries[key] = (y, y._version, out)
        return out, True

    def clear(self) -> None:
        self.entries.clear()


class _ODEFunc(nn.Module):
    """torchdiffeq's view of the drift: counts evaluations and steps, checks shapes."""

    def __init__(self, drift: Callable[[Tensor, Tensor], Tensor], stats: SolverStats, adaptive: bool):
        super().__init__()
        # Registering a Module drift (or the Module behind a bound method) lets
        # odeint_adjoint find its parameters.
        owner = drift if isinstance(drift, nn.Module) else getattr(drift, "__self__", None)
        self.owner = owner if isinstance(owner, nn.Module) else None
        self.drift = drift
        self.stats = stats
        self.adaptive = adaptive

    def forward(self, t: Tensor, y: Tensor, perturb=None) -> Tensor:
        # ``perturb`` is torchdiffeq's hint for step functions called directly; the
        # drifts here are continuous within a solve, so it is not needed.
        self.stats.nfe += 1
        out = self.drift(t, y)
        if out.shape != y.shape:
            raise ValueError(f"drift(t, y) must return y's shape {tuple(y.shape)}, got {tuple(out.shape)}")
        return out

    def callback_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        if not self.adaptive:
            self.stats.steps += 1


class _AdaptiveODEFunc(_ODEFunc):
    """Adds the accept/reject callbacks that only torchdiffeq's adaptive solvers call."""

    def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.stats.steps += 1
        if self.stats.times is not None:
            self.stats.times.append(float(t0 + dt))

    def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.stats.rejected += 1


class _SDEFunc(nn.Module):
    """torchsde's view of an Itô SDE with diagonal noise on a flattened state."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, drift, diffusion, shape: torch.Size, stats: SolverStats):
        super().__init__()
        self.full, self.flat, self.sizes = _flat_pattern(shape)
        self.shape = shape
        self.stats = stats
        self._drift = _Memo(self._eval_drift)
        self._diffusion = _Memo(self._eval_diffusion)
        self.drift = drift
        self.diffusion = diffusion

    def _unflatten(self, y: Tensor) -> Tensor:
        return rearrange(y, f"{self.flat} -> {self.full}", **self.sizes)

    def _flatten(self, y: Tensor) -> Tensor:
        return rearrange(y, f"{self.full} -> {self.flat}")

    def _eval_drift(self, t: Tensor, y: Tensor) -> Tensor:
        out = self.drift(t, self._unflatten(y))
        if out.shape != self.shape:
            raise ValueError(f"drift(t, y) must return y's shape {tuple(self.shape)}, got {tuple(out.shape)}")
        return self._flatten(out)

    def _eval_diffusion(self, t: Tensor, y: Tensor) -> Tensor:
        out = self.diffusion(t, self._unflatten(y))
        if out.shape != self.shape:
            # A state-independent sigma may come back as a broadcastable tensor.
            try:
                out = out.expand(self.shape)
            except RuntimeError:
                raise ValueError(
                    f"diffusion(t, y) must return y's shape {tuple(self.shape)}, got {tuple(out.shape)}"
                ) from None
        return self._flatten(out)

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        out, fresh = self._drift(t, y)
        self.stats.nfe += fresh
        return out

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        out, fresh = self._diffusion(t, y)
        self.stats.nfe_diffusion += fresh
        return out

    def clear(self) -> None:
        self._drift.clear()
        self._diffusion.clear()


class GridBrownian(torchsde.BaseBrownian):
    """A Brownian path known exactly at the points of a fixed time grid.

    Its increments over consecutive grid intervals are independent Gaussians
    ``N(0, dt_k)``, drawn from torch's generator (so ``torch.manual_seed`` reproduces
    them) when an interval is first queried; ``W(t_j) - W(t_i)`` for two grid points is
    the sum of the increments between them. That is a correct Brownian path observed on
    the grid, at the cost of one ``randn`` per step, which is all a fixed-step method
    asks for. Queries between grid points are refused.

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
            ones. With ``keep=False`` (used by :func:`integrate`, whose steps move
            forward) only the latest interval is kept, which bounds memory by one state,
            and querying an earlier interval again raises.
        shared: draw one path of shape ``(1, noise_dims)`` and give it to every batch
            element (common random numbers: every sample sees the same noise).
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
    ):
        if levy_area not in ("none", "space-time"):
            raise ValueError(f"levy_area must be 'none' or 'space-time', got {levy_area!r}")
        if len(shape) != 2:
            raise ValueError(f"shape must be (batch, noise_dims), got {tuple(shape)}")
        self._grid = torch.tensor([float(t) for t in grid], dtype=dtype).tolist()
        if len(self._grid) < 2 or any(b <= a for a, b in zip(self._grid[:-1], self._grid[1:])):
            raise ValueError("grid must hold at least two strictly increasing times (after rounding to dtype)")
        self._index = {t: i for i, t in enumerate(self._grid)}
        self._shape = tuple(int(s) for s in shape)
        self._dtype = dtype
        self._device = torch.device(device) if device is not None else torch.device("cpu")
        self._levy = levy_area
        self._generator = generator
        self._keep = keep
        self._shared = shared
        self._cache: dict[int, tuple[Tensor, Tensor | None]] = {}
        self._released = -1
        self.queries = 0

    def _position(self, t) -> int:
        key = float(t)
        i = self._index.get(key)
        if i is None:
            raise ValueError(
                f"GridBrownian knows the path only at its grid points {self._grid}; got t={key}. "
                "Use a fixed-step method on this grid, or pass a torchsde.BrownianInterval as bm."
            )
        return i

    def _gaussian(self, std: float) -> Tensor:
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


def _diffusion_is_elementwise(diffusion) -> bool:
    return bool(getattr(diffusion, "elementwise", True))


def _check_finite(ys: list[Tensor], times: Sequence[float], method: str) -> None:
    # One reduction: a NaN or an infinity anywhere makes the sum non-finite (so does a
    # sum past the dtype's range, itself a blow-up).
    if bool(torch.isfinite(ys[-1].sum())):
        return
    finite = [bool(torch.isfinite(y.sum())) for y in ys]
    bad = finite.index(False) if False in finite else len(finite) - 1
    since = f" (finite at t={times[bad - 1]:.6g})" if bad > 0 else ""
    raise SolverError(f"the state stopped being finite{since}", method=method, time=times[bad])


def integrate(
    drift: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    ts: Tensor | Sequence[float],
    *,
    diffusion: Callable[[Tensor, Tensor], Tensor] | None = None,
    method: str = "euler",
    dt: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    adjoint: bool = False,
    bm: torchsde.BaseBrownian | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
    stats: SolverStats | None = None,
    check_finite: bool = True,
    options: dict | None = None,
    adaptive: bool = True,
) -> Tensor:
    """Integrate an ODE (torchdiffeq) or an Itô SDE with diagonal noise (torchsde).

    Args:
        drift: ``drift(t, y) -> dy/dt``; takes and returns tensors of ``y0``'s shape.
            A drift may also have a method ``euler_step(t, y, dt)`` returning
            ``y + dt * drift(t, y)`` computed its own way (fewer passes over the
            state); the Euler and Euler–Maruyama steps then call it instead.
        y0: initial state, shape ``(B, *S)`` with the batch first, e.g. ``(B, C, H, W)``.
        ts: increasing times; the solution is returned at each of them.
        diffusion: ``diffusion(t, y) -> sigma``, the diagonal noise coefficient, of
            ``y0``'s shape (or broadcastable to it). None solves the ODE. A plain
            callable is taken to be element-wise (``sigma_i`` depends on ``y_i`` only);
            a module can say otherwise with an ``elementwise`` attribute, and the
            Milstein and SRK methods refuse a diffusion that is not element-wise.
        method: an ODE method (``ODE_METHODS``: euler, midpoint, heun2, heun3, rk4,
            explicit_adams, implicit_adams, dopri5, dopri8, bosh3, fehlberg2,
            adaptive_heun) or, with a diffusion, an Itô SDE method (``SDE_METHODS``:
            euler = Euler–Maruyama, milstein, srk).
        dt: for fixed-step methods the largest step: each interval of ``ts`` is cut into
            ``ceil(length / dt)`` equal steps; None takes one step per interval. For
            adaptive methods, the first step tried.
        rtol: relative tolerance of adaptive ODE methods.
        atol: absolute tolerance of adaptive ODE methods.
        adjoint: back-propagate with torchdiffeq's adjoint method (ODE only). The
            parameters are ``adjoint_params`` if given, else those of ``drift`` when it
            is a module or a bound method of one.
        bm: a torchsde Brownian object of shape ``(B, prod(S))`` to drive the SDE, e.g.
            from :func:`brownian_interval`. None draws the path on the step grid from
            torch's generator.
        adjoint_params: the parameters the adjoint pass differentiates (ODE only).
        stats: if given, the solve's steps and evaluation counts are added to it.
        check_finite: raise SolverError if the final state is not finite.
        options: extra options passed to the torchdiffeq solver. The Adams methods
            default to ``max_order=5`` (fourth order): torchdiffeq's own default of 12
            is unstable even on mild problems.
        adaptive: with False, an adaptive method takes exactly the steps of the fixed
            grid (``ts`` cut by ``dt``) with its own Runge–Kutta tableau and no error
            control: how a step grid found once is replayed on other inputs.

    Returns:
        The states at ``ts``, shape ``(len(ts), *y0.shape)``.

    Raises:
        ValueError: for an unknown method, a bad ``ts``, or a diffusion that the method
            cannot handle.
        SolverError: if the state stops being finite or an adaptive step size underflows.
    """
    states = solve(
        drift,
        y0,
        ts,
        diffusion=diffusion,
        method=method,
        dt=dt,
        rtol=rtol,
        atol=atol,
        adjoint=adjoint,
        bm=bm,
        adjoint_params=adjoint_params,
        stats=stats,
        check_finite=check_finite,
        options=options,
        adaptive=adaptive,
    )
    return torch.stack(states)


def solve(
    drift: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    ts: Tensor | Sequence[float],
    *,
    diffusion: Callable[[Tensor, Tensor], Tensor] | None = None,
    method: str = "euler",
    dt: float | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    adjoint: bool = False,
    bm: torchsde.BaseBrownian | None = None,
    adjoint_params: Sequence[Tensor] | None = None,
    stats: SolverStats | None = None,
    check_finite: bool = True,
    options: dict | None = None,
    adaptive: bool = True,
) -> list[Tensor]:
    """:func:`integrate`, returning the states at ``ts`` as a list (no stacking copy).

    Takes the same arguments as :func:`integrate`.
    """
    if not torch.is_tensor(y0) or y0.dim() < 1:
        raise ValueError(f"y0 must be a tensor with the batch first, got {type(y0).__name__}")
    if not y0.is_floating_point():
        raise ValueError(f"y0 must be floating point, got dtype {y0.dtype}")
    if dt is not None and not dt > 0:
        raise ValueError(f"dt must be positive, got {dt}")
    times = _as_times(ts)
    local = SolverStats(method=method, times=[] if stats is not None and stats.times is not None else None)
    if diffusion is None:
        check_method(method, sde=False)
        if adjoint and not adaptive:
            raise ValueError("adaptive=False replays a fixed grid and back-propagates directly; no adjoint")
        if adjoint or (adaptive and is_adaptive(method)):
            ys = _odeint(drift, y0, times, method, dt, rtol, atol, adjoint, adjoint_params, local, options)
        else:
            ys = _fixed_grid_ode(drift, y0, times, method, dt, rtol, atol, local, options)
    else:
        check_method(method, sde=True)
        if adjoint:
            raise ValueError("adjoint=True is available for ODE solves only; SDE solves back-propagate directly")
        if method in ELEMENTWISE_ONLY_SDE_METHODS and not _diffusion_is_elementwise(diffusion):
            raise ValueError(
                f"method {method!r} is only right for an element-wise diffusion (sigma_i depending on y_i "
                f"only), and {type(diffusion).__name__} is not element-wise; use method='euler' "
                "(Euler–Maruyama)"
            )
        ys = _fixed_grid_sde(drift, diffusion, y0, times, method, dt, bm, local)
    if stats is not None:
        stats.add(local)
    if check_finite:
        _check_finite(ys, times, method)
    return ys


def _solver_options(method: str, options: dict | None) -> dict:
    opts = dict(options or {})
    if method in ("explicit_adams", "implicit_adams"):
        # torchdiffeq's default max_order=12 Adams–Bashforth predictor is unstable even on
        # mild problems (y' = -y + sin t: error 0.018 at dt=0.2, 694 at dt=0.05); order 4
        # (max_order=5) converges at order 4.
        opts.setdefault("max_order", 5)
    return opts


def _time_dtype(y0: Tensor) -> torch.dtype:
    return torch.float64 if y0.dtype == torch.float64 else torch.float32


def _odeint(drift, y0, times, method, dt, rtol, atol, adjoint, adjoint_params, stats, options) -> list[Tensor]:
    adaptive = is_adaptive(method)
    func = (_AdaptiveODEFunc if adaptive else _ODEFunc)(drift, stats, adaptive)
    t = torch.tensor(times, dtype=_time_dtype(y0), device=y0.device)
    opts = _solver_options(method, options)
    if adaptive:
        if dt is not None:
            opts.setdefault("first_step", dt)
        # Land steps on every output time: torchdiffeq otherwise steps past it and reads
        # the output off its dense interpolant, which for the low-order pairs (bosh3,
        # fehlberg2, ...) is far less accurate than the steps themselves.
        opts.setdefault("step_t", torch.tensor(times[1:-1] + [times[-1]], dtype=torch.float64))
    else:
        grid = step_grid(times, dt)

        def grid_constructor(func, y0, t_query, _grid=grid):
            # Called with t_query = [a, ..., b] (reversed and negated during the adjoint
            # pass); returns the grid points from a to b in the same direction.
            a, b = float(t_query[0]), float(t_query[-1])
            lo, hi = min(a, b), max(a, b)
            inner = [g for g in _grid if lo < g < hi]
            if a > b:
                inner.reverse()
            mid = torch.tensor(inner, dtype=t_query.dtype, device=t_query.device)
            return torch.cat([t_query[:1], mid, t_query[-1:]])

        opts["grid_constructor"] = grid_constructor
    solver = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    kwargs = {}
    if adjoint:
        if adjoint_params is not None:
            kwargs["adjoint_params"] = tuple(adjoint_params)
        elif func.owner is None:
            kwargs["adjoint_params"] = ()
    try:
        ys = solver(func, y0, t, rtol=rtol, atol=atol, method=method, options=opts, **kwargs)
    except AssertionError as err:
        # torchdiffeq signals step-size underflow (a blow-up) with an assertion.
        if "underflow" in str(err):
            raise SolverError(f"adaptive step size underflow ({err})", method=method) from err
        raise
    return list(ys.unbind(0))


class _TableauStepper:
    """The Runge–Kutta step of an adaptive torchdiffeq method, without error control."""

    def __init__(self, method: str, y0: Tensor):
        tab = _ODE_SOLVERS[method].tableau
        move = {"device": y0.device, "dtype": y0.dtype}
        self.tableau = _ButcherTableau(
            alpha=tab.alpha.to(**move),
            beta=[b.to(**move) for b in tab.beta],
            c_sol=tab.c_sol.to(**move),
            c_error=tab.c_error.to(**move),
        )

    def _step_func(self, func, t0, dt, t1, y0):
        f0 = func(t0, y0)
        y1 = _runge_kutta_step(func, y0, f0, t0, dt, t1, self.tableau)[0]
        return y1 - y0, f0


def _euler_step(drift, t: Tensor, y: Tensor, dt: float) -> Tensor:
    """``y + dt * drift(t, y)``, or ``drift.euler_step(t, y, dt)`` where the drift has one."""
    step = getattr(drift, "euler_step", None)
    if step is not None:
        out = step(t, y, dt)
        what = "drift.euler_step(t, y, dt)"
    else:
        out = drift(t, y)
        what = "drift(t, y)"
    if out.shape != y.shape:
        raise ValueError(f"{what} must return y's shape {tuple(y.shape)}, got {tuple(out.shape)}")
    return out if step is not None else torch.add(y, out, alpha=dt)


def _broadcasts_to(shape: torch.Size, target: torch.Size) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == target
    except RuntimeError:
        return False


def _fixed_grid_euler(drift, diffusion, y0, times, dt, bm, stats) -> list[Tensor]:
    """Euler (ODE) or Euler–Maruyama (Itô SDE, diagonal noise) on the fixed step grid.

    Written here rather than taken from torchdiffeq/torchsde because the step is one
    line, and owning it removes every pass over the state that the generic steppers add:
    the separate ``dt * f`` and ``g * dW`` products, torchsde's flattening of the state and
    of ``sigma``, and, through ``drift.euler_step``, the ``(block(x) - x) / h`` velocity of
    a residual block, whose Euler step of length ``h`` is the block itself. Each step is
    ``y + dt f(t, y) + sigma(t, y) dW`` with ``dW = W(t + dt) - W(t)``, exactly
    torchdiffeq's Euler and torchsde's Itô Euler–Maruyama step.
    """
    grid = step_grid(times, dt)
    shape = y0.shape
    flat = (shape[0], y0[0].numel())
    if diffusion is not None:
        if bm is None:
            bm = GridBrownian(grid, flat, dtype=y0.dtype, device=y0.device, keep=False)
        elif tuple(bm.shape) != flat:
            raise ValueError(f"bm must have shape (batch, prod(state)) = {flat}, got {tuple(bm.shape)}")
    # Step times stay on the CPU: the Brownian look-ups only do scalar arithmetic with
    # them, and CPU scalars keep them free of device synchronisation.
    t = torch.tensor(grid, dtype=_time_dtype(y0))
    wanted = set(times)
    ys, y = [y0], y0
    for k in range(len(grid) - 1):
        stats.steps += 1
        stats.nfe += 1
        step = grid[k + 1] - grid[k]
        if diffusion is None:
            y = _euler_step(drift, t[k], y, step)
        else:
            stats.nfe_diffusion += 1
            sigma = diffusion(t[k], y)
            if sigma.shape != shape and not _broadcasts_to(sigma.shape, shape):
                raise ValueError(f"diffusion(t, y) must return y's shape {tuple(shape)}, got {tuple(sigma.shape)}")
            dW = bm(t[k], t[k + 1]).reshape(shape)
            y = torch.addcmul(_euler_step(drift, t[k], y, step), sigma, dW)
        if grid[k + 1] in wanted:
            ys.append(y)
    return ys


def _fixed_grid_ode(drift, y0, times, method, dt, rtol, atol, stats, options) -> list[Tensor]:
    if method == "euler":
        return _fixed_grid_euler(drift, None, y0, times, dt, None, stats)
    func = _ODEFunc(drift, stats, adaptive=False)
    if is_adaptive(method):
        solver = _TableauStepper(method, y0)
    else:
        solver = _ODE_SOLVERS[method](func=func, y0=y0, rtol=rtol, atol=atol, **_solver_options(method, options))
    grid = step_grid(times, dt)
    t = torch.tensor(grid, dtype=_time_dtype(y0), device=y0.device)
    wanted = set(times)
    ys, y = [y0], y0
    for k in range(len(grid) - 1):
        stats.steps += 1
        dy, _ = solver._step_func(func, t[k], t[k + 1] - t[k], t[k + 1], y)
        y = y + dy
        if grid[k + 1] in wanted:
            ys.append(y)
    return ys


def _fixed_grid_sde(drift, diffusion, y0, times, method, dt, bm, stats) -> list[Tensor]:
    if method == "euler":
        return _fixed_grid_euler(drift, diffusion, y0, times, dt, bm, stats)
    shape = y0.shape
    sde = _SDEFunc(drift, diffusion, shape, stats)
    y = rearrange(y0, f"{sde.full} -> {sde.flat}")
    grid = step_grid(times, dt)
    levy = "space-time" if method == "srk" else "none"
    if bm is None:
        bm = GridBrownian(grid, tuple(y.shape), dtype=y.dtype, device=y.device, levy_area=levy, keep=False)
    elif tuple(bm.shape) != tuple(y.shape):
        raise ValueError(f"bm must have shape (batch, prod(state)) = {tuple(y.shape)}, got {tuple(bm.shape)}")
    solver = _select_sde_solver(method=method, sde_type="ito")(
        sde=_ForwardSDE(sde), bm=bm, dt=grid[1] - grid[0], adaptive=False, rtol=0.0, atol=0.0, dt_min=0.0, options={}
    )
    # Step times stay on the CPU: torchsde only does scalar arithmetic with them, and
    # CPU scalars keep the Brownian look-ups free of device synchronisation.
    t = torch.tensor(grid, dtype=y.dtype)
    wanted = set(times)
    ys, extra = [y0], solver.init_extra_solver_state(t[0], y)
    try:
        for k in range(len(grid) - 1):
            stats.steps += 1
            y, extra = solver.step(t[k], t[k + 1], y, extra)
            sde.clear()
            if grid[k + 1] in wanted:
                ys.append(rearrange(y, f"{sde.flat} -> {sde.full}", **sde.sizes))
    finally:
        sde.clear()
    return ys
