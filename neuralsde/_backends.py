"""The one place that touches torchdiffeq's and torchsde's internals.

The library steps every method other than the fixed-grid Euler / Euler–Maruyama step
with torchdiffeq's and torchsde's own step functions, called directly rather than
through ``odeint`` / ``sdeint``: those loops copy every output state, interpolate onto
``ts`` even when a step lands on it and (torchdiffeq) take ``y.abs()`` of the whole state
at every evaluation, which together cost about as much as the residual additions of a
ResNet stage. Calling the step functions needs these private names:

=============================================  ===========================================
private name                                   used for
=============================================  ===========================================
``torchdiffeq._impl.odeint.SOLVERS``           the solver class of each method name
``torchdiffeq._impl.rk_common._ButcherTableau``  an adaptive method's tableau on the device
``torchdiffeq._impl.rk_common._runge_kutta_step``  one step of that tableau, no error control
``torchsde._core.base_sde.ForwardSDE``         torchsde's wrapper its steppers expect
``torchsde._core.methods.select``              the stepper class of each SDE method
=============================================  ===========================================

Besides these module-level names it uses three private attributes:

* ``_step_func``, the one-step method of torchdiffeq's fixed-grid solver classes (and of
  ``_TableauStep`` here, which mimics it), which ``ODEStepper`` calls;
* ``Tensor._version``, torch's in-place version counter, with which the evaluation memo
  of the torchsde steppers tells a state changed in place from an unchanged one;
* the instance attributes ``_start``, ``_end`` and ``_interval`` of torchsde's Brownian
  objects, which ``brownian_span`` reads to check that a path covers a solve; where they
  are missing it checks nothing.

Tested with torchdiffeq 0.2.5 and torchsde 0.2.6 (``pyproject.toml`` keeps both
below their next minor versions). The names are imported on first use, not when
``neuralsde`` is imported: if a release moves one, the library still imports, the
library's own Euler and Euler–Maruyama steps still run, and the methods that need the
name raise an ``ImportError`` that names the symbol and the tested versions.
``missing_private_names()`` lists what is missing
(the test suite asserts it is empty).

Adaptive and adjoint solves go through the public ``torchdiffeq.odeint`` /
``odeint_adjoint``, in [`neuralsde.adaptive`][neuralsde.adaptive], which uses the drift
adapter (``_ODEFunc``) and the solver options defined here.

Every stepper follows one protocol, driven by the single fixed-grid loop of
``neuralsde.stepping``: ``init(t0, y0) -> carry``, ``step(t0, t1, dt, carry, times) ->
carry`` and ``state(carry) -> y``, with ``time_device`` the device the loop puts the step
times on.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable
from typing import Any

import torch
import torchsde
from einops import rearrange
from torch import Tensor, nn

__all__ = [
    "PRIVATE_NAMES",
    "TESTED_VERSIONS",
    "ODEStepper",
    "SDEStepper",
    "brownian_span",
    "drift_module",
    "missing_private_names",
    "private",
]

#: Private names, by module, that this file uses.
PRIVATE_NAMES: dict[str, tuple[str, ...]] = {
    "torchdiffeq._impl.odeint": ("SOLVERS",),
    "torchdiffeq._impl.rk_common": ("_ButcherTableau", "_runge_kutta_step"),
    "torchsde._core.base_sde": ("ForwardSDE",),
    "torchsde._core.methods": ("select",),
}
#: The releases the private names were checked against.
TESTED_VERSIONS: dict[str, str] = {"torchdiffeq": "0.2.5", "torchsde": "0.2.6"}


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _import(module: str) -> Any:
    _MODULES[module] = importlib.import_module(module)
    return _MODULES[module]


#: The modules of the private names, imported once. A look-up in this dict, unlike an
#: import, is traced by torch.compile without a graph break; a module that a release
#: moved stays out of it, and ``private`` then raises when a name of it is used.
_MODULES: dict[str, Any] = {}
for _module in PRIVATE_NAMES:
    try:
        _import(_module)
    except ImportError:
        pass


def private(module: str, name: str) -> Any:
    """The private attribute ``module.name`` of torchdiffeq or torchsde.

    Raises:
        ImportError: if the installed release does not have it, naming the symbol, the
            installed version and the versions this library was tested with.
    """
    if name not in PRIVATE_NAMES.get(module, ()):
        raise ValueError(f"{module}.{name} is not a private name listed in neuralsde._backends.PRIVATE_NAMES")
    package = module.split(".")[0]
    try:
        return getattr(_MODULES[module] if module in _MODULES else _import(module), name)
    except (ImportError, AttributeError) as err:
        raise ImportError(
            f"neuralsde needs the private name {module}.{name}, which {package} {_version(package)} does not "
            f"have (tested with {package} {TESTED_VERSIONS[package]}). Install a tested release, e.g. "
            f"pip install '{package}=={TESTED_VERSIONS[package]}', or use method='euler'."
        ) from err


def missing_private_names() -> list[str]:
    """The listed private names that the installed torchdiffeq / torchsde lack."""
    missing = []
    for module, names in PRIVATE_NAMES.items():
        for name in names:
            try:
                private(module, name)
            except ImportError:
                missing.append(f"{module}.{name}")
    return missing


def _solver_options(method: str, options: dict | None) -> dict:
    opts = dict(options or {})
    if method in ("explicit_adams", "implicit_adams"):
        # torchdiffeq's default max_order=12 Adams–Bashforth predictor is unstable even on
        # mild problems (y' = -y + sin t: error 0.018 at dt=0.2, 694 at dt=0.05); order 4
        # (max_order=5) converges at order 4.
        opts.setdefault("max_order", 5)
    return opts


def _check_shape(out: Tensor, shape: torch.Size, what: str) -> None:
    if not isinstance(out, Tensor) or out.shape != shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"{what} must return a tensor of y's shape {tuple(shape)}, got {got}")


# -- torchdiffeq -------------------------------------------------------------------------
class _ODEFunc(nn.Module):
    """torchdiffeq's view of the drift: counts evaluations and steps, checks shapes."""

    def __init__(self, drift: Callable[[Tensor, Tensor], Tensor], stats, adaptive: bool):
        super().__init__()
        # Registering a Module drift (or the Module behind a bound method) lets
        # odeint_adjoint find its parameters.
        self.owner = drift_module(drift)
        self.drift = drift
        self.stats = stats
        self.adaptive = adaptive

    def forward(self, t: Tensor, y: Tensor, perturb=None) -> Tensor:
        # ``perturb`` is torchdiffeq's hint for step functions called directly; the
        # drifts here are continuous within a solve, so it is not needed.
        self.stats.nfe += 1
        out = self.drift(t, y)
        _check_shape(out, y.shape, "drift(t, y)")
        return out

    def callback_step(self, t0: Tensor, y0: Tensor, dt: Tensor) -> None:
        if not self.adaptive:
            self.stats.steps += 1


