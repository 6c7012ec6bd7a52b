"""Sensitivity of attributions (the paper's Tables 1-3), rank robustness and localisation.

    python -m benchmarks.sensitivity [run options]

* Max-sensitivity (Captum's ``sensitivity_max``; Yeh et al.) of Saliency, Integrated
  Gradients, IG with SmoothGrad, DeepLIFT and DeepLIFT-SHAP, over ``n_images`` test images
  that every network classifies correctly, drawn anew for each of ``repetitions``
  repetitions. Perturbations are uniform in the L-infinity ball of radius ``radius`` in
  the network's input units (digits: pixel values in [0, 1]; ImageNet: normalised
  inputs). Attributions are computed with the noise off (the paper's protocol).
* Kendall's tau and top-k intersection between the attribution of ``x`` and of a
  perturbed ``x`` (Chen et al.): under a uniform random perturbation of radius
  ``attack_eps`` and under Ghorbani et al.'s top-k attack with the same budget.
* Localisation on the shapes: the fraction of attribution mass on the object.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from neuralsde.metrics import kendall_tau, localisation, topk_attack, topk_intersection

from .cells import chosen_images, chunks, explainer, sensitivity_cell
from .common import GpuMonitor
from .config import Config
from .pipeline import Cell, Context, Part, run
from .seeds import purpose_seed

__all__ = ["LOCALISATION", "ROBUSTNESS", "SENSITIVITY", "run_localisation", "run_robustness", "run_sensitivity"]


#: Riemann steps of the IG surrogate whose gradient steers the top-k attack. The attack
#: differentiates through every step's gradient, so its cost grows with them; the
#: surrogate only chooses the attack's direction, and the attacked input is then scored
#: with the full IG of ``--ig-steps``.
ATTACK_IG_STEPS = 5


def differentiable_explainer(model: nn.Module, method: str, cfg: Config) -> Callable[[Tensor, bool], Tensor]:
    """Saliency or IG (zero baseline, right Riemann sum of ``ATTACK_IG_STEPS``) with an optional graph, for attacks."""
    steps = min(cfg.ig_steps, ATTACK_IG_STEPS) if method != "saliency" else 0  # Saliency has no steps

    def grad(x: Tensor, target: Tensor, graph: bool) -> Tensor:
        x = x if x.requires_grad else x.clone().requires_grad_(True)
        out = model(x).gather(1, target[:, None]).sum()
        return torch.autograd.grad(out, x, create_graph=graph)[0], x

    def explain(x: Tensor, graph: bool, target: Tensor) -> Tensor:
        if method == "saliency":
            return grad(x, target, graph)[0].abs()
        total = 0
        for k in range(1, steps + 1):
            g, _ = grad(x * (k / steps), target, graph)
            total = total + g
        return x * total / steps

    return explain


def run_sensitivity(ctx: Context) -> None:
    """One cell per (seed, network, method, repetition): the max-sensitivity of each image.

    Every network and method of one seed and repetition sees the same images and the
    same perturbations (the cells share their random draws).
    """
    cfg = ctx.cfg
    ctx.measure(
        "sensitivity",
        partial(sensitivity_cell, cfg),
        images=lambda seed, rep: chosen_images(ctx.pools[seed], cfg.n_images, seed, rep),
        methods=cfg.methods,
        repetitions=cfg.repetitions,
        rng=lambda cell: f"sensitivity/s{cell.seed}/rep{cell.rep}",
    )


def _robustness_cell(cfg: Config, pairs: dict, cell: Cell) -> dict:
    x, data, method, seed = cell.x, cell.data, cell.method, cell.seed
    lo, hi = data.value_range
    k = min(cfg.topk, x[0, 0].numel())
    explain = explainer(cell.model, method, cfg, data)
    with torch.no_grad():
        target = cell.model(x).argmax(1)
    base = explain(x, target)
    gen = torch.Generator().manual_seed(purpose_seed(seed, "robustness noise"))
    noise = (2 * torch.rand(x.shape, generator=gen) - 1).to(x) * cfg.attack_eps
    x_rand = (x + noise).clamp(lo, hi)
    a_rand = explain(x_rand, target)
    out = {
        "model": cell.name,
        "seed": seed,
        "method": method,
        "images": cell.images,
        "k": k,
        "epsilon": cfg.attack_eps,
        "random": {"kendall": kendall_tau(base, a_rand).tolist(), "topk": topk_intersection(base, a_rand, k).tolist()},
    }
    if cell.name in pairs[seed]:  # the top-k attack, on the pair of the tables only
        diff = differentiable_explainer(cell.model, method, cfg)
        x_adv = topk_attack(
            cell.model,
            lambda inp, graph: diff(inp, graph, target),
            x,
            k=k,
            epsilon=cfg.attack_eps,
            steps=cfg.attack_steps,
            clamp=(lo, hi),
        )
        a_adv = explain(x_adv, target)
        out["attack"] = {
            "kendall": kendall_tau(base, a_adv).tolist(),
            "topk": topk_intersection(base, a_adv, k).tolist(),
        }
    return out


def run_robustness(ctx: Context) -> None:
    """Kendall's tau and top-k intersection under random perturbation and (for the pair) the top-k attack."""
    cfg = ctx.cfg
    pairs = {seed: set(ctx.pair(seed)) for seed in cfg.seeds}
    ctx.measure(
        "robustness",
        partial(_robustness_cell, cfg, pairs),
        images=lambda seed, rep: ctx.pools[seed][: cfg.robust_images],
        methods=cfg.robust_methods,
        more=lambda cell: {"attack": cell.name in pairs[cell.seed]},
    )


