"""The layers a continuous-time ResNet is assembled from.

A torchvision ResNet by name, a (pretrained) torchvision model, or a small CIFAR-style
network, each taken apart into the same pieces: the stem (``conv1``, ``bn1``, a ReLU,
``maxpool``), the stages' blocks and the classifier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torchvision
from torch import nn

from .blocks import ResBlock

__all__ = ["TORCHVISION_ARCHS", "ResNetParts"]


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
    def named(cls, arch: str, num_classes: int, in_channels: int) -> ResNetParts:
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
    def small(cls, in_channels: int, num_classes: int, widths: Sequence[int], blocks: int) -> ResNetParts:
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
