"""SDEResNet: the ODE twin with noise in its residual dynamics, and its noise modes."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .blocks import has_hooks
from .diffusion import Diffusion, check_kind, make_diffusion
from .models import ODEResNet
from .validate import check_count, check_seed

__all__ = ["SDEResNet", "Sigma", "StageSigmas"]

#: A noise magnitude: one number for every stage, one per stage in order, or a mapping
#: from stage names (``"layer1"``, ...) to numbers, stages left out having 0.
Sigma = float | Sequence[float] | Mapping[str, float]


def _number(value: object) -> object:
    """A 0-d real tensor or a NumPy scalar as a Python number (anything else as it came)."""
    if torch.is_tensor(value) and value.dim() == 0 and value.dtype != torch.bool and not value.is_complex():
        return value.item()
    if isinstance(value, np.generic) and not isinstance(value, (np.bool_, np.complexfloating)):
        return value.item()
    return value


_FORMS = "give one number, one per stage, or a mapping by stage name"


class StageSigmas:
    """A noise magnitude as given to ``SDEResNet`` or ``set_noise``, checked once, then read per stage.

    ``StageSigmas(sigma)`` checks the values and the form (one number, one per stage in
    order, or a mapping by stage name); ``fit(stages)`` checks it against the network's
    stages (``(name, has continuous blocks)`` in order) and gives each stage's σ. A stage
    whose blocks are all transitions integrates nothing: one number gives it 0, a value
    given for it by name or position is refused, naming it.
    """

    def __init__(self, sigma: Sigma):
        sigma = _number(sigma)
        if isinstance(sigma, Mapping):
            bad = [k for k in sigma if not isinstance(k, str)]
            if bad:
                raise ValueError(f"sigma maps stage names (e.g. 'layer1') to numbers; got the key(s) {bad}")
            if not sigma:
                raise ValueError(
                    "sigma is an empty mapping; give one number, one per stage, or a mapping by stage name"
                )
            self.form, self.values = "mapping", {k: _real(v) for k, v in sigma.items()}
        elif isinstance(sigma, Sequence) and not isinstance(sigma, str):
            if not sigma:
                raise ValueError(
                    "sigma is an empty sequence; give one number, one per stage, or a mapping by stage name"
                )
            self.form, self.values = "sequence", [_real(v) for v in sigma]
        else:
            self.form, self.values = "one", _real(sigma)

    def of(self, index: int, name: str, continuous: bool) -> float:
        """The σ of one stage (its index, name and whether it has continuous blocks), as given.

        What does not fit the network (a name it lacks, a wrong count, a value for a stage
        of transitions) is refused by ``fit``, once every stage exists.
        """
        if self.form == "mapping":
            return self.values.get(name, 0.0)
        if self.form == "sequence":
            return self.values[index] if index < len(self.values) else 0.0
        return self.values if continuous else 0.0

    def fit(self, stages: Sequence[tuple[str, bool]]) -> tuple[float, ...]:
        """Each stage's σ, in order; ValueError for a stage name or count that does not fit."""
        names = [name for name, _ in stages]
        if self.form == "mapping":
            unknown = sorted(set(self.values) - set(names))
            if unknown:
                raise ValueError(f"sigma names no stage {unknown}; the network's stages are {names}")
            given = [self.values.get(name, 0.0) for name in names]
        elif self.form == "sequence":
            if len(self.values) != len(names):
                raise ValueError(f"sigma has {len(self.values)} values for the network's {len(names)} stages {names}")
            given = list(self.values)
        else:
            given = [self.values] * len(names)
        out = []
        for (name, continuous), value in zip(stages, given):
            if not continuous and value > 0:
                if self.form != "one":
                    raise ValueError(
                        f"sigma {value:g} for stage {name}, which has no continuous block (its blocks are all "
                        "transitions that change the shape), so it would add no noise; give it 0 or leave it out"
                    )
                value = 0.0
            out.append(value)
        return tuple(out)


def _real(value: object) -> float:
    """One σ: a finite real number >= 0 (a Python number, a 0-d tensor or a NumPy scalar)."""
    value = _number(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"sigma must be numbers >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {float(value)}")
    return float(value)


def _layout(stages) -> list[tuple[str, bool]]:
    """``(name, has continuous blocks)`` of each built stage, in order."""
    return [(stage.name, stage.num_continuous > 0) for stage in stages]


