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

from neuralsde import attribute
from neuralsde.metrics import kendall_tau, localisation, sensitivity, topk_attack, topk_intersection

from .common import GpuMonitor
from .config import Config
from .pipeline import Context, Part, run
from .report import REPORT
from .train import Data, _stack

__all__ = [
    "LOCALISATION",
    "ROBUSTNESS",
    "SENSITIVITY",
    "chosen_images",
    "explainer",
    "run_localisation",
    "run_robustness",
    "run_sensitivity",
]


def explainer(model: nn.Module, method: str, cfg: Config, data: Data) -> Callable[[Tensor, Tensor], Tensor]:
    """``(inputs, target) -> attributions`` for one of the benchmark's methods."""
    lo, hi = data.value_range
    kwargs: dict = {}
    if method == "integrated_gradients":
        kwargs = dict(n_steps=cfg.ig_steps)
    elif method == "smoothgrad_ig":
        kwargs = dict(n_steps=cfg.sg_ig_steps, nt_samples=cfg.sg_samples, stdevs=cfg.sg_noise * (hi - lo))
    elif method == "deeplift_shap":
        kwargs = dict(baselines=data.shap_baselines.to(cfg.device))
    if cfg.ig_batch and method in ("integrated_gradients", "smoothgrad_ig"):
        kwargs["internal_batch_size"] = cfg.ig_batch

    def explain(x: Tensor, target) -> Tensor:
        return attribute(model, x, method, target=target, **kwargs).attribution.detach()

    return explain


#: Riemann steps of the IG surrogate whose gradient steers the top-k attack. The attack
#: differentiates through every step's gradient, so its cost grows with them; the
#: surrogate only chooses the attack's direction, and the attacked input is then scored
#: with the full IG of ``--ig-steps``.
ATTACK_IG_STEPS = 5


def differentiable_explainer(model: nn.Module, method: str, cfg: Config) -> Callable[[Tensor, bool], Tensor]:
    """Saliency or IG (zero baseline, right Riemann sum of ``ATTACK_IG_STEPS``) with an optional graph, for attacks."""
    steps = min(cfg.ig_steps, ATTACK_IG_STEPS)

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


def _chunks(n: int, size: int):
    size = size or n
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


def _sensitivity_cell(
    cfg: Config, data: Data, name: str, seed: int, model: nn.Module, method: str, rep: int, chosen, x_all: Tensor
) -> dict:
    explain = explainer(model, method, cfg, data)
    parts: dict[str, list[float]] = {"values": [], "change": [], "norm": []}
    with torch.no_grad():
        target_all = model(x_all).argmax(1)
    for idx in _chunks(len(chosen), cfg.chunk):
        x, target = x_all[list(idx)], target_all[list(idx)]
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
    return {"model": name, "seed": seed, "method": method, "rep": rep, "images": chosen, **parts}


def chosen_images(pool: list[int], n: int, seed: int, rep: int) -> list[int]:
    """The images of one repetition: ``n`` drawn from the seed's pool, the same for every network."""
    gen = torch.Generator().manual_seed(seed * 1000 + rep)
    return [pool[i] for i in torch.randperm(len(pool), generator=gen)[:n].tolist()]


def run_sensitivity(ctx: Context) -> None:
    """One cell per (seed, network, method, repetition): the max-sensitivity of each image.

    Every network and method of one seed and repetition sees the same images and the
    same perturbations (the cells share their random draws).
    """
    cfg, store = ctx.cfg, ctx.store
    for seed in cfg.seeds:
        for rep in range(cfg.repetitions):
            chosen = chosen_images(ctx.pools[seed], cfg.n_images, seed, rep)
            x_all = _stack(ctx.data.test, chosen).to(cfg.device)
            for name, model in ctx.nets[seed].items():
                for method in cfg.methods:
                    compute = partial(_sensitivity_cell, cfg, ctx.data, name, seed, model, method, rep, chosen, x_all)
                    store.cell(
                        "sensitivity",
                        f"s{seed}/{name}--{method}--rep{rep}",
                        compute,
                        depends=ctx.depends("sensitivity", {name: ctx.prints[seed][name]}, chosen, method),
                        rng=f"sensitivity/s{seed}/rep{rep}",
                    )
                    ctx.tick()


