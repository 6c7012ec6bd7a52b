"""The seeds of a run's draws that are not seeded from a cell's key: one function, a named purpose each.

Each is ``1000 × the training seed + an offset`` of its purpose; the images of repetition
``r`` are drawn with offset ``r``, so the repetitions stay below the smallest offset and no
two purposes of one training seed share a seed. The offsets are not among what a stored
cell depends on: changing one would mix old numbers (reused) with new ones (recomputed)
in a resumed folder, so they are fixed.
"""

from __future__ import annotations

__all__ = ["MAX_REPETITIONS", "PURPOSES", "images_seed", "purpose_seed"]

#: Each purpose and its offset.
PURPOSES = {
    "robustness noise": 17,  # the random perturbation of the rank-robustness cells
    "completeness perturbation": 23,  # the perturbed input of the completeness cells
    "pathwise path": 31,  # the fixed Brownian path of an SDE network's pathwise local bound
    "mechanism perturbations": 41,  # the perturbations of the activation-pattern cells
    "attribution-time paths": 43,  # the first of the Brownian paths averaged with noise at attribution time
}
#: Repetitions of a run at most: repetition r draws its images with offset r.
MAX_REPETITIONS = min(PURPOSES.values())


def purpose_seed(seed: int, purpose: str) -> int:
    """The seed of ``purpose`` (one of ``PURPOSES``) for training seed ``seed``."""
    if purpose not in PURPOSES:
        raise ValueError(f"no seed purpose {purpose!r}; purposes: {', '.join(PURPOSES)}")
    return seed * 1000 + PURPOSES[purpose]


def images_seed(seed: int, rep: int) -> int:
    """The seed of the images of repetition ``rep`` (``0 <= rep < MAX_REPETITIONS``) for training seed ``seed``."""
    if not 0 <= rep < MAX_REPETITIONS:
        raise ValueError(f"repetition {rep} is out of range: a run has at most {MAX_REPETITIONS} repetitions")
    return seed * 1000 + rep