def _localisation_cell(cfg: Config, cell: Cell) -> dict:
    explain = explainer(cell.model, cell.method, cfg, cell.data)
    masks = cell.data.masks[cell.images].to(cfg.device)
    with torch.no_grad():
        target = cell.model(cell.x).argmax(1)
    values = []
    for idx in chunks(len(cell.images), cfg.chunk):
        values.extend(localisation(explain(cell.x[list(idx)], target[list(idx)]), masks[list(idx)]).float().tolist())
    object_share = masks.flatten(1).float().mean(1).tolist()
    return {
        "model": cell.name,
        "seed": cell.seed,
        "method": cell.method,
        "images": cell.images,
        "values": values,
        "object_share": object_share,
    }


def run_localisation(ctx: Context) -> None:
    """Fraction of the attribution mass on the object, per seed, shapes network and method."""
    cfg = ctx.cfg
    ctx.measure(
        "localisation",
        partial(_localisation_cell, cfg),
        images=lambda seed, rep: ctx.shape_pools[seed][: 2 * cfg.n_images],
        methods=cfg.methods,
        shapes=True,
        rng=lambda cell: f"localisation/s{cell.seed}",
    )


def _sensitivity(ctx: Context) -> None:
    before = len(ctx.store.computed)
    with GpuMonitor(ctx.cfg.device) as monitor:
        run_sensitivity(ctx)
    if len(ctx.store.computed) > before and ctx.cfg.device != "cpu":
        rank = f"r{ctx.ranks.rank}-" if ctx.ranks.many else ""  # the ranks of a job profile apart
        ctx.store.put("profile", f"sensitivity-{rank}{len(ctx.store.computed)}", monitor.record(), depends={})


SENSITIVITY = Part(
    "sensitivity",
    options={"sensitivity": ("n_images", "radius", "n_perturb", "chunk", "amp")},
    schema={"sensitivity": 2},
    cells=lambda ctx: len(ctx.cfg.seeds) * len(ctx.cfg.table_networks()) * len(ctx.cfg.methods) * ctx.cfg.repetitions,
    on_main=_sensitivity,
)
ROBUSTNESS = Part(
    "robustness",
    options={"robustness": ("robust_images", "topk", "attack_eps", "attack_steps", "amp")},
    cells=lambda ctx: len(ctx.cfg.seeds) * len(ctx.cfg.table_networks()) * len(ctx.cfg.robust_methods),
    on_main=run_robustness,
)
# Two shapes networks (ODE and SDE) per seed, when the run has the shapes.
LOCALISATION = Part(
    "localisation",
    options={"localisation": ("n_images", "chunk", "amp")},
    cells=lambda ctx: ctx.cfg.shapes * len(ctx.cfg.seeds) * 2 * len(ctx.cfg.methods),
    on_shapes=run_localisation,
)


def main(argv: list[str] | None = None) -> None:
    run(argv, (SENSITIVITY, ROBUSTNESS, LOCALISATION), description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