def _robustness_cell(cfg: Config, data: Data, name, seed, model, method, x, chosen, attack: bool) -> dict:
    lo, hi = data.value_range
    k = min(cfg.topk, x[0, 0].numel())
    explain = explainer(model, method, cfg, data)
    with torch.no_grad():
        target = model(x).argmax(1)
    base = explain(x, target)
    gen = torch.Generator().manual_seed(seed * 1000 + 17)
    noise = (2 * torch.rand(x.shape, generator=gen) - 1).to(x) * cfg.attack_eps
    x_rand = (x + noise).clamp(lo, hi)
    a_rand = explain(x_rand, target)
    out = {
        "model": name,
        "seed": seed,
        "method": method,
        "images": chosen,
        "k": k,
        "epsilon": cfg.attack_eps,
        "random": {"kendall": kendall_tau(base, a_rand).tolist(), "topk": topk_intersection(base, a_rand, k).tolist()},
    }
    if attack:
        diff = differentiable_explainer(model, method, cfg)
        x_adv = topk_attack(
            model,
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
    cfg, store = ctx.cfg, ctx.store
    for seed in cfg.seeds:
        chosen = ctx.pools[seed][: cfg.robust_images]
        x = _stack(ctx.data.test, chosen).to(cfg.device)
        attack_models = set(ctx.pair(seed))
        for name, model in ctx.nets[seed].items():
            for method in cfg.robust_methods:
                attack = name in attack_models
                compute = partial(_robustness_cell, cfg, ctx.data, name, seed, model, method, x, chosen, attack)
                depends = ctx.depends("robustness", {name: ctx.prints[seed][name]}, chosen, method, attack=attack)
                store.cell("robustness", f"s{seed}/{name}--{method}", compute, depends=depends)
                ctx.tick()


def _localisation_cell(cfg: Config, data: Data, name, seed, model, method, x, masks, chosen) -> dict:
    explain = explainer(model, method, cfg, data)
    with torch.no_grad():
        target = model(x).argmax(1)
    values = []
    for idx in _chunks(len(chosen), cfg.chunk):
        values.extend(localisation(explain(x[list(idx)], target[list(idx)]), masks[list(idx)]).float().tolist())
    object_share = masks.flatten(1).float().mean(1).tolist()
    return {
        "model": name,
        "seed": seed,
        "method": method,
        "images": chosen,
        "values": values,
        "object_share": object_share,
    }


def run_localisation(ctx: Context) -> None:
    """Fraction of the attribution mass on the object, per seed, shapes network and method."""
    cfg, store, data = ctx.cfg, ctx.store, ctx.shape_data
    for seed in cfg.seeds:
        chosen = ctx.shape_pools[seed][: 2 * cfg.n_images]
        x = _stack(data.test, chosen).to(cfg.device)
        masks = data.masks[chosen].to(cfg.device)
        for name, model in ctx.shape_nets[seed].items():
            for method in cfg.methods:
                compute = partial(_localisation_cell, cfg, data, name, seed, model, method, x, masks, chosen)
                depends = ctx.depends("localisation", {name: ctx.shape_prints[seed][name]}, chosen, method)
                store.cell(
                    "localisation", f"s{seed}/{name}--{method}", compute, depends=depends, rng=f"localisation/s{seed}"
                )
                ctx.tick()


def _sensitivity(ctx: Context) -> None:
    before = len(ctx.store.computed)
    with GpuMonitor(ctx.cfg.device) as monitor:
        run_sensitivity(ctx)
    if len(ctx.store.computed) > before and ctx.cfg.device != "cpu":
        ctx.store.put("profile", f"sensitivity-{len(ctx.store.computed)}", monitor.record(), depends={})


SENSITIVITY = Part(
    "sensitivity",
    cells=lambda ctx: len(ctx.cfg.seeds) * len(ctx.cfg.model_names()) * len(ctx.cfg.methods) * ctx.cfg.repetitions,
    on_main=_sensitivity,
)
ROBUSTNESS = Part(
    "robustness",
    cells=lambda ctx: len(ctx.cfg.seeds) * len(ctx.cfg.model_names()) * len(ctx.cfg.robust_methods),
    on_main=run_robustness,
)
# Two shapes networks (ODE and SDE) per seed, when the run has the shapes.
LOCALISATION = Part(
    "localisation",
    cells=lambda ctx: ctx.cfg.shapes * len(ctx.cfg.seeds) * 2 * len(ctx.cfg.methods),
    on_shapes=run_localisation,
)


def main(argv: list[str] | None = None) -> None:
    run(argv, (SENSITIVITY, ROBUSTNESS, LOCALISATION, REPORT), description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