def drift_module(drift: Callable) -> nn.Module | None:
    """The module whose parameters a drift uses: the drift itself or the owner of a bound method; else None."""
    owner = drift if isinstance(drift, nn.Module) else getattr(drift, "__self__", None)
    return owner if isinstance(owner, nn.Module) else None


class _TableauStep:
    """The Runge–Kutta step of an adaptive torchdiffeq method, without error control."""

    def __init__(self, method: str, y0: Tensor):
        tab = private("torchdiffeq._impl.odeint", "SOLVERS")[method].tableau
        move = {"device": y0.device, "dtype": y0.dtype}
        self.tableau = private("torchdiffeq._impl.rk_common", "_ButcherTableau")(
            alpha=tab.alpha.to(**move),
            beta=[b.to(**move) for b in tab.beta],
            c_sol=tab.c_sol.to(**move),
            c_error=tab.c_error.to(**move),
        )
        self.rk_step = private("torchdiffeq._impl.rk_common", "_runge_kutta_step")

    def _step_func(self, func, t0, dt, t1, y0):
        f0 = func(t0, y0)
        y1 = self.rk_step(func, y0, f0, t0, dt, t1, self.tableau)[0]
        return y1 - y0, f0


class ODEStepper:
    """One step of a torchdiffeq method (an adaptive one replays its tableau).

    Args:
        drift: ``drift(t, y)``.
        y0: the initial state (fixes device and dtype).
        method: a torchdiffeq method name.
        rtol: relative tolerance (the implicit Adams corrector uses it).
        atol: absolute tolerance.
        options: extra torchdiffeq options.
        stats: counts evaluations.
        replay: the method is adaptive and replays its tableau on a given grid.
    """

    def __init__(self, drift, y0: Tensor, method: str, rtol, atol, options, stats, *, replay: bool):
        self.func = _ODEFunc(drift, stats, adaptive=False)
        if replay:
            self.solver = _TableauStep(method, y0)
        else:
            cls = private("torchdiffeq._impl.odeint", "SOLVERS")[method]
            self.solver = cls(func=self.func, y0=y0, rtol=rtol, atol=atol, **_solver_options(method, options))
        # Step times stay on the CPU: the step functions only scale the state by them, and
        # a 0-d CPU tensor takes part in a GPU operation as a number. On the GPU, a step
        # grid copied to the device would cost one host synchronisation per solve.
        self.time_device = torch.device("cpu")

    def init(self, t0: Tensor, y0: Tensor) -> Tensor:
        return y0

    def step(self, t0: Tensor, t1: Tensor, dt: float, y: Tensor, times: tuple[float, float]) -> Tensor:
        dy, _ = self.solver._step_func(self.func, t0, t1 - t0, t1, y)
        return y + dy

    def state(self, y: Tensor) -> Tensor:
        return y


