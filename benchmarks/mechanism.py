"""What makes SDE attributions less sensitive: the candidate mechanisms, measured.

    python -m benchmarks.mechanism [run options]

Per training seed and digits network, on the images of the sensitivity table (the seed's
first repetition) and with the sensitivity protocol's perturbations (``n_perturb`` draws,
uniform in the L-infinity ball of ``radius``):

* **the ReLU activation pattern**: per stage, the fraction of ReLU units whose on/off
  state flips under a perturbation (mean over the draws, and the fraction that flips for
  any draw), the pre-activation margins ``|z|`` (median and 10% quantile over the stage's
  units) and the root-mean-square change ``|dz|`` a perturbation makes. In a ReLU
  network the input gradient changes only where the pattern flips;
* **the logit margin** (the explained logit minus the largest other one) and **the norm
  of the input gradient** of the explained logit.

The sensitivity cells hold each max-sensitivity's numerator ``max ||A(x+d) - A(x)||``
and denominator ``||A(x)||``; the theorem1 cells the local Jacobian norms and bounds.
The report's ``mechanism`` and ``local_bound`` sections (``benchmarks/report/``) put
them side by side (``results.json``'s ``mechanism`` and ``local_bound``).
"""

from __future__ import annotations

import sys
from functools import partial

import torch
from torch import Tensor, nn

from .config import Config
from .pipeline import Cell, Context, Part, run
from .report import REPORT
from .seeds import purpose_seed
from .sensitivity import chosen_images

__all__ = ["MECHANISM", "activation_stats", "mechanism_cell", "run_mechanism"]


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


def run_mechanism(ctx: Context) -> None:
    """One cell per seed and network, on the seed's first sensitivity repetition's images."""
    cfg = ctx.cfg
    ctx.measure(
        "mechanism",
        partial(mechanism_cell, cfg),
        images=lambda seed, rep: chosen_images(ctx.pools[seed], cfg.n_images, seed, 0),
    )


MECHANISM = Part("mechanism", cells=lambda ctx: len(ctx.cfg.seeds) * len(ctx.cfg.model_names()), on_main=run_mechanism)


def main(argv: list[str] | None = None) -> None:
    run(argv, (MECHANISM, REPORT), description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
