"""The solver settings of a continuous stage: one small frozen object, validated once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .solvers import ELEMENTWISE_ONLY_SDE_METHODS, check_method
from .validate import check_count, check_positive

__all__ = ["SolverSettings"]


@dataclass(frozen=True)
class SolverSettings:
    """A stage's solver settings, validated once, when made.

    Change them with ``ContinuousStage.set_solver``
    or the model's ``set_solver``; [`updated`][neuralsde.settings.SolverSettings.updated] makes a validated copy.

    Attributes:
        method: ODE method, or SDE method when ``sde``.
        steps_per_block: fixed steps per block interval (fixed-step methods), >= 1.
        T: the stage's time horizon, > 0; None gives each continuous block unit time.
        rtol: relative tolerance of adaptive methods, > 0.
        atol: absolute tolerance of adaptive methods, > 0.
        adjoint: back-propagate with the adjoint method (ODE only).
        sde: whether the stage has a diffusion.
        elementwise: whether that diffusion is element-wise (Milstein and SRK need it).

    Raises:
        ValueError: for an unknown method, a method that cannot handle the diffusion,
            ``steps_per_block`` that is not an integer >= 1, ``T`` or tolerances that
            are not finite numbers > 0, or an adjoint SDE.
    """

    method: str = "euler"
    steps_per_block: int = 1
    T: float | None = None
    rtol: float = 1e-4
    atol: float = 1e-5
    adjoint: bool = False
    sde: bool = False
    elementwise: bool = True

    def __post_init__(self):
        check_method(self.method, sde=self.sde)
        if self.sde and self.method in ELEMENTWISE_ONLY_SDE_METHODS and not self.elementwise:
            raise ValueError(
                f"method {self.method!r} is only right for an element-wise diffusion, and this diffusion is "
                "not element-wise; use method='euler' (Euler–Maruyama)"
            )
        object.__setattr__(self, "steps_per_block", check_count(self.steps_per_block, "steps_per_block", 1))
        if self.T is not None:
            object.__setattr__(self, "T", check_positive(self.T, "T"))
        for name in ("rtol", "atol"):
            object.__setattr__(self, name, check_positive(getattr(self, name), name))
        if not isinstance(self.adjoint, (bool, int)):
            raise ValueError(f"adjoint must be True or False, got {self.adjoint!r}")
        if self.adjoint and self.sde:
            raise ValueError("adjoint=True is available for ODE stages only; SDE stages back-propagate directly")
        for name, kind in (("steps_per_block", int), ("rtol", float), ("atol", float), ("adjoint", bool)):
            object.__setattr__(self, name, kind(getattr(self, name)))
        object.__setattr__(self, "T", None if self.T is None else float(self.T))

    def updated(self, **changes: Any) -> SolverSettings:
        """A validated copy with the given changes; a change of None keeps the value."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
