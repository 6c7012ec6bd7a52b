"""ODEResNet: the drop-in continuous-time twin of torchvision's ResNets.

It and its noisy subclass, [SDEResNet][neuralsde.sde_models.SDEResNet], take images
``(B, C, H, W)`` and return logits ``(B, num_classes)``, like torchvision's ResNet, and
have the same parameter names, so a state dict moves between a torchvision ResNet and
its twin in either direction. With Euler's method and one step per block, the twin
computes what the torchvision network computes, and so does
[DiscreteResNet][neuralsde.discrete.DiscreteResNet], the same network without a solver.

    >>> import torchvision, neuralsde
    >>> tv = torchvision.models.resnet18(num_classes=10)
    >>> ode = neuralsde.ODEResNet.from_torchvision(tv)              # exact twin
    >>> ode.set_solver(method="rk4", steps_per_block=4)             # finer dynamics
    >>> sde = neuralsde.SDEResNet("resnet50", sigma=0.5)           # noise in train()
    >>> pre = neuralsde.ODEResNet("resnet50", weights="IMAGENET1K_V2", num_classes=10)

Pretrained weights come from torchvision, by enum or by name, as torchvision's own
constructors take them (torchvision downloads them on first use), or from a local file.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
import torchvision
from torch import Tensor, nn

from .blocks import has_hooks
from .diffusion import Diffusion
from .parts import ARCHS, CIFAR_ARCHS, TORCHVISION_ARCHS, ResNetParts, Weights
from .solvers import SolverStats, all_finite, is_adaptive
from .stage import ContinuousStage
from .weights import is_weights_file, parts_from_file

__all__ = [
    "ARCHS",
    "CIFAR_ARCHS",
    "ODEResNet",
    "TORCHVISION_ARCHS",
]

_Model = TypeVar("_Model", bound="ODEResNet")


class ODEResNet(nn.Module):
    """A ResNet whose stages are neural ODEs, a drop-in for torchvision's ResNet.

    Build by torchvision name (``ODEResNet("resnet50", num_classes=10)``), with
    torchvision's pretrained weights (``ODEResNet("resnet50", weights="DEFAULT")``),
    build one of He et al.'s CIFAR ResNets by name (``ODEResNet("resnet20",
    weights="resnet20-12fca82f.th")``), convert a torchvision model with
    [`from_torchvision`][neuralsde.models.ODEResNet.from_torchvision], or build a small
    CIFAR-style network for 8x8 to 32x32 images with [`small`][neuralsde.models.ODEResNet.small].

    Args:
        arch: a name in ``ARCHS``: torchvision's ResNets (``TORCHVISION_ARCHS``) or He et
            al.'s CIFAR ResNets (``CIFAR_ARCHS``: ``resnet20``, ``resnet32``, ``resnet44``,
            ``resnet56``, ``resnet110``; 3x3 stem, three stages of 16/32/64 channels,
            parameter-free "option A" shortcuts as discrete transitions, 10 classes).
        weights: None for a random initialisation; torchvision's weights for ``arch``,
            as its enum (``ResNet50_Weights.IMAGENET1K_V2``) or by name
            (``"IMAGENET1K_V2"``, ``"DEFAULT"``), which torchvision downloads (and
            caches) on first use; or the path of a local file: a state dict with
            torchvision's parameter names (``torch.save(model.state_dict(), path)``), a
            checkpoint of [`train`][neuralsde.train.train], or a checkpoint with its
            state dict under ``"state_dict"``, ``module.`` prefixes and a ``linear``
            classifier allowed, as the public CIFAR ResNet checkpoints are saved (see
            [`read_weights`][neuralsde.weights.read_weights]).
        progress: show torchvision's download progress bar.
        num_classes: number of logits; None keeps the pretrained head (1000 without
            weights). With weights and another number, the head is a new
            ``nn.Linear`` with torchvision's initialisation, for fine-tuning.
        in_channels: channels of the input images; with weights and a number other
            than 3, the stem convolution is a new one (same shape otherwise, Kaiming
            initialisation as torchvision's), since pretrained filters see RGB.
        method: ODE method (see ``neuralsde.integrate``); ``"euler"`` with one step per
            block is the discrete ResNet.
        steps_per_block: fixed steps per block (fixed-step methods).
        T: time horizon of each stage; None gives every block unit time.
        rtol: relative tolerance of adaptive methods.
        atol: absolute tolerance of adaptive methods.
        adjoint: back-propagate with the adjoint method.
    """

    #: The solver settings the constructors take besides the architecture.
    SETTINGS: tuple[str, ...] = ("method", "steps_per_block", "T", "rtol", "atol", "adjoint")

    def __init__(
        self,
        arch: str = "resnet18",
        *,
        weights: Weights = None,
        progress: bool = True,
        num_classes: int | None = None,
        in_channels: int = 3,
        method: str = "euler",
        steps_per_block: int = 1,
        T: float | None = None,
        rtol: float = 1e-4,
        atol: float = 1e-5,
        adjoint: bool = False,
        _parts: ResNetParts | None = None,
        _diffusion: Callable[[int, str, int, bool], Diffusion] | None = None,
    ):
        super().__init__()
        extra: dict[str, Tensor] = {}
        if _parts is not None:
            parts = _parts
        else:
            if is_weights_file(weights):
                parts, extra = parts_from_file(arch, weights)
            else:
                parts = ResNetParts.named(arch, weights=weights, progress=progress)
            parts.adapt(num_classes=num_classes, in_channels=in_channels)
        self.arch = parts.arch
        self.in_channels = parts.in_channels
        self.conv1, self.bn1 = parts.conv1, parts.bn1
        self.relu = nn.ReLU()
        self.maxpool = parts.maxpool
        self.num_stages = len(parts.stages)
        for i, blocks in enumerate(parts.stages):
            name = f"layer{i + 1}"
            # An SDE network's diffusion per stage, from (index, name, channels, has continuous blocks).
            continuous = any(block.shape_preserving for block in blocks)
            diffusion = None if _diffusion is None else _diffusion(i, name, blocks[-1].out_channels, continuous)
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
        if extra:  # a weights file's learned diffusion parameters, where this model has the same
            own = self.state_dict()
            fit = {k: v for k, v in extra.items() if k in own and own[k].shape == v.shape}
            nn.Module.load_state_dict(self, fit, strict=False)

    # -- construction -------------------------------------------------------------
    @classmethod
    def _check_settings(cls, where: str, kwargs: dict, also: tuple[str, ...] = ()) -> None:
        unknown = sorted(set(kwargs) - set(cls.SETTINGS) - set(also))
        if unknown:
            raise TypeError(
                f"{cls.__name__}.{where}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}; "
                f"it takes {', '.join((*also, *cls.SETTINGS))}"
            )

    @classmethod
    def from_torchvision(
        cls: type[_Model],
        model: nn.Module,
        *,
        num_classes: int | None = None,
        in_channels: int | None = None,
        **kwargs: Any,
    ) -> _Model:
        """The continuous-time twin of a torchvision ResNet (its weights are copied).

        Args:
            model: a ``torchvision.models.ResNet`` (any depth, width or grouping),
                e.g. ``torchvision.models.resnet50(weights="DEFAULT")``.
            num_classes: None keeps the model's classifier. Another number of classes
                replaces it with a new ``nn.Linear`` (torchvision's initialisation):
                the pretrained head is dropped, as for fine-tuning on new labels.
            in_channels: None keeps the model's stem. Another number of input
                channels replaces the stem convolution with a new one of the same
                kernel, stride and padding (Kaiming initialisation, as torchvision's).
            **kwargs: solver (and, for SDEResNet, noise) settings, as in the
                constructor.

        Raises:
            ValueError: if ``model`` is not a torchvision ResNet.
            TypeError: for any other keyword argument (the architecture and the
                weights are the model's).
        """
        cls._check_settings("from_torchvision", kwargs, ("num_classes", "in_channels"))
        if not isinstance(model, torchvision.models.ResNet):
            raise ValueError(f"expected a torchvision.models.ResNet, got {type(model).__name__}")
        parts = ResNetParts.from_torchvision(copy.deepcopy(model))
        parts.adapt(num_classes=num_classes, in_channels=in_channels)
        twin = cls(_parts=parts, **kwargs)
        return twin.train(model.training)

    @classmethod
    def small(
        cls: type[_Model],
        *,
        in_channels: int = 3,
        num_classes: int = 10,
        widths: Sequence[int] = (16, 32, 64),
        blocks: int = 2,
        **kwargs: Any,
    ) -> _Model:
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

        Raises:
            TypeError: for any other keyword argument.
        """
        cls._check_settings("small", kwargs)
        return cls(_parts=ResNetParts.small(in_channels, num_classes, tuple(widths), blocks), **kwargs)

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
        changes = dict(method=method, steps_per_block=steps_per_block, T=T, rtol=rtol, atol=atol, adjoint=adjoint)
        settings = [stage.solver.updated(**changes) for stage in self.stages]  # all valid before any changes
        for stage, new in zip(self.stages, settings):
            stage.set_solver(new)
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
                stage.stop_recording()
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
        """Whether the step grid is frozen (see [`freeze_grid`][neuralsde.models.ODEResNet.freeze_grid])."""
        return self.layer1.frozen is not None

    # -- forward ----------------------------------------------------------------------
    def check_input(self, x: Tensor) -> None:
        """Raise ValueError unless ``x`` is a batch of images this network takes: shape (B, in_channels, H, W)."""
        if not torch.is_tensor(x) or x.dim() != 4 or x.shape[1] != self.in_channels:
            got = tuple(x.shape) if torch.is_tensor(x) else type(x).__name__
            raise ValueError(f"expected images of shape (B, {self.in_channels}, H, W), got {got}")

    def _attributing(self, x: Tensor) -> bool:
        """Whether gradients of this pass are wanted for the input or hooked modules."""
        if x.requires_grad:
            return True
        return has_hooks(self)

    def _choose_backprop(self, x: Tensor) -> None:
        """With adjoint=True, back-propagate directly while attributions are computed.

        The adjoint only approximates the gradient of the forward pass (it integrates its
        own ODE backwards) and calls the drift again during the backward pass, which
        hook-based attributions cannot follow. So when the input requires gradients or
        hooks are registered on the model, the solver back-propagates directly.
        """
        if not any(stage.solver.adjoint for stage in self.stages):
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

    def stem(self, x: Tensor) -> Tensor:
        """The discrete layers before the first stage, as torchvision's ``_forward_impl``.

        ``maxpool(relu(bn1(conv1(x))))``: ``(B, in_channels, H, W) -> (B, C, H', W')``.
        """
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def forward_features(self, x: Tensor) -> Tensor:
        """The pooled features before the classifier: ``(B, C, H, W) -> (B, F)``.

        Raises:
            SolverError: if a stage's state stopped being finite (checked once, after
                the last stage: one read back to the host per forward pass).
        """
        self.check_input(x)
        self._choose_backprop(x)
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x, check_finite=False)
        self.check_finite()
        return torch.flatten(self.avgpool(x), 1)

    def check_finite(self) -> None:
        """Raise if a state of the last forward pass was not finite.

        Every continuous block's smallest and largest element are kept on the device
        during the pass (one operator per block); this checks them all and reads the
        answer back at once. Under ``torch.compile`` nothing is recorded (a
        read would break the graph), and non-finite states show as non-finite logits.

        Raises:
            SolverError: naming the first stage, and the time in it, where the state
                stopped being finite, and the method.
        """
        values = [v for stage in self.stages for v in stage.block_extrema()]
        if values and not bool(all_finite(values)):  # none under torch.compile: nothing to read back
            for stage in self.stages:
                stage.check_finite()

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
