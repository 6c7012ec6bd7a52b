"""ODEResNet and SDEResNet: drop-in continuous-time twins of torchvision's ResNets.

Both take images ``(B, C, H, W)`` and return logits ``(B, num_classes)``, like
torchvision's ResNet, and have the same parameter names, so a state dict moves between a
torchvision ResNet and its twin in either direction. With Euler's method and one step per
block, the twin computes what the torchvision network computes.

    >>> import torchvision, neuralsde
    >>> tv = torchvision.models.resnet18(num_classes=10)
    >>> ode = neuralsde.ODEResNet.from_torchvision(tv)              # exact twin
    >>> ode.set_solver(method="rk4", steps_per_block=4)             # finer dynamics
    >>> sde = neuralsde.SDEResNet("resnet50", sigma=0.5)           # noise in train()
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from .blocks import ResBlock
from .diffusion import DIFFUSIONS, Diffusion, make_diffusion
from .integrate import SolverStats, is_adaptive
from .stage import ContinuousStage

__all__ = ["DiscreteResNet", "ODEResNet", "SDEResNet", "TORCHVISION_ARCHS"]

#: Architectures buildable by name, as in ``torchvision.models``.
TORCHVISION_ARCHS: tuple[str, ...] = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "wide_resnet50_2",
    "wide_resnet101_2",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
)


@dataclass
class _Parts:
    """The layers a model is assembled from."""

    arch: str
    in_channels: int
    conv1: nn.Module
    bn1: nn.Module
    maxpool: nn.Module
    stages: list[list[ResBlock]]
    fc: nn.Linear

    @classmethod
    def from_torchvision(cls, model: nn.Module, arch: str = "torchvision") -> _Parts:
        if not isinstance(model, torchvision.models.ResNet):
            raise ValueError(f"expected a torchvision.models.ResNet, got {type(model).__name__}")
        stages = [
            [ResBlock.from_torchvision(block) for block in layer]
            for layer in (model.layer1, model.layer2, model.layer3, model.layer4)
        ]
        return cls(arch, model.conv1.in_channels, model.conv1, model.bn1, model.maxpool, stages, model.fc)

    @classmethod
    def named(cls, arch: str, num_classes: int, in_channels: int) -> _Parts:
        if arch not in TORCHVISION_ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; valid architectures: {', '.join(TORCHVISION_ARCHS)}")
        _check_count("num_classes", num_classes)
        _check_count("in_channels", in_channels)
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        if in_channels != 3:
            old = model.conv1
            model.conv1 = nn.Conv2d(in_channels, old.out_channels, 7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        return cls.from_torchvision(model, arch)

    @classmethod
    def small(cls, in_channels: int, num_classes: int, widths: Sequence[int], blocks: int) -> _Parts:
        _check_count("in_channels", in_channels)
        _check_count("num_classes", num_classes)
        _check_count("blocks", blocks)
        if len(widths) == 0 or any(int(w) < 1 for w in widths):
            raise ValueError(f"widths must be positive channel counts, got {tuple(widths)}")
        conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        stages, channels = [], widths[0]
        for i, width in enumerate(widths):
            stage = []
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(_basic_block(channels, width, stride))
                channels = width
            stages.append(stage)
        parts = cls(
            "small",
            in_channels,
            conv1,
            nn.BatchNorm2d(widths[0]),
            nn.Identity(),
            stages,
            nn.Linear(channels, num_classes),
        )
        for module in [conv1, *[b for stage in stages for b in stage]]:
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        return parts


def _check_count(name: str, value: int) -> None:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value}")


def _basic_block(c_in: int, c_out: int, stride: int) -> ResBlock:
    downsample = None
    if stride != 1 or c_in != c_out:
        downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
    return ResBlock(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        downsample=downsample,
    )


class ODEResNet(nn.Module):
    """A ResNet whose stages are neural ODEs, a drop-in for torchvision's ResNet.

    Build by torchvision name (``ODEResNet("resnet50", num_classes=10)``), convert a
    (pretrained) torchvision model with :meth:`from_torchvision`, or build a small
    CIFAR-style network for 8x8 to 32x32 images with :meth:`small`.

    Args:
        arch: a name in ``TORCHVISION_ARCHS``.
        num_classes: number of logits.
        in_channels: channels of the input images.
        method: ODE method (see ``neuralsde.integrate``); ``"euler"`` with one step per
            block is the discrete ResNet.
        steps_per_block: fixed steps per block (fixed-step methods).
        T: time horizon of each stage; None gives every block unit time.
        rtol: relative tolerance of adaptive methods.
        atol: absolute tolerance of adaptive methods.
        adjoint: back-propagate with the adjoint method.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        *,
        num_classes: int = 1000,
        in_channels: int = 3,
        method: str = "euler",
        steps_per_block: int = 1,
        T: float | None = None,
        rtol: float = 1e-4,
        atol: float = 1e-5,
        adjoint: bool = False,
        _parts: _Parts | None = None,
    ):
        super().__init__()
        parts = _parts if _parts is not None else _Parts.named(arch, num_classes, in_channels)
        self.arch = parts.arch
        self.in_channels = parts.in_channels
        self.conv1, self.bn1 = parts.conv1, parts.bn1
        self.relu = nn.ReLU()
        self.maxpool = parts.maxpool
        self.num_stages = len(parts.stages)
        for i, blocks in enumerate(parts.stages):
            name = f"layer{i + 1}"
            diffusion = self._make_diffusion(blocks[-1].out_channels)
            stage = ContinuousStage(
                blocks,
                method=method,
                steps_per_block=steps_per_block,
                T=T,
                rtol=rtol,
                atol=atol,
                adjoint=adjoint,
                diffusion=diffusion,
                name=name,
                index=i,
            )
            self.add_module(name, stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = parts.fc
        self.num_classes = self.fc.out_features
        self._adjoint_warned = False

    # -- construction -------------------------------------------------------------
    def _make_diffusion(self, channels: int) -> Diffusion | None:
        return None

    @classmethod
    def from_torchvision(cls, model: nn.Module, **kwargs: Any) -> ODEResNet:
        """The continuous-time twin of a torchvision ResNet (its weights are copied).

        Args:
            model: a ``torchvision.models.ResNet`` (any depth, width or grouping).
            **kwargs: solver (and, for SDEResNet, noise) settings, as in the constructor.
        """
        if not isinstance(model, torchvision.models.ResNet):
            raise ValueError(f"expected a torchvision.models.ResNet, got {type(model).__name__}")
        twin = cls(_parts=_Parts.from_torchvision(copy.deepcopy(model)), **kwargs)
        return twin.train(model.training)

    @classmethod
    def small(
        cls,
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64),
        blocks: int = 2,
        **kwargs: Any,
    ) -> ODEResNet:
        """A CIFAR-style ResNet for small images (8x8 to 32x32).

        Stem: 3x3 convolution, no max-pooling. Stage ``i`` has ``blocks`` basic blocks of
        ``widths[i]`` channels; every stage after the first halves the resolution in its
        first block (a discrete transition), the others are time steps.

        Args:
            in_channels: channels of the input images.
            num_classes: number of logits.
            widths: channels of each stage.
            blocks: basic blocks per stage.
            **kwargs: solver (and, for SDEResNet, noise) settings.
        """
        return cls(_parts=_Parts.small(in_channels, num_classes, tuple(widths), blocks), **kwargs)

    # -- solver ---------------------------------------------------------------------
    @property
    def stages(self) -> list[ContinuousStage]:
        """The continuous stages, in order."""
        return [getattr(self, f"layer{i + 1}") for i in range(self.num_stages)]

    @property
    def method(self) -> str:
        """The solver method."""
        return self.layer1.method

    @property
    def steps_per_block(self) -> int:
        """Fixed steps per block."""
        return self.layer1.steps_per_block

    def set_solver(
        self,
        *,
        method: str | None = None,
        steps_per_block: int | None = None,
        T: float | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        adjoint: bool | None = None,
    ) -> ODEResNet:
        """Change the solver of every stage; arguments left None keep their value.

        Returns:
            The model itself.

        Raises:
            ValueError: for an unknown method or an invalid setting (nothing changes).
        """
        settings = dict(method=method, steps_per_block=steps_per_block, T=T, rtol=rtol, atol=atol, adjoint=adjoint)
        for stage in self.stages:  # validate every stage before changing any
            stage.check_solver(**settings)
        for stage in self.stages:
            stage.set_solver(**settings)
        return self

    def solver_stats(self) -> dict[str, SolverStats]:
        """Steps and evaluations of the last forward pass, per stage."""
        return {stage.name: copy.copy(stage.stats) for stage in self.stages}

    def freeze_grid(self, x: Tensor) -> ODEResNet:
        """Fix an adaptive method's step grid to the one it chooses on ``x``.

        Runs one forward pass on ``x`` (eval mode, no gradients) and records, per block,
        the steps the adaptive method accepted; later forward passes take exactly those
        steps with the method's own Runge–Kutta tableau and no error control. The model
        is then a fixed function of its input, whatever else shares the batch, and its
        number of drift evaluations is known, which hook-based attributions (DeepLift,
        GuidedBackprop) need. Changing the solver unfreezes it.

        Args:
            x: representative inputs, shape ``(B, C, H, W)`` (e.g. the images to explain).

        Returns:
            The model itself.

        Raises:
            ValueError: if the method is not adaptive.
        """
        if not is_adaptive(self.method):
            raise ValueError(f"method {self.method!r} takes fixed steps already; freeze_grid is for adaptive methods")
        training = self.training
        self.unfreeze_grid().eval()
        for stage in self.stages:
            stage.record_grids()
        try:
            with torch.no_grad():
                self(x)
            grids = [stage.recorded for stage in self.stages]
        finally:
            for stage in self.stages:
                stage._recording = None
            self.train(training)
        for stage, grid in zip(self.stages, grids):
            stage.freeze(grid)
        return self

    def unfreeze_grid(self) -> ODEResNet:
        """Let an adaptive method choose its steps again. Returns the model."""
        for stage in self.stages:
            stage.frozen = None
            stage.reserve_activations()
        return self

    @property
    def frozen(self) -> bool:
        """Whether the step grid is frozen (see :meth:`freeze_grid`)."""
        return self.layer1.frozen is not None

    # -- forward ----------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"expected images of shape (B, {self.in_channels}, H, W), got {got}")

    def _attributing(self, x: Tensor) -> bool:
        """Whether gradients of this pass are wanted for the input or hooked modules."""
        if x.requires_grad:
            return True
        return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in self.modules())

    def _choose_backprop(self, x: Tensor) -> None:
        """With adjoint=True, back-propagate directly while attributions are computed.

        The adjoint only approximates the gradient of the forward pass (it integrates its
        own ODE backwards) and calls the drift again during the backward pass, which
        hook-based attributions cannot follow. So when the input requires gradients or
        hooks are registered on the model, the solver back-propagates directly.
        """
        if not any(stage.adjoint for stage in self.stages):
            return
        direct = torch.is_grad_enabled() and self._attributing(x)
        if direct and not self._adjoint_warned:
            warnings.warn(
                "adjoint=True, but the input requires gradients or hooks are registered (an attribution): "
                "back-propagating directly through the solver for such passes, since the adjoint only "
                "approximates the gradient of the forward pass",
                stacklevel=3,
            )
            self._adjoint_warned = True
        for stage in self.stages:
            stage.direct_backprop = direct

    def forward_features(self, x: Tensor) -> Tensor:
        """The pooled features before the classifier: ``(B, C, H, W) -> (B, F)``."""
        self._check_input(x)
        self._choose_backprop(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in self.stages:
            x = stage(x)
        return torch.flatten(self.avgpool(x), 1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits for a batch of images.

        Args:
            x: images, shape ``(B, in_channels, H, W)``.

        Returns:
            Logits, shape ``(B, num_classes)``.

        Raises:
            ValueError: if ``x`` is not 4-D or has the wrong number of channels.
            SolverError: if a stage's state stops being finite.
        """
        return self.fc(self.forward_features(x))

    # -- weights ----------------------------------------------------------------------
    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Load weights, e.g. a torchvision ResNet's state dict.

        Learned diffusion parameters (SDEResNet with ``diffusion="learned"``) may be
        absent from ``state_dict``: a torchvision state dict has none, and they keep their
        current values. Every other key must match when ``strict``.
        """
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        if strict:
            missing = [k for k in result.missing_keys if ".diffusion." not in k]
            if missing or result.unexpected_keys:
                raise RuntimeError(
                    f"Error(s) in loading state_dict for {type(self).__name__}: "
                    f"missing keys {missing}, unexpected keys {result.unexpected_keys}"
                )
        return result

    def extra_repr(self) -> str:
        return f"arch={self.arch!r}, in_channels={self.in_channels}, num_classes={self.num_classes}"


class SDEResNet(ODEResNet):
    """A ResNet whose stages are Itô neural SDEs ``dX = G dt + sigma(X, t) dB``.

    In ``train()`` the noise is on, with fresh Brownian paths from torch's generator. In
    ``eval()`` it is off by default (the paper computes attributions without noise), and
    :meth:`set_noise` offers two other modes:

    * ``eval_samples=K``: the logits are the average over K Brownian paths (Monte-Carlo
      prediction).
    * ``path_seed=s``: the noise is on along one fixed path, shared by every sample of
      every batch (common random numbers). The network is then a deterministic function
      of its input, so an attribution computed on it, and on Captum's expanded copies of
      the input, measures the attribution rather than the sampling noise. With
      ``eval_samples=K`` as well, the average over the K fixed paths ``s, s+1, ...``.

    Args:
        arch: a name in ``TORCHVISION_ARCHS``.
        sigma: noise magnitude, >= 0 (for "normalized": noise RMS over activation RMS
            per unit time, the paper's 0.1, 0.25, 0.5, 0.75).
        diffusion: ``"normalized"`` (the paper's), ``"additive"``, ``"multiplicative"``
            or ``"learned"``.
        eval_samples: Brownian paths averaged in eval mode; 0 for one (or none).
        path_seed: seed of the fixed, shared Brownian path used in eval mode, or None.
        method: SDE method: ``"euler"`` (Euler–Maruyama), ``"milstein"`` or ``"srk"``
            (the last two need an element-wise diffusion).
        **kwargs: as for :class:`ODEResNet`.
    """

    def __init__(
        self,
        arch: str = "resnet18",
        *,
        sigma: float = 0.5,
        diffusion: str = "normalized",
        eval_samples: int = 0,
        path_seed: int | None = None,
        method: str = "euler",
        **kwargs: Any,
    ):
        if diffusion not in DIFFUSIONS:
            raise ValueError(f"unknown diffusion {diffusion!r}; valid diffusions: {', '.join(DIFFUSIONS)}")
        make_diffusion(diffusion, sigma, channels=1)  # validates sigma before any work
        self._noise = dict(kind=diffusion, sigma=float(sigma))
        super().__init__(arch, method=method, **kwargs)
        self.eval_samples = 0
        self.path_seed: int | None = None
        self.set_noise(eval_samples=eval_samples, path_seed=path_seed)

    def _make_diffusion(self, channels: int) -> Diffusion:
        return make_diffusion(self._noise["kind"], self._noise["sigma"], channels)

    @property
    def sigma(self) -> float:
        """The noise magnitude."""
        return self._noise["sigma"]

    @property
    def diffusion(self) -> str:
        """The diffusion kind."""
        return self._noise["kind"]

    _KEEP = object()

    def set_noise(
        self,
        *,
        sigma: float | None = None,
        diffusion: str | None = None,
        eval_samples: int | None = None,
        path_seed: int | None | object = _KEEP,
    ) -> SDEResNet:
        """Change the noise; arguments left out keep their value.

        Changing the diffusion kind builds new diffusion modules (a learned diffusion
        starts again from its initial values).

        Args:
            sigma: noise magnitude, >= 0.
            diffusion: diffusion kind.
            eval_samples: Brownian paths averaged in eval mode (0: one or none).
            path_seed: seed of a fixed Brownian path shared by every sample in eval
                mode; None for fresh paths (or no noise when ``eval_samples == 0``).

        Returns:
            The model itself.

        Raises:
            ValueError: for sigma < 0, an unknown kind, a kind the solver method cannot
                handle, or eval_samples < 0 (nothing changes).
        """
        kind = self.diffusion if diffusion is None else diffusion
        new_sigma = self.sigma if sigma is None else sigma
        samples = self.eval_samples if eval_samples is None else eval_samples
        seed = self.path_seed if path_seed is SDEResNet._KEEP else path_seed
        if int(samples) != samples or samples < 0:
            raise ValueError(f"eval_samples must be an integer >= 0, got {samples}")
        if seed is not None and int(seed) != seed:
            raise ValueError(f"path_seed must be an integer or None, got {seed!r}")
        fresh = [make_diffusion(kind, new_sigma, s.blocks[-1].out_channels) for s in self.stages]
        if kind != self.diffusion:
            for stage, new in zip(self.stages, fresh):
                stage.set_diffusion(new)
        else:
            for stage in self.stages:
                stage.diffusion.sigma = new_sigma
        self._noise = dict(kind=kind, sigma=float(new_sigma))
        self.eval_samples = int(samples)
        self.path_seed = None if seed is None else int(seed)
        return self

    def _set_path(self, noise: bool, seed: int | None) -> None:
        for stage in self.stages:
            stage.noise = noise
            stage.path_seed = seed

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, in_channels, H, W)``.

        With the noise on and no fixed path, the Brownian paths are drawn from torch's
        generator, so ``torch.manual_seed`` reproduces them.

        Raises:
            ValueError: for Monte-Carlo prediction while hooks are registered: it calls
                every layer K times per forward pass, which hook-based attributions
                cannot follow (``neuralsde.attribute(..., noise="mc")`` averages
                attributions over paths instead).
        """
        if self.training:
            self._set_path(True, None)
            return super().forward(x)
        if self.eval_samples == 0:
            self._set_path(self.path_seed is not None, self.path_seed)
            return super().forward(x)
        if any(m._forward_hooks or m._forward_pre_hooks for m in self.stages[0].modules()):
            raise ValueError(
                "Monte-Carlo prediction (eval_samples > 0) runs every layer several times per forward pass, "
                "which hook-based attributions cannot follow; set eval_samples=0 and average attributions "
                "over fixed paths instead (neuralsde.attribute(..., noise='mc'))"
            )
        outs = []
        for k in range(self.eval_samples):
            self._set_path(True, None if self.path_seed is None else self.path_seed + k)
            outs.append(super().forward(x))
        return torch.stack(outs).mean(dim=0)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, diffusion={self.diffusion!r}, sigma={self.sigma}, "
            f"eval_samples={self.eval_samples}, path_seed={self.path_seed}"
        )


class DiscreteResNet(nn.Module):
    """The discrete ResNet that an ODE/SDE model equals at one Euler step per block.

    Shares the model's modules (weights included) and applies every block as the
    torchvision network would, but with a distinct activation module at every call
    site, so Captum's DeepLift runs on it. It is the reference the continuous models
    are checked against, and a DeepLift-ready plain ResNet in its own right.

    Args:
        model: an :class:`ODEResNet` or :class:`SDEResNet`.
    """

    def __init__(self, model: ODEResNet):
        super().__init__()
        if not isinstance(model, ODEResNet):
            raise ValueError(f"expected an ODEResNet or SDEResNet, got {type(model).__name__}")
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, in_channels, H, W)``."""
        m = self.model
        m._check_input(x)
        x = m.maxpool(m.relu(m.bn1(m.conv1(x))))
        for stage in m.stages:
            for block in stage.blocks:
                block.acts.reset()
                x = block(x)
        return m.fc(torch.flatten(m.avgpool(x), 1))