# -- torchsde ----------------------------------------------------------------------------
def brownian_span(bm: Any) -> tuple[float, float] | None:
    """The interval ``(t0, t1)`` a torchsde Brownian object covers, or None if unknown.

    ``BrownianInterval`` keeps its ends as ``_start`` / ``_end``; ``BrownianTree`` and
    ``BrownianPath`` wrap one as ``_interval`` (instance attributes of torchsde 0.2.6;
    a ``BrownianPath`` over ``[t0, t0 + 1]``). Queried outside that interval they warn
    and clamp, which means no noise there. An object without these attributes (another
    release, another class) gives None: nothing is checked.
    """
    import torchsde

    if isinstance(bm, (torchsde.BrownianPath, torchsde.BrownianTree)):
        bm = getattr(bm, "_interval", None)
    start, end = getattr(bm, "_start", None), getattr(bm, "_end", None)
    if isinstance(bm, torchsde.BrownianInterval) and start is not None and end is not None:
        return float(start), float(end)
    return None


class _Memo:
    """Evaluates ``fn(t, y)`` once per (t, y) pair within one step.

    torchsde evaluates the drift and diffusion at ``(ts[0], y0)`` to check shapes before
    stepping, and its SRK step re-evaluates stage values it already has; both would cost
    whole network evaluations. Entries are keyed by the state object and hold it, so an
    ``id`` is never reused while its entry lives, and a state changed in place is
    evaluated again; the memo is cleared after every step.

    The time and the state's version counter are compared in eager mode. Under
    ``torch.compile`` neither is read (reading a tensor's value breaks the graph, and
    the version counter is not traced): there the memo relies on torchsde's Milstein
    and SRK steps evaluating each state object at one time only and never changing one
    in place, which they do.
    """

    def __init__(self, fn: Callable[[Tensor, Tensor], Tensor]):
        self.fn = fn
        self.entries: dict[int, tuple[Tensor, int, Tensor, Tensor]] = {}

    def __call__(self, t: Tensor, y: Tensor) -> tuple[Tensor, bool]:
        hit = self.entries.get(id(y))
        if hit is not None and hit[0] is y and self._unchanged(hit, t):
            return hit[3], False
        out = self.fn(t, y)
        self.entries[id(y)] = (y, None if torch.compiler.is_compiling() else y._version, t, out)
        return out, True

    @staticmethod
    def _unchanged(hit: tuple, t: Tensor) -> bool:
        if torch.compiler.is_compiling():
            return True
        y, version, t0 = hit[:3]
        return y._version == version and (t0 is t or float(t0) == float(t))

    def clear(self) -> None:
        self.entries.clear()


def flat_pattern(shape: torch.Size) -> tuple[str, str, dict[str, int]]:
    """einops patterns flattening ``(B, *rest)`` to ``(B, prod(rest))`` and back."""
    names = [f"d{i}" for i in range(len(shape) - 1)]
    sizes = dict(zip(names, shape[1:]))
    return "b " + " ".join(names), "b (" + " ".join(names) + ")", sizes


