"""The layers a continuous-time ResNet is assembled from.

A torchvision ResNet by name (with torchvision's pretrained weights, or a local state
dict), a torchvision model, one of He et al.'s CIFAR ResNets by name (``resnet20`` ...
``resnet110``), or a small CIFAR-style network, each taken apart into the same pieces:
the stem (``conv1``, ``bn1``, a ReLU, ``maxpool``), the stages' blocks and the classifier.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from .blocks import ResBlock
from .validate import check_count

__all__ = [
    "ARCHS",
    "CIFAR_ARCHS",
    "TORCHVISION_ARCHS",
    "ResNetParts",
    "Weights",
    "ZeroPadShortcut",
    "pretrained_torchvision",
]

#: What ``weights=`` takes: None, a torchvision weights enum, its name, or a file path.
Weights = WeightsEnum | str | os.PathLike | None


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

#: He et al.'s CIFAR-10 ResNets (Deep Residual Learning, section 4.2), buildable by name:
#: basic blocks per stage, in three stages of 16, 32 and 64 channels (6n + 2 layers).
CIFAR_ARCHS: dict[str, int] = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9, "resnet110": 18}
#: The channels of the CIFAR ResNets' three stages.
CIFAR_WIDTHS: tuple[int, ...] = (16, 32, 64)

#: Every architecture the constructors take by name.
ARCHS: tuple[str, ...] = (*TORCHVISION_ARCHS, *CIFAR_ARCHS)


class ZeroPadShortcut(nn.Module):
    """He et al.'s parameter-free "option A" shortcut of the CIFAR ResNets.

    Where a block halves the resolution and widens the state, the identity branch keeps
    every ``stride``-th pixel and pads the new channels with zeros, as many before the
    old ones as after them: ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, c, c))`` for 16 -> 32
    channels with ``c = 8``. It has no parameters, so a state dict has no key for it.

    Args:
        in_channels: channels entering the block.
        out_channels: channels leaving it (``in_channels`` plus an even number).
        stride: the subsampling of the block.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 2):
        super().__init__()
        extra = out_channels - in_channels
        if extra < 0 or extra % 2:
            raise ValueError(
                f"a zero-padding shortcut widens by an even number of channels, got {in_channels} -> {out_channels}"
            )
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.pad = extra // 2

    def forward(self, x: Tensor) -> Tensor:
        """``(B, C_in, H, W) -> (B, C_out, ceil(H / stride), ceil(W / stride))``."""
        return F.pad(x[:, :, :: self.stride, :: self.stride], (0, 0, 0, 0, self.pad, self.pad))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


