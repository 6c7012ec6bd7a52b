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

from .cells import chosen_images, mechanism_cell
from .pipeline import Context, Part, run

__all__ = ["MECHANISM", "run_mechanism"]


def run_mechanism(ctx: Context) -> None:
    """One cell per seed and network, on the seed's first sensitivity repetition's images."""
    cfg = ctx.cfg
    ctx.measure(
        "mechanism",
        partial(mechanism_cell, cfg),
        images=lambda seed, rep: chosen_images(ctx.pools[seed], cfg.n_images, seed, 0),
    )


MECHANISM = Part(
    "mechanism",
    options={"mechanism": ("n_images", "radius", "n_perturb", "amp")},
    cells=lambda ctx: len(ctx.cfg.seeds) * len(ctx.cfg.table_networks()),
    on_main=run_mechanism,
)


def main(argv: list[str] | None = None) -> None:
    run(argv, (MECHANISM,), description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