class _SDEFunc(nn.Module):
    """torchsde's view of an Itô SDE with diagonal noise on a flattened state."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, drift, diffusion, shape: torch.Size, stats):
        super().__init__()
        self.full, self.flat, self.sizes = flat_pattern(shape)
        self.shape = shape
        self.stats = stats
        self._drift = _Memo(self._eval_drift)
        self._diffusion = _Memo(self._eval_diffusion)
        self.drift = drift
        self.diffusion = diffusion

    def unflatten(self, y: Tensor) -> Tensor:
        return rearrange(y, f"{self.flat} -> {self.full}", **self.sizes)

    def flatten(self, y: Tensor) -> Tensor:
        return rearrange(y, f"{self.full} -> {self.flat}")

    def _eval_drift(self, t: Tensor, y: Tensor) -> Tensor:
        out = self.drift(t, self.unflatten(y))
        _check_shape(out, self.shape, "drift(t, y)")
        return self.flatten(out)

    def _eval_diffusion(self, t: Tensor, y: Tensor) -> Tensor:
        out = self.diffusion(t, self.unflatten(y))
        if not isinstance(out, Tensor):
            _check_shape(out, self.shape, "diffusion(t, y)")
        if out.shape != self.shape:
            # A state-independent sigma may come back as a broadcastable tensor.
            try:
                out = out.expand(self.shape)
            except RuntimeError:
                _check_shape(out, self.shape, "diffusion(t, y)")
        return self.flatten(out)

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


class _GridTimes(torchsde.BaseBrownian):
    """A Brownian path that torchsde's steppers query with the loop's float times.

    torchsde's Milstein and SRK steps query their path once per step, with the step's
    times as tensors; turning those back into numbers (``float(t)``) is a read of a
    tensor, which ``torch.compile`` cannot trace without a graph break. The stepper
    tells this wrapper the step's times as Python floats before each step, and the
    wrapper answers the step's query with them; any other query goes to the path as it
    came.
    """

    def __init__(self, bm):
        super().__init__()
        self.bm = bm
        self.step: tuple[Tensor, Tensor, float, float] | None = None

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        step = self.step
        if step is not None and ta is step[0] and tb is step[1]:
            ta, tb = step[2], step[3]
        return self.bm(ta, tb, return_U=return_U, return_A=return_A)

    def __repr__(self) -> str:
        return f"_GridTimes({self.bm!r})"

    @property
    def dtype(self):
        return self.bm.dtype

    @property
    def device(self):
        return self.bm.device

    @property
    def shape(self):
        return self.bm.shape

    @property
    def levy_area_approximation(self):
        return self.bm.levy_area_approximation


class SDEStepper:
    """One step of a torchsde Itô method (milstein, srk) on the flattened state.

    Args:
        drift: ``drift(t, y)``.
        diffusion: ``diffusion(t, y)``, element-wise diagonal noise.
        y0: the initial state, shape ``(B, *S)``.
        method: a torchsde method name.
        bm: the Brownian path, shape ``(B, prod(S))``.
        dt: the first step (torchsde's steppers read it; the grid decides the steps).
        stats: counts evaluations.
    """

    def __init__(self, drift, diffusion, y0: Tensor, method: str, bm, dt: float, stats):
        self.sde = _SDEFunc(drift, diffusion, y0.shape, stats)
        select = private("torchsde._core.methods", "select")
        forward_sde = private("torchsde._core.base_sde", "ForwardSDE")
        self.bm = _GridTimes(bm)
        self.solver = select(method=method, sde_type="ito")(
            sde=forward_sde(self.sde), bm=self.bm, dt=dt, adaptive=False, rtol=0.0, atol=0.0, dt_min=0.0, options={}
        )
        # Step times stay on the CPU: torchsde only does scalar arithmetic with them, and
        # CPU scalars keep the Brownian look-ups free of device synchronisation.
        self.time_device = torch.device("cpu")

    def init(self, t0: Tensor, y0: Tensor) -> tuple[Tensor, Any]:
        y = self.sde.flatten(y0)
        return y, self.solver.init_extra_solver_state(t0, y)

    def step(
        self, t0: Tensor, t1: Tensor, dt: float, carry: tuple[Tensor, Any], times: tuple[float, float]
    ) -> tuple[Tensor, Any]:
        self.bm.step = (t0, t1, *times)
        try:
            return self.solver.step(t0, t1, *carry)
        finally:
            self.bm.step = None
            self.sde.clear()

    def state(self, carry: tuple[Tensor, Any]) -> Tensor:
        return self.sde.unflatten(carry[0])
