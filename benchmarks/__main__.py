"""The main job: ``python -m benchmarks [--out DIR] [options]``.

On the embedded digits (default) it trains an ODE network and SDE networks with normalized
noise 0.1, 0.25, 0.5 and 0.75 identically, then measures

* attribution sensitivity (the paper's Tables 1-3 protocol) with CIs and paired tests,
* rank robustness (Kendall's tau, top-k intersection) under random noise and attack,
* localisation on procedurally generated shapes with object masks,
* Theorem 1's bound against the measured amplification, and the paper's ODE-vs-SDE claim,
* local, linearised Theorem 1 bounds along each image's trajectory, and the candidate
  mechanisms (ReLU pattern flips, margins, gradient norms, the sensitivity's two factors),
* completeness residuals per attribution method and solver,
* the noise sweep, and attribution figures,

and writes ``DIR/results.json``, ``DIR/tables.md`` and ``DIR/figures/*.png`` (default
``results/``). Every finished piece is saved at once: an interrupted run (Ctrl-C,
SIGTERM, a full disk), started again with the same options, resumes without recomputing
it. A folder's networks are never replaced by networks trained under other options: such
a run is refused, so give each set of network options its own ``--out`` (or pass
``--retrain``).

ImageNet protocol (GPU):

    python -m benchmarks --arch resnet50 --data /path/to/imagenet/val \\
        --weights resnet50.pth --train-data /path/to/imagenet/train --device cuda \\
        --out results-resnet50

fine-tunes the ODE twin and its SDE twin from the weights identically (Adam 1e-4), or
takes ``--sde-weights FILE`` instead of ``--train-data``, and runs the paper's protocol
(100 images x 5 repetitions) beside the paper's published values.
"""

from __future__ import annotations

from . import registry
from .pipeline import run


def main(argv: list[str] | None = None) -> dict | None:
    """Run the main job; returns its results (None if it wrote no report)."""
    return run(argv, registry.load(), description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    main()