@dataclass
class ResNetParts:
    """The layers a model is assembled from (shared with their source, not copied).

    Attributes:
        arch: the architecture's name (``"small"`` or ``"torchvision"`` if it has none).
        in_channels: channels of the input images.
        conv1: the stem's convolution.
        bn1: the stem's normalisation.
        maxpool: the stem's pooling (an identity for small images).
        stages: each stage's blocks, in order.
        fc: the classifier.
    """

    arch: str
    in_channels: int
    conv1: nn.Module
    bn1: nn.Module
    maxpool: nn.Module
    stages: list[list[ResBlock]]
    fc: nn.Linear

    @classmethod
    def from_torchvision(cls, model: nn.Module, arch: str = "torchvision") -> ResNetParts:
        if not isinstance(model, torchvision.models.ResNet):
            raise ValueError(f"expected a torchvision.models.ResNet, got {type(model).__name__}")
        stages = [
            [ResBlock.from_torchvision(block) for block in layer]
            for layer in (model.layer1, model.layer2, model.layer3, model.layer4)
        ]
        return cls(arch, model.conv1.in_channels, model.conv1, model.bn1, model.maxpool, stages, model.fc)

    @classmethod
    def named(cls, arch: str, *, weights: Weights = None, progress: bool = True) -> ResNetParts:
        """torchvision's ``arch`` with 1000 classes and RGB input (see ``pretrained_torchvision``).

        A CIFAR ResNet (``CIFAR_ARCHS``) has 10 classes and RGB input; it has no weights by
        name (torchvision has none for it): its weights come from a file (``parts_from_file``).
        """
        if arch in CIFAR_ARCHS:
            if weights is not None:
                raise ValueError(
                    f"{arch} has no weights by name (torchvision has no CIFAR ResNets); pass the path of a "
                    f"checkpoint file, e.g. {arch}-*.th of akamaster/pytorch_resnet_cifar10; got {weights!r}, "
                    "which is no file"
                )
            return cls.cifar(arch)
        if arch not in TORCHVISION_ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; valid architectures: {', '.join(ARCHS)}")
        if weights is None:
            model = torchvision.models.get_model(arch, weights=None)
        else:
            model = pretrained_torchvision(arch, weights, progress=progress)
        return cls.from_torchvision(model, arch)

    def adapt(self, *, num_classes: int | None = None, in_channels: int | None = None) -> None:
        """Give the network another number of classes or of input channels (in place).

        A new classifier (``nn.Linear``, torchvision's initialisation) replaces the old
        one when ``num_classes`` differs from its number of outputs; a new stem
        convolution (same kernel, stride and padding, Kaiming initialisation as in
        torchvision) replaces the old one when ``in_channels`` differs. None keeps a
        layer.
        """
        if num_classes is not None:
            _check_count("num_classes", num_classes)
            if num_classes != self.fc.out_features:
                self.fc = nn.Linear(self.fc.in_features, int(num_classes), bias=self.fc.bias is not None)
        if in_channels is not None:
            _check_count("in_channels", in_channels)
            if in_channels != self.in_channels:
                old = self.conv1
                self.conv1 = nn.Conv2d(
                    int(in_channels),
                    old.out_channels,
                    old.kernel_size,
                    stride=old.stride,
                    padding=old.padding,
                    bias=old.bias is not None,
                )
                nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
                self.in_channels = int(in_channels)

    @classmethod
    def small(cls, in_channels: int, num_classes: int, widths: Sequence[int], blocks: int) -> ResNetParts:
        _check_count("in_channels", in_channels)
        _check_count("num_classes", num_classes)
        _check_count("blocks", blocks)
        if len(widths) == 0:
            raise ValueError("widths must hold at least one channel count, got none")
        widths = tuple(check_count(w, f"widths[{i}]", 1) for i, w in enumerate(widths))
        return cls._cifar_style("small", in_channels, num_classes, widths, blocks, _basic_block)

    @classmethod
    def cifar(cls, arch: str, in_channels: int = 3, num_classes: int = 10) -> ResNetParts:
        """He et al.'s CIFAR ResNet ``arch`` (a name in ``CIFAR_ARCHS``), randomly initialised.

        A 3x3 stem convolution with 16 channels and no max-pooling; three stages of 16, 32
        and 64 channels with ``CIFAR_ARCHS[arch]`` basic blocks each, the first block of
        the second and third stages halving the resolution with a
        [`ZeroPadShortcut`][neuralsde.parts.ZeroPadShortcut] (a discrete transition); the
        classifier is ``fc``, a ``Linear(64, num_classes)``. Convolutions get Kaiming
        initialisation, as in torchvision.
        """
        if arch not in CIFAR_ARCHS:
            raise ValueError(f"unknown CIFAR architecture {arch!r}; valid: {', '.join(CIFAR_ARCHS)}")
        _check_count("in_channels", in_channels)
        _check_count("num_classes", num_classes)
        return cls._cifar_style(arch, in_channels, num_classes, CIFAR_WIDTHS, CIFAR_ARCHS[arch], _zero_pad_block)

    @classmethod
    def _cifar_style(cls, arch, in_channels, num_classes, widths, blocks, make_block) -> ResNetParts:
        """A 3x3 stem without pooling, then stages of ``blocks`` blocks, every stage after the first halving."""
        conv1 = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        stages, channels = [], widths[0]
        for i, width in enumerate(widths):
            stage = []
            for j in range(blocks):
                stride = 2 if (i > 0 and j == 0) else 1
                stage.append(make_block(channels, width, stride))
                channels = width
            stages.append(stage)
        stem_norm, head = nn.BatchNorm2d(widths[0]), nn.Linear(channels, num_classes)
        parts = cls(arch, in_channels, conv1, stem_norm, nn.Identity(), stages, head)
        for module in [conv1, *[b for stage in stages for b in stage]]:
            for m in module.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        return parts

    def as_module(self) -> nn.Module:
        """The parts under torchvision's names (``conv1``, ``bn1``, ``layer1`` ..., ``fc``), for their state dict."""
        holder = nn.Module()
        holder.conv1, holder.bn1 = self.conv1, self.bn1
        for i, blocks in enumerate(self.stages):
            holder.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        holder.fc = self.fc
        return holder


