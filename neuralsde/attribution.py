"""Attributions on ODE/SDE ResNets: what Captum needs, and a one-call ``attribute``.

Captum's methods run on [`ODEResNet`][neuralsde.models.ODEResNet] and [`SDEResNet`][neuralsde.sde_models.SDEResNet]
directly (``DeepLift(model).attribute(x, target=3)``), because the models provide:

* **A distinct activation module per drift evaluation.** DeepLift and GuidedBackprop
  hook every ``nn.ReLU`` and need each to be called once per forward pass; a solver calls
  each block's drift many times. Every evaluation takes its own modules from a pool sized
  for the solver (see [`ActivationPool`][neuralsde.blocks.ActivationPool]), so the rescale rule is
  applied at every evaluation and DeepLift's completeness holds through any fixed-step
  solver.
* **Frozen grids for adaptive methods.** An adaptive method chooses its steps per input
  (and per batch). ``model.freeze_grid(x)`` records the steps it takes on ``x`` and
  replays them with the same tableau afterwards: the model is then one fixed function,
  the same for an image alone or inside Captum's enlarged batches, and its number of
  evaluations is known. Hook-based methods refuse to run on an unfrozen adaptive model
  rather than give a silently wrong answer.
* **Direct back-propagation under attribution.** With ``adjoint=True``, passes whose
  input requires gradients or whose modules carry hooks back-propagate through the
  solver (the adjoint only approximates the gradient), with a one-time warning.
* **Blocks called as modules.** Every block of a stage is entered through its module
  call for its own time interval, whatever the solver, so Captum's layer and neuron
  methods (``LayerGradCam(model, model.layer4[-1])``, ``LayerConductance``,
  ``NeuronGradient``, ...) hook blocks and whole stages as they would on torchvision's
  ResNet; the state a hook returns is the one the network goes on with.
* **Noise modes for SDEs.** By default the noise is off in eval mode (the paper's
  protocol). ``model.set_noise(path_seed=s)`` fixes one Brownian path shared by the
  input, the baselines and every expanded copy (common random numbers), and
  [`attribute`][neuralsde.attribution.attribute] with ``noise="mc"`` averages attributions over K such paths and
  reports their standard error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from captum.attr import (
    DeepLift,
    DeepLiftShap,
    GradientShap,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    LayerGradCam,
    LayerIntegratedGradients,
    NoiseTunnel,
    Occlusion,
    Saliency,
)
from torch import Tensor, nn

from .models import ODEResNet
from .sde_models import SDEResNet
from .validate import MAX_SEED, check_count, check_seed

__all__ = ["ATTRIBUTION_METHODS", "NOISE_MODES", "Attribution", "attribute", "noise_path", "seeded"]

#: Noise modes of [`attribute`][neuralsde.attribution.attribute] for SDE models.
NOISE_MODES: tuple[str, ...] = ("off", "fixed", "mc")


@dataclass
class Attribution:
    """The result of [`attribute`][neuralsde.attribution.attribute].

    Attributes:
        attribution: the attribution, shaped like the input (layer methods: like the
            layer's output).
        delta: Captum's completeness delta per example (sum of attributions minus
            ``F(x) - F(baseline)``), for methods that have one; else None. For
            DeepLiftShap and GradientShap, one per example and baseline.
        stderr: with ``noise="mc"``, the standard error of the mean attribution over the
            Brownian paths; else None.
        method: the method's name.
        noise: the noise mode.
    """

    attribution: Tensor
    delta: Tensor | None
    stderr: Tensor | None
    method: str
    noise: str


@contextmanager
def noise_path(model: nn.Module, seed: int | None):
    """Within the block, an SDE model in eval mode uses the fixed shared path ``seed``.

    ``None`` switches the noise off. The model's previous noise settings come back
    afterwards. Does nothing for ODE models with ``seed=None``.
    """
    if not isinstance(model, SDEResNet):
        if seed is not None:
            raise ValueError(f"{type(model).__name__} has no noise; fixed noise paths need an SDEResNet")
        yield model
        return
    saved = (model.eval_samples, model.path_seed)
    model.set_noise(eval_samples=0, path_seed=seed)
    try:
        yield model
    finally:
        model.set_noise(eval_samples=saved[0], path_seed=saved[1])


@contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Within the block, torch's and NumPy's global generators start from ``seed``.

    Captum draws SmoothGrad's noise from torch's generator and GradientShap's
    interpolation points from NumPy's. The caller's generator states come back
    afterwards, as if nothing had been drawn.

    Args:
        seed: the seed, >= 0.
        device: the device the draws happen on (a CUDA device's generator is seeded and
            restored too).
    """
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    numpy_state = np.random.get_state()
    with torch.random.fork_rng(devices=cuda):
        torch.random.default_generator.manual_seed(int(seed))
        for index in cuda:
            torch.cuda.default_generators[index].manual_seed(int(seed))
        np.random.seed(int(seed) % 2**32)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)


