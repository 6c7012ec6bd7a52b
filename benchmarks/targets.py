"""The speed targets of the CPU and GPU speed benchmarks, in one table.

``python -m benchmarks.speed`` (CPU, small batches) and ``python -m benchmarks.gpu``
(its speed section) print each measured ratio beside its target from here. A ratio is
the median over rounds of (our model's time) ÷ (the reference's time), measured side by
side in one run; a target is the most it may be.
"""

from __future__ import annotations

__all__ = ["TARGETS", "target"]

#: device ("cpu" or "gpu") -> (phase, ratio) -> the most the ratio may be. Phases:
#: ``forward``, ``forward+backward``, ``deeplift`` (Captum's DeepLift), ``memory`` (peak
#: memory of a call, GPU only).
TARGETS: dict[str, dict[tuple[str, str], float]] = {
    "cpu": {
        ("forward", "ode/torchvision"): 1.05,
        ("forward+backward", "ode/torchvision"): 1.05,
        ("forward", "sde/ode"): 1.2,
        ("forward+backward", "sde/ode"): 1.2,
        ("deeplift", "ode/discrete"): 1.1,
    },
    "gpu": {
        ("forward", "ode/torchvision"): 1.03,
        ("forward+backward", "ode/torchvision"): 1.05,
        ("forward", "sde/ode"): 1.10,
        ("forward+backward", "sde/ode"): 1.10,
        ("deeplift", "ode/discrete"): 1.05,
        ("memory", "ode/torchvision"): 1.05,
    },
}


def target(device: str, phase: str, ratio: str) -> float | None:
    """The target of ``ratio`` on a line of ``phase`` of the ``device`` benchmark ("cpu" or "gpu"), if it has one."""
    if device not in TARGETS:
        raise ValueError(f"device must be one of {', '.join(TARGETS)}; got {device!r}")
    return TARGETS[device].get((phase, ratio))