class SDEResNet(ODEResNet):
    """A ResNet whose stages are Itô neural SDEs ``dX = G dt + sigma(X, t) dB``.

    In ``train()`` the noise is on, with fresh Brownian paths from torch's generator. In
    ``eval()`` it is off by default (the paper computes attributions without noise), and
    [`set_noise`][neuralsde.sde_models.SDEResNet.set_noise] offers two other modes:

    * ``eval_samples=K``: the logits are the average over K Brownian paths (Monte-Carlo
      prediction).
    * ``path_seed=s``: the noise is on along one fixed path, shared by every sample of
      every batch (common random numbers). The network is then a deterministic function
      of its input, so an attribution computed on it, and on Captum's expanded copies of
      the input, measures the attribution rather than the sampling noise. With
      ``eval_samples=K`` as well, the average over the K fixed paths ``s, s+1, ...``.

    Args:
        arch: a name in ``ARCHS`` (torchvision's ResNets and the CIFAR ResNets).
        sigma: noise magnitude, >= 0 (for "normalized": noise RMS over activation RMS
            per unit time, the paper's 0.1, 0.25, 0.5, 0.75). One number for every
            stage, or one per stage: a sequence in stage order, or a mapping from stage
            names to numbers (stages left out get 0). A stage with 0 is an ODE: it
            draws no noise at all, e.g. ``sigma={"layer3": 0.5}`` puts noise in the
            last stage of a ResNet-18 only. Every value may be a Python number, a 0-d
            tensor or a NumPy scalar; an empty sequence or mapping is refused. A stage
            whose blocks are all transitions integrates nothing: one number gives it 0
            (as ``stage_sigmas`` reports), a value given for it by name or position is
            refused.
        diffusion: ``"normalized"`` (the paper's), ``"additive"``, ``"multiplicative"``
            or ``"learned"``.
        eval_samples: Brownian paths averaged in eval mode; 0 for one (or none).
        path_seed: seed of the fixed, shared Brownian path used in eval mode, or None.
        method: SDE method: ``"euler"`` (Euler–Maruyama), ``"milstein"`` or ``"srk"``
            (the last two need an element-wise diffusion).
        **kwargs: as for [`ODEResNet`][neuralsde.models.ODEResNet].
    """

    #: The solver and noise settings the constructors take besides the architecture.
    SETTINGS: tuple[str, ...] = (*ODEResNet.SETTINGS, "sigma", "diffusion", "eval_samples", "path_seed")

    def __init__(
        self,
        arch: str = "resnet18",
        *,
        sigma: Sigma = 0.5,
        diffusion: str = "normalized",
        eval_samples: int = 0,
        path_seed: int | None = None,
        method: str = "euler",
        **kwargs: Any,
    ):
        check_kind(diffusion)  # before any work
        sigmas = StageSigmas(sigma)

        def noise(index: int, name: str, channels: int, continuous: bool) -> Diffusion:
            """Each stage's diffusion, built once with its σ (the stages are checked against sigma below)."""
            return make_diffusion(diffusion, sigmas.of(index, name, continuous), channels)

        super().__init__(arch, method=method, _diffusion=noise, **kwargs)
        sigmas.fit(_layout(self.stages))  # a stage name, count or transition-only stage that does not fit
        self._kind = diffusion
        self.eval_samples = 0
        self.path_seed: int | None = None
        self.set_noise(eval_samples=eval_samples, path_seed=path_seed)

    @property
    def stage_sigmas(self) -> dict[str, float]:
        """The noise magnitude of each stage, by stage name (0: that stage is an ODE)."""
        return {stage.name: stage.diffusion.sigma for stage in self.stages}

    @property
    def sigma(self) -> float | dict[str, float]:
        """The noise magnitude: one number if every stage has the same, else one per stage name."""
        values = self.stage_sigmas
        first = next(iter(values.values()))
        return first if all(v == first for v in values.values()) else values

    @property
    def diffusion(self) -> str:
        """The diffusion kind."""
        return self._kind

    _KEEP = object()

    def set_noise(
        self,
        *,
        sigma: Sigma | None = None,
        diffusion: str | None = None,
        eval_samples: int | None = None,
        path_seed: int | None | object = _KEEP,
    ) -> SDEResNet:
        """Change the noise; arguments left out keep their value.

        Changing the diffusion kind builds new diffusion modules (a learned diffusion
        starts again from its initial values).

        Args:
            sigma: noise magnitude, >= 0: one number, one per stage (a sequence in stage
                order), or a mapping from stage names (stages left out get 0).
            diffusion: diffusion kind.
            eval_samples: Brownian paths averaged in eval mode (0: one or none).
            path_seed: seed of a fixed Brownian path shared by every sample in eval
                mode (an integer in ``[0, 2**63)``); None for fresh paths (or no noise when ``eval_samples == 0``).

        Returns:
            The model itself.

        Raises:
            ValueError: for sigma < 0, a stage name or count that does not fit, an unknown
                kind, a kind the solver method cannot handle, or eval_samples < 0
                (nothing changes).
        """
        kind = check_kind(self.diffusion if diffusion is None else diffusion)
        if sigma is None:
            sigmas = tuple(self.stage_sigmas.values())
        else:
            sigmas = StageSigmas(sigma).fit(_layout(self.stages))
        samples = self.eval_samples if eval_samples is None else eval_samples
        seed = self.path_seed if path_seed is SDEResNet._KEEP else check_seed(path_seed, "path_seed", optional=True)
        samples = check_count(samples, "eval_samples", 0)
        if kind != self.diffusion:
            # Built before any stage changes: a kind the solver cannot take changes nothing.
            fresh = [make_diffusion(kind, v, s.blocks[-1].out_channels) for s, v in zip(self.stages, sigmas)]
            for stage, new in zip(self.stages, fresh):
                stage.set_diffusion(new)
        else:
            for stage, value in zip(self.stages, sigmas):
                stage.diffusion.sigma = value
        self._kind = kind
        self.eval_samples = int(samples)
        self.path_seed = None if seed is None else int(seed)
        return self

    def _set_path(self, noise: bool, seed: int | None) -> None:
        for stage in self.stages:
            stage.set_noise_mode(noise, seed)

    def _paths(self) -> list[tuple[bool, int | None]]:
        """``(noise on, fixed path seed)`` of each pass this mode makes (one, or ``eval_samples``)."""
        if self.training:
            return [(True, None)]
        if self.eval_samples == 0:
            return [(self.path_seed is not None, self.path_seed)]
        if has_hooks(self):
            raise ValueError(
                "Monte-Carlo prediction (eval_samples > 0) runs every layer several times per forward pass, "
                "which hook-based attributions cannot follow; set eval_samples=0 and average attributions "
                "over fixed paths instead (neuralsde.attribute(..., noise='mc'))"
            )
        return [(True, None if self.path_seed is None else self.path_seed + k) for k in range(self.eval_samples)]

    def _passes(self, x: Tensor, head: bool) -> Tensor:
        outs = []
        for noise, seed in self._paths():
            self._set_path(noise, seed)
            features = ODEResNet.forward_features(self, x)
            outs.append(self.fc(features) if head else features)
        return outs[0] if len(outs) == 1 else torch.stack(outs).mean(dim=0)

    def forward_features(self, x: Tensor) -> Tensor:
        """The pooled features ``(B, F)`` for images ``(B, in_channels, H, W)``, with the noise of the mode.

        The mode is chosen here as in ``forward``, so a direct call sees the same noise
        (or none) as the logits do; with ``eval_samples=K``, the average of the K paths'
        features.

        Raises:
            ValueError: for Monte-Carlo prediction while hooks are registered.
        """
        return self._passes(x, head=False)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, in_channels, H, W)``.

        Noise on with fresh paths in train mode; in eval mode off, along the fixed path
        ``path_seed``, or, with ``eval_samples=K``, the average of K paths' logits. With
        the noise on and no fixed path, the Brownian paths are drawn from torch's
        generator, so ``torch.manual_seed`` reproduces them.

        Raises:
            ValueError: for Monte-Carlo prediction while hooks are registered: it calls
                every layer K times per forward pass, which hook-based attributions
                cannot follow (``neuralsde.attribute(..., noise="mc")`` averages
                attributions over paths instead).
        """
        return self._passes(x, head=True)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, diffusion={self.diffusion!r}, sigma={self.sigma}, "
            f"eval_samples={self.eval_samples}, path_seed={self.path_seed}"
        )