def _target_indices(target: Any) -> list[int]:
    """Every class index in a Captum target (an int, a tensor, a list or tuple of them)."""
    if target is None:
        return []
    if torch.is_tensor(target):
        if target.is_floating_point() or target.is_complex():
            raise ValueError(f"target must hold integer class indices, got a tensor of dtype {target.dtype}")
        return [int(v) for v in target.flatten().tolist()]
    if isinstance(target, (list, tuple)):
        return [v for item in target for v in _target_indices(item)]
    if isinstance(target, (int, np.integer)) and not isinstance(target, bool):
        return [int(target)]
    raise ValueError(f"target must be an int, a tensor or a list of class indices, got {type(target).__name__}")


def _check_target(model: nn.Module, target: Any, batch: int) -> None:
    """Refuse negative and out-of-range class indices (Python would count from the end)."""
    classes = getattr(model, "num_classes", None)
    if torch.is_tensor(target) and target.dim() > 1:
        raise ValueError(f"a target tensor must be 0-d or of shape (B,) = ({batch},), got {tuple(target.shape)}")
    if (torch.is_tensor(target) and target.dim() == 1) or isinstance(target, list):
        if len(target) not in (1, batch):
            raise ValueError(f"expected one target or one per example ({batch}), got {len(target)}")
    for index in _target_indices(target):
        if index < 0 or (classes is not None and index >= classes):
            expected = f"in [0, {classes})" if classes is not None else ">= 0"
            raise ValueError(f"target must be a class index {expected}, got {index}")


def _default_layer(model: nn.Module) -> nn.Module:
    if isinstance(model, ODEResNet):
        return model.stages[-1]
    raise ValueError("layer methods need `layer=` (a module of the model) for models other than ODE/SDE ResNets")


def _shap_baselines(x: Tensor, n: int, seed: int) -> Tensor:
    """``n`` baselines of Gaussian noise with the input's per-channel mean and std."""
    gen = torch.Generator().manual_seed(seed)
    dims = [0] + list(range(2, x.dim()))
    mean = x.detach().mean(dim=dims, keepdim=True)
    std = x.detach().std(dim=dims, keepdim=True).clamp_min(1e-6)
    noise = torch.randn((n, *x.shape[1:]), generator=gen).to(x.device, x.dtype)
    return mean + std * noise


def _smoothgrad_defaults(x: Tensor) -> dict:
    # 10 noisy samples at 15% of the input range.
    return {"nt_type": "smoothgrad", "nt_samples": 10, "stdevs": 0.15 * float(x.detach().max() - x.detach().min())}


