"""Robustness metrics of attributions.

* [`sensitivity`][neuralsde.metrics.sensitivity]: Captum's max-sensitivity (Yeh et al., NeurIPS 2019), the metric of
  the paper's Tables 1-3: ``max over ||d||_inf <= r of ||A(x + d) - A(x)|| / ||A(x)||``,
  estimated from random perturbations.
* [`kendall_tau`][neuralsde.metrics.kendall_tau] and
  [`topk_intersection`][neuralsde.metrics.topk_intersection] between the attribution
  maps of ``x`` and of a perturbed ``x``: rank correlation and overlap of the k most important pixels
  (Chen et al., NeurIPS 2019).
* [`topk_attack`][neuralsde.metrics.topk_attack]: Ghorbani et al.'s (AAAI 2019) top-k attack, a projected search
  for the perturbation that moves the most attribution mass out of the original top-k
  pixels while the predicted label stays.
* [`localisation`][neuralsde.metrics.localisation]: the fraction of attribution mass inside a ground-truth mask.

An *importance map* is ``sum over channels of |A|``, one number per pixel.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = [
    "importance",
    "kendall_tau",
    "localisation",
    "sensitivity",
    "smooth_relu",
    "topk_attack",
    "topk_intersection",
]


def importance(attribution: Tensor) -> Tensor:
    """Per-pixel importance ``sum_c |A_c|``: ``(B, C, H, W) -> (B, H*W)``."""
    if attribution.dim() != 4:
        raise ValueError(f"expected attributions of shape (B, C, H, W), got {tuple(attribution.shape)}")
    return attribution.abs().sum(dim=1).flatten(1)


def sensitivity(
    explain: Callable[[Tensor, Tensor | None], Tensor],
    inputs: Tensor,
    *,
    target: Tensor | int | None = None,
    radius: float = 0.02,
    n_perturb: int = 10,
    max_examples_per_batch: int | None = None,
    parts: bool = False,
) -> Tensor | dict[str, Tensor]:
    """Captum's max-sensitivity of an explanation, one value per example.

    ``max over n_perturb draws d ~ U[-radius, radius]^n of ||A(x + d) - A(x)|| / ||A(x)||``
    (Frobenius norms; the perturbations come from torch's generator).

    Args:
        explain: ``(inputs, target) -> attributions`` of the inputs' shape.
        inputs: ``(B, C, H, W)``, in the units the model takes.
        target: the explained output, an int or one per example (expanded by Captum
            along with the perturbed copies).
        radius: L-infinity radius of the uniform perturbations, in input units.
        n_perturb: random perturbations per example (the maximum is over them).
        max_examples_per_batch: Captum's batching limit for the perturbed copies.
        parts: also return the two factors of each value.

    Returns:
        ``(B,)`` max-sensitivities; with ``parts``, a dict of ``(B,)`` tensors:
        ``sensitivity``, its denominator ``norm`` = ``||A(x)||`` (the attribution
        Captum computed; a zero norm counts as 1, as Captum divides by it) and its
        numerator ``change`` = ``max ||A(x + d) - A(x)||`` = sensitivity x norm.
    """
    from captum.metrics import sensitivity_max

    seen: dict[str, Tensor] = {}

    def explain_one(x, target=None):
        # Captum passes the inputs as a 1-tuple and wants a tuple back; its first call
        # explains the unperturbed inputs, whose norm is the denominator.
        if isinstance(x, tuple):
            a = explain(x[0], target)
            seen.setdefault("norm", a.detach().flatten(1).norm(dim=1))
            return (a,)
        return explain(x, target)

    value = sensitivity_max(
        explain_one,
        inputs,
        perturb_radius=radius,
        n_perturb_samples=n_perturb,
        max_examples_per_batch=max_examples_per_batch,
        target=target,
    )
    if not parts:
        return value
    norm = seen["norm"].to(value.dtype)
    return {"sensitivity": value, "change": value * torch.where(norm == 0, 1.0, norm), "norm": norm}


def kendall_tau(a: Tensor, b: Tensor) -> Tensor:
    """Kendall's tau-b between the importance maps of ``a`` and ``b``, per example.

    Args:
        a: attributions ``(B, C, H, W)``.
        b: attributions of the same shape.

    Returns:
        ``(B,)`` in ``[-1, 1]`` (scipy.stats.kendalltau).
    """
    from scipy.stats import kendalltau

    ia, ib = importance(a).detach().cpu().double(), importance(b).detach().cpu().double()
    return torch.tensor([kendalltau(x.numpy(), y.numpy()).statistic for x, y in zip(ia, ib)], dtype=torch.float64)


def topk_intersection(a: Tensor, b: Tensor, k: int) -> Tensor:
    """Fraction of the ``k`` most important pixels that ``a`` and ``b`` share, per example."""
    ia, ib = importance(a), importance(b)
    if not 1 <= k <= ia.shape[1]:
        raise ValueError(f"k must be in [1, {ia.shape[1]}], got {k}")
    top_a = torch.zeros_like(ia, dtype=torch.bool).scatter_(1, ia.topk(k, dim=1).indices, True)
    top_b = torch.zeros_like(ib, dtype=torch.bool).scatter_(1, ib.topk(k, dim=1).indices, True)
    return (top_a & top_b).sum(dim=1).double() / k


def localisation(attribution: Tensor, mask: Tensor) -> Tensor:
    """Fraction of the importance mass inside ``mask``, per example.

    Args:
        attribution: ``(B, C, H, W)``.
        mask: ``(B, 1, H, W)`` or ``(B, H, W)``, true on the object.

    Returns:
        ``(B,)`` in ``[0, 1]`` (NaN for an all-zero attribution).
    """
    imp = importance(attribution)
    m = mask.reshape(mask.shape[0], -1).to(imp.dtype)
    if m.shape != imp.shape:
        raise ValueError(f"mask of {tuple(mask.shape)} does not match attributions of {tuple(attribution.shape)}")
    return ((imp * m).sum(dim=1) / imp.sum(dim=1)).double()


class smooth_relu:  # noqa: N801 - used like a function, as a context manager
    """Within the block, every ``nn.ReLU`` of ``model`` computes ``softplus(x, beta)``.

    A ReLU network's saliency map is piecewise constant in the input, so its gradient
    with respect to the input is zero almost everywhere; Ghorbani et al. attack through
    a softplus surrogate. Forward hooks replace each ReLU's output.
    """

    def __init__(self, model: nn.Module, beta: float = 10.0):
        self.model, self.beta, self.handles = model, beta, []

    def __enter__(self):
        beta = self.beta

        def hook(module, inputs, output):
            return nn.functional.softplus(module.input_copy, beta=beta)

        def pre(module, inputs):
            module.input_copy = inputs[0].clone()  # an in-place ReLU overwrites its input

        for m in self.model.modules():
            if isinstance(m, nn.ReLU):
                self.handles.append(m.register_forward_pre_hook(pre))
                self.handles.append(m.register_forward_hook(hook))
        return self.model

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()
        for m in self.model.modules():
            if hasattr(m, "input_copy"):
                del m.input_copy
        self.handles = []
        return False


def topk_attack(
    model: nn.Module,
    explain: Callable[[Tensor, bool], Tensor],
    inputs: Tensor,
    *,
    k: int,
    epsilon: float,
    steps: int = 10,
    step_size: float | None = None,
    beta: float = 10.0,
    clamp: tuple[float, float] | None = None,
) -> Tensor:
    """Ghorbani et al.'s top-k attack on an attribution method.

    Maximises the attribution mass that leaves the original top-k pixels,
    ``-sum_{i in topk(x)} importance_i(x + d) / sum importance(x + d)``, over
    ``||d||_inf <= epsilon`` by signed-gradient steps; the gradient is taken through a
    softplus surrogate of the ReLUs ([`smooth_relu`][neuralsde.metrics.smooth_relu]), and a step is kept only if
    the predicted label of every example it changes stays the same.

    Args:
        model: the classifier (eval mode).
        explain: ``(x, differentiable) -> attributions``; with ``differentiable=True``
            it must build a graph (e.g. ``torch.autograd.grad(..., create_graph=True)``).
        inputs: ``(B, C, H, W)``.
        k: size of the top set.
        epsilon: L-infinity budget, in input units.
        steps: attack iterations.
        step_size: per-step size (default ``2.5 * epsilon / steps``).
        beta: softplus sharpness of the surrogate.
        clamp: optional valid input range.

    Returns:
        The perturbed inputs ``(B, C, H, W)``.
    """
    step_size = step_size if step_size is not None else 2.5 * epsilon / steps
    x0 = inputs.detach()
    with torch.no_grad():
        label = model(x0).argmax(dim=1)
    top = importance(explain(x0, False).detach()).topk(k, dim=1).indices
    x = x0.clone()
    for _ in range(steps):
        x_var = x.clone().requires_grad_(True)
        with smooth_relu(model, beta):
            imp = importance(explain(x_var, True))
        mass = imp.gather(1, top).sum(dim=1) / imp.sum(dim=1).clamp_min(1e-12)
        (grad,) = torch.autograd.grad(mass.sum(), x_var)
        candidate = x - step_size * grad.sign()
        candidate = x0 + (candidate - x0).clamp(-epsilon, epsilon)
        if clamp is not None:
            candidate = candidate.clamp(*clamp)
        with torch.no_grad():
            keep = model(candidate).argmax(dim=1) == label
        x = torch.where(keep.view(-1, *([1] * (x.dim() - 1))), candidate, x).detach()
    return x
