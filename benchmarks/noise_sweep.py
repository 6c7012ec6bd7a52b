"""Noise sweep: accuracy, attribution sensitivity and amplification against the noise σ.

    python -m benchmarks.noise_sweep [run options]

Trains (or reuses) the ODE network and one SDE network per ``--sigmas`` value and seed, measures
each, and writes the sweep as a table (``tables.md``, "Noise sweep") and a plot
(``figures/noise_sweep.png``).
"""

from __future__ import annotations

import sys

from . import registry
from .pipeline import run


def main(argv: list[str] | None = None) -> None:
    results = run(argv, registry.load(["sensitivity", "theorem1"]), description=__doc__.split("\n\n")[0])
    if results:
        for row in results["noise_sweep"]:
            sens = ", ".join(f"{m} {v['mean']:.4f}" for m, v in row["sensitivity"].items())
            print(f"sigma {row['sigma']:g}: accuracy {row['test_accuracy']['mean']:.4f} (mean over seeds); {sens}")


if __name__ == "__main__":
    sys.exit(main())