def pretrained_torchvision(arch: str, weights: Weights, *, progress: bool = True) -> nn.Module:
    """torchvision's ResNet ``arch`` with the given weights.

    Args:
        arch: a name in ``TORCHVISION_ARCHS``.
        weights: torchvision's weights for ``arch``: its enum member (e.g.
            ``ResNet50_Weights.IMAGENET1K_V2``) or the member's name (``"IMAGENET1K_V2"``,
            ``"DEFAULT"``, ``"ResNet50_Weights.DEFAULT"``), which torchvision downloads
            and caches (``weights.get_state_dict``); or the path of a local file holding
            a state dict with torchvision's parameter names (loaded with
            ``weights_only=True``; its classifier sets the number of classes).
        progress: show torchvision's download progress bar.

    Raises:
        ValueError: for weights of another architecture, an unknown name that is no
            file either, or a file that does not hold such a state dict.
    """
    if isinstance(weights, os.PathLike) or (isinstance(weights, str) and Path(weights).is_file()):
        state = torch.load(weights, map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or "fc.weight" not in state:
            raise ValueError(f"expected a torchvision ResNet state dict in {os.fspath(weights)!r}, got no 'fc.weight'")
        model = torchvision.models.get_model(arch, weights=None, num_classes=state["fc.weight"].shape[0])
        model.load_state_dict(state)
        return model
    enum = torchvision.models.get_model_weights(arch)
    if isinstance(weights, str):
        name = weights.removeprefix(enum.__name__ + ".")
        if name not in enum.__members__:
            raise ValueError(
                f"weights for {arch} must name one of {', '.join(enum.__members__)} or be a state dict file; "
                f"got {weights!r}"
            )
        weights = enum[name]
    elif not isinstance(weights, enum):
        raise ValueError(
            f"weights for {arch} must be a {enum.__name__} (e.g. {enum.__name__}.DEFAULT), its name or a file path; "
            f"got {weights!r}"
        )
    return torchvision.models.get_model(arch, weights=weights, progress=progress)


def _check_count(name: str, value: int) -> None:
    check_count(value, name, 1)


def _two_convs(c_in: int, c_out: int, stride: int, shortcut: nn.Module | None) -> ResBlock:
    """A basic block: two 3x3 convolutions with BatchNorm, and ``shortcut`` where the shape changes."""
    return ResBlock(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        downsample=shortcut,
    )


def _zero_pad_block(c_in: int, c_out: int, stride: int) -> ResBlock:
    """A CIFAR ResNet's basic block: its shortcut pads with zeros where the shape changes (option A)."""
    shortcut = ZeroPadShortcut(c_in, c_out, stride) if stride != 1 or c_in != c_out else None
    return _two_convs(c_in, c_out, stride, shortcut)


def _basic_block(c_in: int, c_out: int, stride: int) -> ResBlock:
    downsample = None
    if stride != 1 or c_in != c_out:
        downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
    return _two_convs(c_in, c_out, stride, downsample)