def _occlusion_defaults(x: Tensor) -> dict:
    side = max(1, min(x.shape[-2:]) // 8)
    return {"sliding_window_shapes": (x.shape[1], side, side), "strides": (x.shape[1], side, side)}


@dataclass(frozen=True)
class _Method:
    """One row of the method table: how [`attribute`][neuralsde.attribution.attribute] calls a Captum method.

    Attributes:
        make: ``make(model, layer)``, the Captum attribution object.
        baselines: ``"input"`` passes ``baselines`` on (None: Captum's default, zeros);
            ``"distribution"`` passes a distribution of baselines, by default 8 Gaussian
            images (see ``_shap_baselines``); ``None`` passes none.
        delta: the method returns Captum's completeness delta.
        layer: the method attributes at a layer (``layer=``, default the last stage).
        defaults: keyword defaults computed from the input, each overridable.
    """

    make: Callable[[nn.Module, nn.Module | None], Any]
    baselines: str | None = None
    delta: bool = False
    layer: bool = False
    defaults: Callable[[Tensor], dict] | None = None


#: The methods of [`attribute`][neuralsde.attribution.attribute], one row each.
_METHODS: dict[str, _Method] = {
    "saliency": _Method(lambda m, _: Saliency(m)),
    "input_x_gradient": _Method(lambda m, _: InputXGradient(m)),
    "integrated_gradients": _Method(lambda m, _: IntegratedGradients(m), "input", delta=True),
    "smoothgrad": _Method(lambda m, _: NoiseTunnel(Saliency(m)), defaults=_smoothgrad_defaults),
    "smoothgrad_ig": _Method(lambda m, _: NoiseTunnel(IntegratedGradients(m)), "input", defaults=_smoothgrad_defaults),
    "guided_backprop": _Method(lambda m, _: GuidedBackprop(m)),
    "deeplift": _Method(lambda m, _: DeepLift(m), "input", delta=True),
    "deeplift_shap": _Method(lambda m, _: DeepLiftShap(m), "distribution", delta=True),
    "gradient_shap": _Method(lambda m, _: GradientShap(m), "distribution", delta=True),
    "occlusion": _Method(lambda m, _: Occlusion(m), "input", defaults=_occlusion_defaults),
    "layer_gradcam": _Method(lambda m, layer: LayerGradCam(m, layer), layer=True),
    "layer_integrated_gradients": _Method(
        lambda m, layer: LayerIntegratedGradients(m, layer), "input", delta=True, layer=True
    ),
}
#: Method names accepted by [`attribute`][neuralsde.attribution.attribute].
ATTRIBUTION_METHODS: tuple[str, ...] = tuple(_METHODS)
_ALIASES = {"ig": "integrated_gradients", "deepshap": "deeplift_shap", "gradcam": "layer_gradcam"}


def _one(
    model: nn.Module, x: Tensor, method: str, target, baselines, layer, seed: int, kwargs: dict
) -> tuple[Tensor, Tensor | None]:
    row = _METHODS[method]
    kwargs = dict(kwargs)
    wants_delta = row.delta and kwargs.pop("return_convergence_delta", True)
    for key, value in (row.defaults(x) if row.defaults is not None else {}).items():
        kwargs.setdefault(key, value)
    if row.baselines == "distribution" and baselines is None:
        baselines = _shap_baselines(x, 8, seed)
    if row.baselines is not None:
        kwargs["baselines"] = baselines
    if wants_delta:
        kwargs["return_convergence_delta"] = True
    explainer = row.make(model, (layer or _default_layer(model)) if row.layer else None)
    with seeded(seed, x.device):
        out = explainer.attribute(x, target=target, **kwargs)
    return (out[0], out[1]) if wants_delta else (out, None)


def _check_baselines(baselines, x: Tensor, kind: str | None) -> None:
    """Baselines Captum can use with images ``x``: a number, or images of ``x``'s shape."""
    if baselines is None or kind is None:
        return
    image = tuple(x.shape[1:])
    if kind == "input":
        if isinstance(baselines, (int, float)) and not isinstance(baselines, bool):
            return
        expected = f"a number or a tensor of shape (1, {', '.join(map(str, image))}) or {tuple(x.shape)}"
        ok = torch.is_tensor(baselines) and tuple(baselines.shape) in ((1, *image), tuple(x.shape))
    else:
        expected = f"a tensor of N >= 1 baseline images, shape (N, {', '.join(map(str, image))})"
        ok = torch.is_tensor(baselines) and baselines.dim() == x.dim() and baselines.shape[0] >= 1
        ok = ok and tuple(baselines.shape[1:]) == image
    if not ok:
        got = tuple(baselines.shape) if torch.is_tensor(baselines) else type(baselines).__name__
        raise ValueError(f"baselines must be {expected} for these inputs, got {got}")


def _empty(model: nn.Module, x: Tensor, name: str, layer: nn.Module | None, noise: str) -> Attribution:
    """The attribution of an empty batch: empty, shaped as a batch's would be (the models return empty logits)."""
    row = _METHODS[name]
    shape = tuple(x.shape)
    if row.layer:
        layer = layer or _default_layer(model)
        seen: list[tuple[int, ...]] = []
        handle = layer.register_forward_hook(lambda m, i, out: seen.append(tuple(out.shape)))
        try:
            with torch.no_grad():
                model(x)
        finally:
            handle.remove()
        shape = seen[0] if name != "layer_gradcam" else (0, 1, *seen[0][2:])
    attr = x.new_zeros(shape)
    delta = x.new_zeros((0,)) if row.delta else None
    return Attribution(attr, delta, x.new_zeros(shape) if noise == "mc" else None, name, noise)


def attribute(
    model: nn.Module,
    inputs: Tensor,
    method: str = "integrated_gradients",
    *,
    target: int | Tensor | None = None,
    baselines: Tensor | float | None = None,
    layer: nn.Module | None = None,
    noise: str = "off",
    samples: int = 8,
    seed: int = 0,
    **kwargs: Any,
) -> Attribution:
    """Attribute a model's output to its input with one of Captum's methods.

    Args:
        model: an ODEResNet / SDEResNet (or any image classifier).
        inputs: images, shape ``(B, C, H, W)``.
        method: one of ``ATTRIBUTION_METHODS`` (aliases: ``ig``, ``deepshap``,
            ``gradcam``).
        target: the logit to explain: a class index in ``[0, num_classes)``, or one per
            example.
        baselines: Captum's baselines (zeros where Captum defaults to them). For
            ``deeplift_shap`` and ``gradient_shap`` the default is 8 Gaussian images
            with the input's per-channel mean and standard deviation (seeded by
            ``seed``).
        layer: for the layer methods, the layer to attribute at; default the last
            stage's output.
        noise: for SDE models: ``"off"`` (the paper's protocol), ``"fixed"`` (one
            Brownian path shared by the input, the baselines and Captum's copies, seeded
            by ``seed``) or ``"mc"`` (the mean over ``samples`` such paths, with its
            standard error). ODE models accept ``"off"`` only.
        samples: Brownian paths averaged with ``noise="mc"``.
        seed: an integer in ``[0, 2**63)`` (Python, NumPy or a 0-d integer tensor): the
            seed of the fixed path (the first of the Monte-Carlo paths), of the
            default SHAP baselines, and of the random draws of the methods themselves
            (SmoothGrad's noise, GradientShap's points), which run with torch's and
            NumPy's generators seeded by it; the caller's generator states come back.
        **kwargs: passed to the Captum method's ``attribute`` (e.g. ``n_steps`` for IG,
            ``nt_samples`` and ``stdevs`` for SmoothGrad, whose default noise level is
            15% of the input range).

    Returns:
        An [`Attribution`][neuralsde.attribution.Attribution] with the attribution and, where the method has one, its
        completeness delta.

    Raises:
        ValueError: for an unknown method or noise mode, a noise mode the model cannot
            have, inputs that are not a batch of images, a target that is not a class
            index (negative, or not below the model's ``num_classes``), baselines that
            do not fit the inputs, or a seed that is not an integer in ``[0, 2**63)``.

    An empty batch gives an empty attribution (and delta), as the models give empty
    logits.
    """
    seed = check_seed(seed)
    name = _ALIASES.get(method, method)
    if name not in ATTRIBUTION_METHODS:
        raise ValueError(f"unknown attribution method {method!r}; valid methods: {', '.join(ATTRIBUTION_METHODS)}")
    if noise not in NOISE_MODES:
        raise ValueError(f"unknown noise mode {noise!r}; valid modes: {', '.join(NOISE_MODES)}")
    if noise != "off" and not isinstance(model, SDEResNet):
        raise ValueError(f"noise={noise!r} needs an SDEResNet; {type(model).__name__} has no noise")
    if not torch.is_tensor(inputs) or inputs.dim() != 4:
        got = tuple(inputs.shape) if torch.is_tensor(inputs) else type(inputs).__name__
        raise ValueError(f"inputs must be images of shape (B, C, H, W), got {got}")
    samples = check_count(samples, "samples", 1)
    _check_target(model, target, inputs.shape[0])
    _check_baselines(baselines, inputs, _METHODS[name].baselines)
    if inputs.shape[0] == 0:
        return _empty(model, inputs, name, layer, noise)
    training = model.training
    model.eval()
    try:
        if noise in ("off", "fixed"):
            with noise_path(model, seed if noise == "fixed" else None):
                attr, delta = _one(model, inputs, name, target, baselines, layer, seed, kwargs)
            return Attribution(attr, delta, None, name, noise)
        runs = []
        for k in range(int(samples)):
            with noise_path(model, (seed + k) % (MAX_SEED + 1)):
                runs.append(_one(model, inputs, name, target, baselines, layer, seed, kwargs))
        attrs = torch.stack([a for a, _ in runs])
        mean = attrs.mean(dim=0)
        stderr = attrs.std(dim=0) / math.sqrt(len(runs)) if len(runs) > 1 else torch.zeros_like(mean)
        delta = None if runs[0][1] is None else torch.stack([d for _, d in runs]).mean(dim=0)
        return Attribution(mean, delta, stderr, name, noise)
    finally:
        model.train(training)
