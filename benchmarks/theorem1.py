"""Empirical checks of Theorem 1 and of the completeness of attributions.

    python -m benchmarks.theorem1 [run options]

* Per network and stage: the bound on the drift's Lipschitz constant C (operator norms
  of the convolutions with BatchNorm folded in, for the drift the library integrates),
  Theorem 1's bound ``e^{CT}`` and its one-sided refinement, against the amplification
  ``||F(x+d) - F(x)|| / ||d||`` measured over random directions, the locally worst
  direction and a projected search (see ``neuralsde.theory``); and the local bounds of
  ``neuralsde.theory.local_bound`` along each image's trajectory, with the Jacobian norm
  they bound (for SDE networks also the pathwise derivative along one fixed path).
* The paper's claim that the SDE-trained network amplifies perturbations less than the
  ODE-trained one, per stage, as a paired comparison over the same images.
* The completeness residual ``|sum_k (A_k(x') - A_k(x)) - (F(x') - F(x))|`` (eq. 9) of IG,
  DeepLIFT and DeepLIFT-SHAP, per solver.
"""

from __future__ import annotations

import copy
import sys
from functools import partial

import torch
from torch import nn

from neuralsde import SDEResNet
from neuralsde.attribution import noise_path
from neuralsde.theory import amplification, completeness_residual, local_bound, stage_bound, stage_inputs

from .cells import explainer
from .config import Config
from .pipeline import Cell, Context, Part, run
from .seeds import purpose_seed

__all__ = ["COMPLETENESS", "SOLVERS", "THEOREM1", "path_seed_of", "run_completeness", "run_theorem1"]

# (name, how to set it up) for the completeness table.
SOLVERS = {
    "euler": dict(method="euler", steps_per_block=1),
    "rk4-2": dict(method="rk4", steps_per_block=2),
    "dopri5-frozen": dict(method="dopri5", rtol=1e-3, atol=1e-4),
}
SDE_SOLVERS = {
    "euler-maruyama-noise-off": None,
    "euler-maruyama-fixed-path": 0,
}
# IG at the run's number of steps and at ten times as many: its residual is the error of
# its quadrature, which shrinks with the steps; DeepLIFT's is round-off.
COMPLETE_METHODS = ("integrated_gradients", "integrated_gradients_x10", "deeplift", "deeplift_shap")


def path_seed_of(seed: int) -> int:
    """The fixed Brownian path along which an SDE network's pathwise derivative is bounded."""
    return purpose_seed(seed, "pathwise path")


def _local(stage, state: torch.Tensor, cfg: Config, seed: int, path: int | None) -> dict:
    """``neuralsde.theory.local_bound`` of one stage, as lists (the per-block factors dropped)."""
    out = local_bound(stage, state, steps=cfg.bound_steps, path_seed=path, seed=seed)
    return {k: v.tolist() for k, v in out.items() if v.dim() == 1}


def _theorem1_cell(cfg: Config, cell: Cell) -> dict:
    model, x = cell.model.eval(), cell.x
    with torch.no_grad():
        model(x)  # an SDE network in eval mode switches its stages' noise off
    stages = []
    for stage, state in zip(model.stages, stage_inputs(model, x)):
        if stage.num_continuous == 0:
            continue
        bound = stage_bound(stage, tuple(state.shape[1:]))
        amp = amplification(stage.flow, state, seed=cell.seed)
        row = {**bound, **{k: v.tolist() for k, v in amp.items()}, "local": _local(stage, state, cfg, cell.seed, None)}
        if stage.is_sde:
            row["pathwise"] = _local(stage, state, cfg, cell.seed, path_seed_of(cell.seed))
        stages.append(row)
    return {"model": cell.name, "seed": cell.seed, "images": cell.images, "stages": stages}


def run_theorem1(ctx: Context) -> None:
    """One cell per seed and network: bounds and measured amplification of every stage."""
    cfg = ctx.cfg
    ctx.measure(
        "theorem1", partial(_theorem1_cell, cfg), images=lambda seed, rep: ctx.pools[seed][: cfg.theorem_images]
    )


def _with_target(explain, target, inputs):
    return explain(inputs, target)


def _target_logit(net, target, inputs):
    return net(inputs).gather(1, target[:, None])[:, 0]


def _solver_variant(model: nn.Module, solver: str, x: torch.Tensor) -> tuple[nn.Module, int | None]:
    """The network under one solver of the completeness table, and its fixed path seed (or None)."""
    if isinstance(model, SDEResNet):
        return model, SDE_SOLVERS[solver]
    variant = copy.deepcopy(model).set_solver(**SOLVERS[solver])
    if solver.endswith("frozen"):
        variant.freeze_grid(x)
    return variant, None


def _completeness_cell(cfg: Config, cell: Cell) -> dict:
    x, seed = cell.x, cell.seed
    lo, hi = cell.data.value_range
    gen = torch.Generator().manual_seed(purpose_seed(seed, "completeness perturbation"))
    x_hat = (x + cfg.radius * (2 * torch.rand(x.shape, generator=gen) - 1).to(x)).clamp(lo, hi)
    with torch.no_grad():
        target = cell.model.eval()(x).argmax(1)
    net, path_seed = _solver_variant(cell.model, cell.variant, torch.cat([x, x_hat]))
    out = {"model": cell.name, "seed": seed, "solver": cell.variant, "images": cell.images, "methods": {}}
    with noise_path(net, path_seed):
        for method in COMPLETE_METHODS:
            if method == "integrated_gradients_x10":
                explain = explainer(net, "integrated_gradients", cfg, cell.data, ig_steps=10 * cfg.ig_steps)
            else:
                explain = explainer(net, method, cfg, cell.data)
            res = completeness_residual(
                partial(_with_target, explain, target), partial(_target_logit, net, target), x, x_hat
            )
            out["methods"][method] = {k: v.tolist() for k, v in res.items()}
    return out


def _solvers_of(cfg: Config, model: nn.Module, seed: int) -> list[str]:
    """Every solver on the first training seed; the networks' own (Euler, noise off) on the others."""
    solvers = list(SDE_SOLVERS) if isinstance(model, SDEResNet) else list(SOLVERS)
    return solvers if seed == cfg.seeds[0] else solvers[:1]


def run_completeness(ctx: Context) -> None:
    """One cell per seed and (network of the pair, solver): the completeness residual of each method."""
    cfg = ctx.cfg
    ctx.measure(
        "completeness",
        partial(_completeness_cell, cfg),
        images=lambda seed, rep: ctx.pools[seed][: cfg.completeness_images],
        networks=ctx.pair,
        variants=lambda seed, name, model: _solvers_of(cfg, model, seed),
    )


THEOREM1 = Part(
    "theorem1",
    options={"theorem1": ("theorem_images", "bound_steps", "amp")},
    schema={"theorem1": 2},
    cells=lambda ctx: len(ctx.cfg.seeds) * len(ctx.cfg.table_networks()),
    on_main=run_theorem1,
)
# The ODE network under each of SOLVERS and the table's SDE network under each of
# SDE_SOLVERS on the first seed; both under their own solver on the other seeds.
COMPLETENESS = Part(
    "completeness",
    options={"completeness": ("completeness_images", "radius", "ig_steps", "shap_baselines", "amp")},
    cells=lambda ctx: len(SOLVERS) + len(SDE_SOLVERS) + 2 * (len(ctx.cfg.seeds) - 1),
    on_main=run_completeness,
)


def main(argv: list[str] | None = None) -> None:
    run(argv, (THEOREM1, COMPLETENESS), description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
