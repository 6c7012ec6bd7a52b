"""Adaptive and adjoint ODE solves, through torchdiffeq's public ``odeint`` / ``odeint_adjoint``.

[`integrate`][neuralsde.solvers.integrate] hands these solves here: an adaptive method
choosing its own steps (landing a step on every output time), or the adjoint method. No
private name of torchdiffeq is used; the drift adapter and the solver options are those
of ``neuralsde._backends``.
"""

from __future__ import annotations

import torch
import torchdiffeq
from torch import Tensor

from ._backends import _ODEFunc, _solver_options
from .stepping import time_dtype

__all__ = ["StepSizeUnderflow", "odeint"]


class _AdaptiveODEFunc(_ODEFunc):
    """Adds the accept/reject callbacks that only torchdiffeq's adaptive solvers call."""

    def callback_accept_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.stats.steps += 1
        if self.stats.times is not None:
            self.stats.times.append(float(t0 + dt))

    def callback_reject_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        self.stats.rejected += 1


class StepSizeUnderflow(RuntimeError):
    """torchdiffeq's adaptive step size underflowed (the solution blew up)."""


def odeint(
    drift, y0: Tensor, times: list[float], grid: list[float] | None, *, method, dt, rtol, atol, adjoint,
    adjoint_params, stats, options, adaptive: bool,
) -> list[Tensor]:  # fmt: skip
    """torchdiffeq's ``odeint`` / ``odeint_adjoint``, landing a step on every output time.

    ``grid`` is the fixed step grid of a fixed-step method (None for adaptive ones).

    Raises:
        StepSizeUnderflow: if an adaptive step size underflows.
    """
    func = (_AdaptiveODEFunc if adaptive else _ODEFunc)(drift, stats, adaptive)
    t = torch.tensor(times, dtype=time_dtype(y0), device=y0.device)
    opts = _solver_options(method, options)
    if adaptive:
        if dt is not None:
            opts.setdefault("first_step", dt)
        # Land steps on every output time: torchdiffeq otherwise steps past it and reads
        # the output off its dense interpolant, which for the low-order pairs (bosh3,
        # fehlberg2, ...) is far less accurate than the steps themselves.
        opts.setdefault("step_t", torch.tensor(times[1:-1] + [times[-1]], dtype=torch.float64))
    else:

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
    if adjoint and adjoint_params is not None:
        kwargs["adjoint_params"] = tuple(adjoint_params)
    try:
        ys = solver(func, y0, t, rtol=rtol, atol=atol, method=method, options=opts, **kwargs)
    except AssertionError as err:
        # torchdiffeq signals step-size underflow (a blow-up) with an assertion.
        if "underflow" in str(err):
            raise StepSizeUnderflow(str(err)) from err
        raise
    return list(ys.unbind(0))
