"""What several parts measure with: the explainer, the chosen images, the sensitivity and mechanism cells.

The parts (``sensitivity``, ``theorem1``, ``mechanism``, ``interventions``, ``figures``)
are siblings: none imports another, and what more than one of them computes lives here.

* ``explainer``: ``(inputs, target) -> attributions`` for one of the benchmark's methods;
* ``chosen_images``: the images of one repetition, the same for every network of a seed;
* ``sensitivity_cell``: the max-sensitivity of each of a cell's images (the paper's
  Tables 1-3 protocol), with its numerator and denominator;
* ``mechanism_cell``: the ReLU activation pattern per stage under the sensitivity
  protocol's perturbations, the logit margins and the input-gradient norms.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from neuralsde import attribute
from neuralsde.metrics import sensitivity

from .config import Config
from .context import Cell
from .data import Data
from .seeds import images_seed, purpose_seed

__all__ = ["activation_stats", "chosen_images", "chunks", "explainer", "mechanism_cell", "sensitivity_cell"]


def explainer(
    model: nn.Module, method: str, cfg: Config, data: Data, *, ig_steps: int | None = None, **noise
) -> Callable[[Tensor, Tensor], Tensor]:
    """``(inputs, target) -> attributions`` for one of the benchmark's methods.

    IG takes ``ig_steps`` if given; ``noise`` goes to ``neuralsde.attribute`` (e.g.
    ``noise="mc", samples=K, seed=s`` for an SDE network's noise at attribution time).
    """
    lo, hi = data.value_range
    kwargs: dict = {}
    if method == "integrated_gradients":
        kwargs = dict(n_steps=ig_steps or cfg.ig_steps)
    elif method == "smoothgrad_ig":
        kwargs = dict(n_steps=cfg.sg_ig_steps, nt_samples=cfg.sg_samples, stdevs=cfg.sg_noise * (hi - lo))
    elif method == "deeplift_shap":
        kwargs = dict(baselines=data.shap_baselines.to(cfg.device))
    if cfg.ig_batch and method in ("integrated_gradients", "smoothgrad_ig"):
        kwargs["internal_batch_size"] = cfg.ig_batch
    kwargs.update(noise)

    def explain(x: Tensor, target) -> Tensor:
        return attribute(model, x, method, target=target, **kwargs).attribution.detach()

    return explain


def chunks(n: int, size: int) -> list[range]:
    """The indices 0..n-1 in consecutive ranges of ``size`` (one range of all for size 0)."""
    size = size or n
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def sensitivity_cell(cfg: Config, cell: Cell, **noise) -> dict:
    """The max-sensitivity of each of the cell's images, with its numerator and denominator."""
    model, chosen = cell.model, cell.images
    explain = explainer(model, cell.method, cfg, cell.data, **noise)
    parts: dict[str, list[float]] = {"values": [], "change": [], "norm": []}
    with torch.no_grad():
        target_all = model(cell.x).argmax(1)
    for idx in chunks(len(chosen), cfg.chunk):
        x, target = cell.x[list(idx)], target_all[list(idx)]
        s = sensitivity(
            explain,
            x,
            target=target,
            radius=cfg.radius,
            n_perturb=cfg.n_perturb,
            max_examples_per_batch=(cfg.chunk * cfg.n_perturb) or None,
            parts=True,
        )
        for key, part in (("values", "sensitivity"), ("change", "change"), ("norm", "norm")):
            parts[key].extend(s[part].detach().float().cpu().tolist())
    # values = change / norm: the numerator and the denominator of each max-sensitivity.
    return {"model": cell.name, "seed": cell.seed, "method": cell.method, "rep": cell.rep, "images": chosen, **parts}


def chosen_images(pool: list[int], n: int, seed: int, rep: int) -> list[int]:
    """The images of one repetition: ``n`` drawn from the seed's pool, the same for every network."""
    gen = torch.Generator().manual_seed(images_seed(seed, rep))
    return [pool[i] for i in torch.randperm(len(pool), generator=gen)[:n].tolist()]


def _stage_of(name: str) -> str:
    """The stage a ReLU module belongs to: ``layerN``, or ``stem`` for the layers before them."""
    head = name.split(".")[0]
    return head if head.startswith("layer") else "stem"


class _PreActivations:
    """Records the input of every ReLU module of a model, grouped by stage, while active."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.seen: dict[str, list[Tensor]] = {}

    def __enter__(self):
        self.handles = []
        for name, module in self.model.named_modules():
            if isinstance(module, nn.ReLU):
                stage = _stage_of(name)

                def hook(module, inputs, stage=stage):
                    # A copy: the ReLU works in place on its input.
                    self.seen.setdefault(stage, []).append(inputs[0].detach().flatten(1).clone())

                self.handles.append(module.register_forward_pre_hook(hook))
        return self

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()

    def take(self) -> dict[str, Tensor]:
        """Per stage, ``(batch, units)``: every ReLU input of the last forward pass, concatenated."""
        out = {stage: torch.cat(parts, 1) for stage, parts in self.seen.items()}
        self.seen = {}
        return out


def activation_stats(model: nn.Module, x: Tensor, perturbed: Tensor) -> dict[str, dict[str, list[float]]]:
    """Per stage and image, how stable the ReLU pattern is under the perturbations.

    Args:
        model: a network in eval mode (every ReLU an ``nn.ReLU`` module).
        x: images ``(B, ...)``.
        perturbed: ``(n, B, ...)``, ``n`` perturbed copies of each image.

    Returns:
        stage -> ``flip`` (mean fraction of units flipping per perturbation), ``flip_any``
        (fraction flipping under at least one), ``margin`` and ``margin_q10`` (median and
        10% quantile of ``|z|``), ``change`` (RMS of ``z(x + d) - z(x)``, mean over the
        perturbations), each a list over the images.
    """
    n, batch = perturbed.shape[:2]
    with torch.no_grad(), _PreActivations(model) as rec:
        model(x)
        clean = rec.take()
        model(perturbed.flatten(0, 1))
        noisy = rec.take()
    out = {}
    for stage, z in clean.items():
        zp = noisy[stage].view(n, batch, -1)
        flips = (zp > 0) != (z > 0)
        mag = z.abs().float()
        out[stage] = {
            "flip": flips.float().mean(-1).mean(0).tolist(),
            "flip_any": flips.any(0).float().mean(-1).tolist(),
            "margin": mag.median(-1).values.tolist(),
            "margin_q10": torch.quantile(mag, 0.1, dim=-1).tolist(),
            "change": (zp - z).float().pow(2).mean(-1).sqrt().mean(0).tolist(),
        }
    return out


def _logit_stats(model: nn.Module, x: Tensor) -> dict[str, list[float]]:
    """The logit margin and the input gradient's norm of the predicted class, per image."""
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    target = logits.argmax(1)
    top = logits.gather(1, target[:, None])[:, 0]
    (grad,) = torch.autograd.grad(top.sum(), x)
    others = logits.detach().scatter(1, target[:, None], float("-inf"))
    return {
        "logit_margin": (top.detach() - others.amax(1)).tolist(),
        "grad_norm": grad.flatten(1).norm(dim=1).tolist(),
    }


def mechanism_cell(cfg: Config, cell: Cell) -> dict:
    """The activation pattern per stage, the logit margins and the input-gradient norms of the cell's images."""
    model, x = cell.model.eval(), cell.x
    gen = torch.Generator().manual_seed(purpose_seed(cell.seed, "mechanism perturbations"))
    noise = (2 * torch.rand((cfg.n_perturb, *x.shape), generator=gen) - 1) * cfg.radius
    perturbed = x.unsqueeze(0) + noise.to(x)  # Captum's max-sensitivity perturbs without clamping
    return {
        "model": cell.name,
        "seed": cell.seed,
        "images": cell.images,
        "stages": activation_stats(model, x, perturbed),
        **_logit_stats(model, x),
    }
