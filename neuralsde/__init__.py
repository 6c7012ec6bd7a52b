"""neuralsde: continuous-time neural ODE/SDE ResNets and robust attributions.

The public face: [`integrate`][neuralsde.solvers.integrate],
[`ODEResNet`][neuralsde.models.ODEResNet], [`SDEResNet`][neuralsde.sde_models.SDEResNet],
[`ContinuousStage`][neuralsde.stage.ContinuousStage], the diffusion classes,
[`SolverError`][neuralsde.solvers.SolverError], [`attribute`][neuralsde.attribution.attribute]
and, as a module, [`neuralsde.theory`][neuralsde.theory] (Theorem 1's bounds, among them
[`local_bound`][neuralsde.theory.local_bound]). Everything else is reachable by module
path.
"""

from . import theory  # a module of the public face: neuralsde.theory.local_bound
from .attribution import Attribution, attribute
from .diffusion import (
    AdditiveDiffusion,
    Diffusion,
    LearnedDiffusion,
    MultiplicativeDiffusion,
    NormalizedDiffusion,
    make_diffusion,
)
from .models import ODEResNet
from .sde_models import SDEResNet
from .solvers import SolverError, SolverStats, integrate
from .stage import ContinuousStage

__version__ = "0.1.0"

__all__ = [
    "AdditiveDiffusion",
    "Attribution",
    "ContinuousStage",
    "Diffusion",
    "LearnedDiffusion",
    "MultiplicativeDiffusion",
    "NormalizedDiffusion",
    "ODEResNet",
    "SDEResNet",
    "SolverError",
    "SolverStats",
    "attribute",
    "integrate",
    "make_diffusion",
    "theory",
]
