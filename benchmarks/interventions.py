"""The interventions: noise where a hypothesis says it matters, and nowhere else.

    python -m benchmarks.interventions [run options]

Per training seed, on the same data, initial weights, images and perturbations as the
sensitivity table, at ``intervention_sigma``:

* **noise in one stage only**: an SDE network with noise in each stage in turn
  (``sde-at-layer1-0.75``, ...), and one with noise in every stage but the first
  (``sde-at-layer2+layer3-0.75``), trained exactly as the ODE network;
* **noise at attribution time only**: the ODE network itself with the normalized noise
  of ``intervention_sigma`` switched on when attributions are computed, each attribution
  the mean over ``mc_samples`` fixed Brownian paths (``neuralsde.attribute(...,
  noise="mc")``); against it stands the SDE network trained with noise and explained
  with the noise off (the main table's).

Each is measured like the sensitivity table (max-sensitivity per image, its numerator
and denominator; the same images and perturbations, so the effect against the ODE
network is paired) for ``intervention_methods``, and, for the trained networks, the
ReLU activation pattern per stage and the test accuracy.
"""

from __future__ import annotations

import sys
from functools import partial

from .cells import chosen_images, mechanism_cell, sensitivity_cell
from .config import Config
from .networks import Network
from .pipeline import Cell, Context, Part, run
from .seeds import purpose_seed
from .train import build_model, fingerprint, predictions, trained_model

__all__ = ["INTERVENTIONS", "run_interventions"]


def _path_seed(seed: int) -> int:
    """The first of the fixed Brownian paths an attribution-time-noise attribution averages over."""
    return purpose_seed(seed, "attribution-time paths")


def _sensitivity(cfg: Config, cell: Cell) -> dict:
    if cell.network != cfg.attribution_time_network:
        return sensitivity_cell(cfg, cell)
    return sensitivity_cell(cfg, cell, noise="mc", samples=cfg.mc_samples, seed=_path_seed(cell.seed))


def _pattern(cfg: Config, cell: Cell) -> dict:
    pred, labels = predictions(cell.model.eval(), cell.data.test, cfg.device)
    return {**mechanism_cell(cfg, cell), "test_accuracy": (pred == labels).float().mean().item()}


def _networks(ctx: Context) -> dict[int, dict]:
    """Per seed: the intervention networks (trained or reused) and the ODE network with noise at attribution time."""
    cfg, out = ctx.cfg, {}
    for seed in cfg.seeds:
        out[seed] = {}
        for net in cfg.intervention_networks():
            out[seed][net.name] = trained_model(cfg, ctx.store, net, seed, ctx.data, progress=False)
        noisy = build_model(cfg, cfg.attribution_time_network, seed, ctx.data)  # the SDE network's diffusion...
        noisy.load_state_dict(ctx.nets[seed][Network().name].state_dict())  # ... on the ODE network's weights
        out[seed][cfg.attribution_time_network.name] = noisy.eval()
        for name, model in out[seed].items():
            ctx.prints[seed][name] = fingerprint(model)
    return out


def run_interventions(ctx: Context) -> None:
    """Sensitivity cells per (seed, intervention, method, repetition); activation-pattern cells per network."""
    cfg = ctx.cfg
    if not cfg.interventions:
        return
    nets = _networks(ctx)
    ctx.measure(
        "interventions",
        partial(_sensitivity, cfg),
        images=lambda seed, rep: chosen_images(ctx.pools[seed], cfg.n_images, seed, rep),
        methods=cfg.intervention_methods,
        repetitions=cfg.repetitions,
        networks=lambda seed: nets[seed],
        rng=lambda cell: f"sensitivity/s{cell.seed}/rep{cell.rep}",  # the sensitivity table's perturbations
    )
    ctx.measure(
        "intervention_patterns",
        partial(_pattern, cfg),
        images=lambda seed, rep: chosen_images(ctx.pools[seed], cfg.n_images, seed, 0),
        networks=lambda seed: {n: m for n, m in nets[seed].items() if n != cfg.attribution_time_network.name},
    )


def _cells(ctx: Context) -> int:
    cfg = ctx.cfg
    n = len(cfg.intervention_networks())
    return len(cfg.seeds) * ((n + 1) * len(cfg.intervention_methods) * cfg.repetitions + n)


INTERVENTIONS = Part(
    "interventions",
    options={
        "interventions": ("n_images", "radius", "n_perturb", "chunk", "mc_samples", "amp"),
        "intervention_patterns": ("n_images", "radius", "n_perturb", "amp"),
    },
    cells=_cells,
    on_main=run_interventions,
    networks=Config.intervention_networks,
)


def main(argv: list[str] | None = None) -> None:
    run(argv, (INTERVENTIONS,), description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
