"""Diffusion coefficients sigma(X, t) for Itô SDEs with diagonal noise.

Every diffusion maps ``(t, X)`` with ``X`` of shape ``(B, *S)`` to ``sigma`` of the same
shape; the SDE is ``dX = G(X, t) dt + sigma(X, t) * dB`` element by element.

Each says whether it is *element-wise*: ``sigma_i`` depends on ``X_i`` alone. Only then
are the Milstein and SRK corrections for diagonal noise right (for a diffusion that mixes
elements the noise is not commutative and those schemes would need Lévy areas), so
``integrate`` refuses them otherwise. Euler–Maruyama is right for every kind.

The paper's "normalized injected noise" of magnitude ``s`` is
[`NormalizedDiffusion`][neuralsde.diffusion.NormalizedDiffusion]::

    sigma(X, t) = s * rms(X),    rms(X) = sqrt(mean over C, H, W of X**2)   (per sample)

Over one block of unit length, one Euler–Maruyama step adds noise ``s * rms(X) * N(0, 1)``
to every element: the noise-to-signal ratio (RMS of the noise over RMS of the activation)
is ``s``, whatever the scale of the layer. That is what "normalized noise of magnitude
0.5" says, and unlike ``s * |X_i|``
([`MultiplicativeDiffusion`][neuralsde.diffusion.MultiplicativeDiffusion]) it also
perturbs the elements a ReLU has set to zero. Over a block of length ``h`` the noise has standard
deviation ``s * sqrt(h) * rms(X)``, so the per-block magnitude stays ``s`` however finely
the block is stepped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DIFFUSIONS",
    "AdditiveDiffusion",
    "Diffusion",
    "LearnedDiffusion",
    "MultiplicativeDiffusion",
    "NormalizedDiffusion",
    "check_kind",
    "make_diffusion",
]


def _check_sigma(sigma: float) -> float:
    sigma = float(sigma)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    return sigma


class Diffusion(nn.Module):
    """Base class of the diffusion coefficients.

    Attributes:
        kind: the name used by [`make_diffusion`][neuralsde.diffusion.make_diffusion].
        elementwise: whether ``sigma_i`` depends on ``X_i`` only.
    """

    kind: str = ""
    elementwise: bool = True

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = sigma

    @property
    def sigma(self) -> float:
        """The noise magnitude (>= 0)."""
        return self._sigma

    @sigma.setter
    def sigma(self, value: float) -> None:
        self._sigma = _check_sigma(value)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"sigma={self.sigma}"


class AdditiveDiffusion(Diffusion):
    """Constant noise: ``sigma(X, t) = sigma``."""

    kind = "additive"

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """Args: t: time; x: state ``(B, *S)``. Returns: sigma, shape ``(B, *S)``."""
        return torch.full_like(x, self.sigma)


class MultiplicativeDiffusion(Diffusion):
    """Noise proportional to the state: ``sigma(X, t) = sigma * X`` (element-wise)."""

    kind = "multiplicative"

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """Args: t: time; x: state ``(B, *S)``. Returns: sigma, shape ``(B, *S)``."""
        return self.sigma * x


class NormalizedDiffusion(Diffusion):
    """The paper's normalized noise: ``sigma(X, t) = sigma * rms(X)`` per sample.

    ``rms(X) = sqrt(mean(X**2) + eps**2)`` over every element of one sample; the small
    ``eps`` keeps the derivative finite at ``X = 0``. Not element-wise.
    """

    kind = "normalized"
    elementwise = False

    def __init__(self, sigma: float, eps: float = 1e-6):
        super().__init__(sigma)
        self.eps = float(eps)

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """Args: t: time; x: state ``(B, *S)``. Returns: sigma, shape ``(B, *S)``."""
        dims = tuple(range(1, x.dim()))
        n = math.prod(x.shape[1:])
        # One pass, no copy of x; at least float32, since the squared norm of a
        # half-precision state overflows fp16 (65504) at a norm of 256.
        wide = torch.promote_types(x.dtype, torch.float32)
        norm = torch.linalg.vector_norm(x, dim=dims, keepdim=True, dtype=wide)
        rms = (norm.square() / n + self.eps**2).sqrt()
        return (self.sigma * rms).to(x.dtype).expand_as(x)


class LearnedDiffusion(Diffusion):
    """A learned element-wise diffusion, one pair of parameters per channel.

    ``sigma(X, t)_i = sigma * softplus(a_c * X_i + b_c) / log(2)`` where ``c`` is the
    channel of element ``i`` (axis 1). At initialisation ``a = b = 0`` and the noise is
    ``sigma`` everywhere; training shapes it. Element-wise, so Milstein applies.

    Args:
        channels: size of axis 1 of the state.
        sigma: the overall scale (>= 0).
    """

    kind = "learned"

    def __init__(self, channels: int, sigma: float):
        super().__init__(sigma)
        if int(channels) < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.slope = nn.Parameter(torch.zeros(int(channels)))
        self.offset = nn.Parameter(torch.zeros(int(channels)))

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """Args: t: time; x: state ``(B, C, *S)``. Returns: sigma, shape ``(B, C, *S)``."""
        if x.dim() < 2 or x.shape[1] != self.slope.numel():
            raise ValueError(f"expected a state with {self.slope.numel()} channels on axis 1, got {tuple(x.shape)}")
        view = (1, -1) + (1,) * (x.dim() - 2)
        a = self.slope.view(view).to(x.dtype)
        b = self.offset.view(view).to(x.dtype)
        return self.sigma * F.softplus(a * x + b) / math.log(2.0)


DIFFUSIONS: dict[str, type[Diffusion]] = {
    cls.kind: cls for cls in (AdditiveDiffusion, MultiplicativeDiffusion, NormalizedDiffusion, LearnedDiffusion)
}


def check_kind(kind: str) -> str:
    """``kind`` if it names a diffusion; ValueError otherwise."""
    if not isinstance(kind, str) or kind not in DIFFUSIONS:
        raise ValueError(f"unknown diffusion {kind!r}; valid diffusions: {', '.join(DIFFUSIONS)}")
    return kind


def make_diffusion(kind: str, sigma: float, channels: int | None = None) -> Diffusion:
    """Build a diffusion by name.

    Args:
        kind: one of ``"additive"``, ``"multiplicative"``, ``"normalized"``, ``"learned"``.
        sigma: the noise magnitude, >= 0.
        channels: number of channels (axis 1), needed by ``"learned"``.

    Raises:
        ValueError: for an unknown kind, sigma < 0, or a missing ``channels``.
    """
    check_kind(kind)
    if kind == "learned":
        if channels is None:
            raise ValueError("the 'learned' diffusion needs the number of channels")
        return LearnedDiffusion(channels, sigma)
    return DIFFUSIONS[kind](sigma)
