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
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchvision
from torch import Tensor, nn

from .blocks import ResBlock
from .diffusion import DIFFUSIONS, Diffusion, make_diffusion
from .integrate import SolverStats
from .stage import ContinuousStage

__all__ = ["ODEResNet", "SDEResNet", "TORCHVISION_ARCHS"]

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
            )
            self.add_module(name, stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = parts.fc
        self.num_classes = self.fc.out_features

    # -- construction -------------------------------------------------------------
    def _make_diffusion(self, channels: int) -> Diffusion | None:
        return None

    @classmethod
    def from_torchvision(cls, model: nn.Module, **kwargs) -> ODEResNet:
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
        **kwargs,
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

    # -- forward ----------------------------------------------------------------------
    def _check_input(self, x: Tensor) -> None:
        if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"expected images of shape (B, {self.in_channels}, H, W), got {got}")

    def forward_features(self, x: Tensor) -> Tensor:
        """The pooled features before the classifier: ``(B, C, H, W) -> (B, F)``."""
        self._check_input(x)
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

    In ``train()`` the noise is on. In ``eval()`` it is off (the paper computes
    attributions without noise) unless ``eval_samples = K > 0``: then the logits are the
    average over K Brownian paths (Monte Carlo prediction).

    Args:
        arch: a name in ``TORCHVISION_ARCHS``.
        sigma: noise magnitude, >= 0 (for "normalized": noise RMS over activation RMS
            per unit time, the paper's 0.1, 0.25, 0.5, 0.75).
        diffusion: ``"normalized"`` (the paper's), ``"additive"``, ``"multiplicative"``
            or ``"learned"``.
        eval_samples: Brownian paths averaged in eval mode; 0 switches noise off there.
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
        method: str = "euler",
        **kwargs,
    ):
        if diffusion not in DIFFUSIONS:
            raise ValueError(f"unknown diffusion {diffusion!r}; valid diffusions: {', '.join(DIFFUSIONS)}")
        make_diffusion(diffusion, sigma, channels=1)  # validates sigma before any work
        self._noise = dict(kind=diffusion, sigma=float(sigma))
        super().__init__(arch, method=method, **kwargs)
        self.eval_samples = 0
        self.set_noise(eval_samples=eval_samples)

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

    def set_noise(
        self,
        *,
        sigma: float | None = None,
        diffusion: str | None = None,
        eval_samples: int | None = None,
    ) -> SDEResNet:
        """Change the noise; arguments left None keep their value.

        Changing the diffusion kind builds new diffusion modules (a learned diffusion
        starts again from its initial values).

        Returns:
            The model itself.

        Raises:
            ValueError: for sigma < 0, an unknown kind, a kind the solver method cannot
                handle, or eval_samples < 0 (nothing changes).
        """
        kind = self.diffusion if diffusion is None else diffusion
        new_sigma = self.sigma if sigma is None else sigma
        samples = self.eval_samples if eval_samples is None else eval_samples
        if int(samples) != samples or samples < 0:
            raise ValueError(f"eval_samples must be an integer >= 0, got {samples}")
        fresh = [make_diffusion(kind, new_sigma, s.blocks[-1].out_channels) for s in self.stages]
        if kind != self.diffusion:
            for stage, new in zip(self.stages, fresh):
                stage.set_diffusion(new)
        else:
            for stage in self.stages:
                stage.diffusion.sigma = new_sigma
        self._noise = dict(kind=kind, sigma=float(new_sigma))
        self.eval_samples = int(samples)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, in_channels, H, W)``.

        With the noise on (train mode, or eval mode with ``eval_samples > 0``) the
        Brownian paths are drawn from torch's generator, so ``torch.manual_seed``
        reproduces them.
        """
        monte_carlo = not self.training and self.eval_samples > 0
        for stage in self.stages:
            stage.noise = self.training or monte_carlo
        if not monte_carlo:
            return super().forward(x)
        return torch.stack([super(SDEResNet, self).forward(x) for _ in range(self.eval_samples)]).mean(dim=0)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, diffusion={self.diffusion!r}, sigma={self.sigma}, "
            f"eval_samples={self.eval_samples}"
        )
