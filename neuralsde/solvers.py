"""Solving neural ODEs and Itô SDEs: the one entry point and the one fixed-grid loop.

``integrate(drift, y0, ts)`` solves ``dy/dt = drift(t, y)`` with torchdiffeq's methods;
``integrate(drift, y0, ts, diffusion=sigma)`` solves the Itô SDE with diagonal noise
``dy = drift(t, y) dt + sigma(t, y) dB`` with torchsde's. The state may have any shape
with the batch first, e.g. ``(B, C, H, W)``.

Fixed-step methods step exactly on a grid that contains every time in ``ts``: each
interval ``[ts[i], ts[i+1]]`` is cut into ``ceil(len / dt)`` equal steps (one step per
interval when ``dt`` is None). There is no accumulated round-off in the step times, so a
drift that is piecewise constant in time between the ``ts`` is integrated exactly piece
by piece.

How a solve runs (every fixed-grid solve, ODE or SDE, goes through the one loop of
[`neuralsde.stepping`][neuralsde.stepping]):

* ``euler`` (ODE) and ``euler`` (Itô SDE, Euler–Maruyama): the library's own step
  ``y + dt f + sigma dW`` ([`EulerStep`][neuralsde.stepping.EulerStep]). A drift can supply its own Euler step
  (``drift.euler_step``): a residual block's Euler step is the block itself.
* the other fixed-step methods, and an adaptive method replaying a given grid
  (``adaptive=False``): torchdiffeq's / torchsde's step functions, through the steppers
  of ``neuralsde._backends``, the only module touching those libraries' internals.
* adaptive and adjoint ODE solves: ``torchdiffeq.odeint`` / ``odeint_adjoint``.

The Brownian path of an SDE is a [`GridBrownian`][neuralsde.brownian.GridBrownian] drawn from
torch's generator unless ``bm`` is given.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torchsde
from torch import Tensor

from . import _backends
from .adaptive import StepSizeUnderflow
from .adaptive import odeint as _adaptive_odeint
from .brownian import GridBrownian
from .stepping import EulerStep, SolverStats, fixed_grid, step_count, step_grid
from .validate import check_positive

__all__ = [
    "ADAPTIVE_ODE_METHODS",
    "ELEMENTWISE_ONLY_SDE_METHODS",
    "FIXED_ODE_METHODS",
    "ODE_METHODS",
    "SDE_METHODS",
    "SolverError",
    "SolverStats",
    "all_finite",
    "check_method",
    "extrema",
    "finite_flag",
    "integrate",
    "is_adaptive",
    "step_count",
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


def is_adaptive(method: str) -> bool:
    """Whether ``method`` chooses its own steps (adaptive ODE methods)."""
    return method in ADAPTIVE_ODE_METHODS


def check_method(method: str, sde: bool) -> None:
    """Raise ValueError unless ``method`` is a valid ODE (or SDE) method name."""
    valid = SDE_METHODS if sde else ODE_METHODS
    if method not in valid:
        kind = "SDE" if sde else "ODE"
        raise ValueError(f"unknown {kind} method {method!r}; valid {kind} methods: {', '.join(valid)}")


def _as_times(ts: Tensor | Sequence[float]) -> list[float]:
    values = ts.detach().cpu().tolist() if torch.is_tensor(ts) else [float(t) for t in ts]
    if len(values) < 2:
        raise ValueError(f"ts needs at least two times, got {len(values)}")
    if any(not math.isfinite(t) for t in values):
        raise ValueError(f"ts must be finite, got {values}")
    if any(b <= a for a, b in zip(values[:-1], values[1:])):
        raise ValueError(f"ts must be strictly increasing, got {values}")
    return values


def _diffusion_is_elementwise(diffusion) -> bool:
    return bool(getattr(diffusion, "elementwise", True))


def extrema(y: Tensor) -> tuple[Tensor, Tensor]:
    """``y``'s smallest and largest element, 0-d tensors on its device (zeros if ``y`` is empty).

    One pass over ``y``: NaN propagates to both, an infinity is one of them, so ``y`` is
    finite exactly when both are (see [`all_finite`][neuralsde.solvers.all_finite]).
    """
    if y.numel() == 0:
        zero = y.new_zeros(())
        return zero, zero
    low, high = torch.aminmax(y)
    return low, high


def all_finite(values: Sequence[Tensor]) -> Tensor:
    """Whether every one of ``values`` (0-d tensors, e.g. [`extrema`][neuralsde.solvers.extrema]) is finite.

    A 0-d bool tensor on their device, computed in one go and not read back; the values
    are compared in their common dtype, so that no float64 value overflows in a float32 one.
    """
    if not values:
        return torch.ones((), dtype=torch.bool)
    dtypes = {v.dtype for v in values}
    dtype = dtypes.pop() if len(dtypes) == 1 else functools.reduce(torch.promote_types, dtypes)
    return torch.isfinite(torch.stack([v.to(dtype) for v in values])).all()


def finite_flag(y: Tensor) -> Tensor:
    """Whether every element of ``y`` is finite: a 0-d bool tensor on ``y``'s device.

    One pass over ``y`` (its smallest and largest element: NaN propagates to both, an
    infinity is one of them), with no sum that could overflow a half-precision dtype and
    no read back to the host.
    """
    return all_finite(extrema(y))


def _check_finite(ys: list[Tensor], times: Sequence[float], method: str) -> None:
    if bool(finite_flag(ys[-1])):
        return
    finite = [bool(finite_flag(y)) for y in ys]
    bad = finite.index(False) if False in finite else len(finite) - 1
    since = f" (finite at t={times[bad - 1]:.6g})" if bad > 0 else ""
    raise SolverError(f"the state stopped being finite{since}", method=method, time=times[bad])


def _brownian(bm, grid: list[float], y0: Tensor, method: str) -> torchsde.BaseBrownian:
    flat = (y0.shape[0], math.prod(y0.shape[1:]))
    if bm is None:
        levy = "space-time" if method == "srk" else "none"
        return GridBrownian(grid, flat, dtype=y0.dtype, device=y0.device, levy_area=levy, keep=False)
    if tuple(bm.shape) != flat:
        raise ValueError(f"bm must have shape (batch, prod(state)) = {flat}, got {tuple(bm.shape)}")
    span = (bm.t0, bm.t1) if isinstance(bm, GridBrownian) else _backends.brownian_span(bm)
    if span is not None:
        a, b = float(span[0]), float(span[1])
        slack = 1e-6 * max(1.0, abs(a), abs(b))  # times rounded to float32 by the path
        if grid[0] < a - slack or grid[-1] > b + slack:
            raise ValueError(
                f"bm must cover the integration interval [{grid[0]:.6g}, {grid[-1]:.6g}], got a path over "
                f"[{a:.6g}, {b:.6g}] (outside it the path would give no noise)"
            )
    return bm


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
    saveat: Literal["ts", "t1"] = "ts",
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
        rtol: relative tolerance of adaptive ODE methods, > 0.
        atol: absolute tolerance of adaptive ODE methods, > 0.
        adjoint: back-propagate with torchdiffeq's adjoint method (ODE only). The
            parameters are ``adjoint_params`` if given, else those of ``drift`` when it
            is a module or a bound method of one; any other drift needs
            ``adjoint_params`` (``()`` if it uses no parameters).
        bm: a torchsde Brownian object of shape ``(B, prod(S))`` to drive the SDE, e.g.
            from [brownian_interval][neuralsde.brownian.brownian_interval], over an
            interval that contains ``[ts[0], ts[-1]]``. None draws the path on the step
            grid from torch's generator.
        adjoint_params: the parameters the adjoint pass differentiates (ODE only).
        stats: if given, the solve's steps and evaluation counts are added to it.
        check_finite: raise SolverError if a returned state is not finite (one read
            back to the host per call; no sum that could overflow).
        options: extra options passed to the torchdiffeq solver. The Adams methods
            default to ``max_order=5`` (fourth order): torchdiffeq's own default of 12
            is unstable even on mild problems.
        adaptive: with False, an adaptive method takes exactly the steps of the fixed
            grid (``ts`` cut by ``dt``) with its own Runge–Kutta tableau and no error
            control: how a step grid found once is replayed on other inputs.
        saveat: ``"ts"`` returns the state at every time of ``ts``; ``"t1"`` only the
            final one, without keeping the others.

    Returns:
        The states at ``ts``, shape ``(len(ts), *y0.shape)``; with ``saveat="t1"`` the
        final state, shape ``y0.shape``.

    Raises:
        ValueError: for an unknown method, a bad ``ts``, ``dt`` or tolerance, a drift
            or diffusion that is not callable or does not return a tensor of ``y0``'s
            shape, a diffusion that the method cannot handle, a ``bm`` that is not a
            torchsde Brownian object or does not cover ``ts``, or an adjoint solve whose
            parameters are unknown.
        SolverError: if the state stops being finite or an adaptive step size underflows.
    """
    if not torch.is_tensor(y0) or y0.dim() < 1:
        raise ValueError(f"y0 must be a tensor with the batch first, got {type(y0).__name__}")
    if not y0.is_floating_point():
        raise ValueError(f"y0 must be floating point, got dtype {y0.dtype}")
    if dt is not None:
        dt = check_positive(dt, "dt")
    if not callable(drift):
        raise ValueError(f"drift must be a callable drift(t, y) returning a tensor, got {type(drift).__name__}")
    if diffusion is not None and not callable(diffusion):
        raise ValueError(
            "diffusion must be a callable diffusion(t, y) returning sigma, e.g. "
            f"neuralsde.MultiplicativeDiffusion(0.2), or None for an ODE; got {type(diffusion).__name__}"
        )
    if bm is not None and not isinstance(bm, torchsde.BaseBrownian):
        raise ValueError(
            "bm must be a torchsde Brownian object (e.g. neuralsde.brownian.brownian_interval(y0, t0, t1)) or None, "
            f"got {type(bm).__name__}"
        )
    for name, tol in (("rtol", rtol), ("atol", atol)):
        if not (float(tol) > 0 and math.isfinite(tol)):
            raise ValueError(f"{name} must be a finite number > 0, got {tol}")
    if saveat not in ("ts", "t1"):
        raise ValueError(f"saveat must be 'ts' or 't1', got {saveat!r}")
    times = _as_times(ts)
    saved = times if saveat == "ts" else times[-1:]
    grid = step_grid(times, dt)
    local = SolverStats(method=method, times=[] if stats is not None and stats.times is not None else None)
    check_method(method, sde=diffusion is not None)
    if diffusion is None:
        if adjoint and not adaptive:
            raise ValueError("adaptive=False replays a fixed grid and back-propagates directly; no adjoint")
        if adjoint and adjoint_params is None and _backends.drift_module(drift) is None:
            raise ValueError(
                "adjoint=True needs the parameters the drift uses, and a plain function does not say which: "
                "expected an nn.Module (or a bound method of one) as drift, or adjoint_params=(tensors...), "
                f"or adjoint_params=() if it uses none; got a {type(drift).__name__} and adjoint_params=None"
            )
        if adjoint or (adaptive and is_adaptive(method)):
            ys = _odeint(
                drift, y0, times, grid, method=method, dt=dt, rtol=rtol, atol=atol, adjoint=adjoint,
                adjoint_params=adjoint_params, stats=local, options=options,
            )  # fmt: skip
            ys = ys[len(ys) - len(saved) :]
        elif method == "euler":
            ys = fixed_grid(EulerStep(drift, None, None, y0.shape, local), y0, grid, set(saved), local)
        else:
            stepper = _backends.ODEStepper(drift, y0, method, rtol, atol, options, local, replay=is_adaptive(method))
            ys = fixed_grid(stepper, y0, grid, set(saved), local)
    else:
        if adjoint:
            raise ValueError("adjoint=True is available for ODE solves only; SDE solves back-propagate directly")
        if method in ELEMENTWISE_ONLY_SDE_METHODS and not _diffusion_is_elementwise(diffusion):
            raise ValueError(
                f"method {method!r} is only right for an element-wise diffusion (sigma_i depending on y_i "
                f"only), and {type(diffusion).__name__} is not element-wise; use method='euler' "
                "(Euler–Maruyama)"
            )
        bm = _brownian(bm, grid, y0, method)
        if method == "euler":
            stepper = EulerStep(drift, diffusion, bm, y0.shape, local)
        elif y0.numel() == 0:
            # torchsde's steppers cannot take an empty state; its solution is empty.
            return torch.stack([y0] * len(saved)) if saveat == "ts" else y0
        else:
            stepper = _backends.SDEStepper(drift, diffusion, y0, method, bm, grid[1] - grid[0], local)
        ys = fixed_grid(stepper, y0, grid, set(saved), local)
    if stats is not None:
        stats.add(local)
    if check_finite:
        _check_finite(ys, saved, method)
    return torch.stack(ys) if saveat == "ts" else ys[-1]


def _odeint(
    drift, y0: Tensor, times, grid, *, method: str, dt, rtol: float, atol: float, adjoint: bool, adjoint_params,
    stats: SolverStats, options,
) -> list[Tensor]:  # fmt: skip
    """torchdiffeq's solve (adaptive, or with the adjoint) at ``times``; the grid is used by fixed-step methods."""
    adaptive = is_adaptive(method)
    try:
        return _adaptive_odeint(
            drift, y0, times, None if adaptive else grid, method=method, dt=dt, rtol=rtol, atol=atol,
            adjoint=adjoint, adjoint_params=adjoint_params, stats=stats, options=options, adaptive=adaptive,
        )  # fmt: skip
    except StepSizeUnderflow as err:
        raise SolverError(f"adaptive step size underflow ({err})", method=method) from err
