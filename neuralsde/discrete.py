"""DiscreteResNet: an ODE/SDE model's network without a solver, the reference its twins are checked against."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .models import ODEResNet

__all__ = ["DiscreteResNet"]


class DiscreteResNet(nn.Module):
    """The discrete ResNet that an ODE/SDE model equals at one Euler step per block.

    Shares the model's modules (weights included) and applies every block as the
    torchvision network would, but with a distinct activation module at every call
    site, so Captum's DeepLift runs on it. It is the reference the continuous models
    are checked against, and a DeepLift-ready plain ResNet in its own right.

    Args:
        model: an [`ODEResNet`][neuralsde.models.ODEResNet] or [`SDEResNet`][neuralsde.sde_models.SDEResNet].
    """

    def __init__(self, model: ODEResNet):
        super().__init__()
        if not isinstance(model, ODEResNet):
            raise ValueError(f"expected an ODEResNet or SDEResNet, got {type(model).__name__}")
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes)`` for images ``(B, in_channels, H, W)``."""
        m = self.model
        m.check_input(x)
        x = m.stem(x)
        for stage in m.stages:
            for block in stage.blocks:
                x = block(x)
        return m.fc(torch.flatten(m.avgpool(x), 1))
