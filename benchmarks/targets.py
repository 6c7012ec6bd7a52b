"""The speed targets of the CPU and GPU speed benchmarks, in one table.

``python -m benchmarks.speed`` (CPU, small batches) and ``python -m benchmarks.gpu``
(its speed section) print each measured ratio beside its target from here. A ratio is
the median over rounds of (our model's time) ÷ (the reference's time), measured side by
side in one run; a target is the most it may be.
"""

from __future__ import annotations

__all__ = ["TARGETS", "target"]

#: device ("cpu" or "gpu") -> (phase, ratio) -> the most the ratio may be, one number for
#: every architecture or one per architecture. Phases: ``forward``, ``forward+backward``,
#: ``deeplift`` (Captum's DeepLift), ``memory`` (peak memory of a call, GPU only),
#: ``compiled forward`` (both models under ``torch.compile``).
TARGETS: dict[str, dict[tuple[str, str], float | dict[str, float]]] = {
    "cpu": {
        ("forward", "ode/torchvision"): {"resnet18": 1.02, "resnet50": 1.03},
        ("forward+backward", "ode/torchvision"): 1.05,
        ("forward", "sde/ode"): {"resnet18": 1.08, "resnet50": 1.15},
        ("forward+backward", "sde/ode"): 1.2,
        ("deeplift", "ode/discrete"): 1.1,
        ("compiled forward", "ode/torchvision"): 1.02,
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


def target(device: str, phase: str, ratio: str, arch: str | None = None) -> float | None:
    """The target of ``ratio`` on a line of ``phase`` of the ``device`` benchmark ("cpu" or "gpu") for ``arch``.

    None where it has none (a ratio without a target, or a per-architecture target for
    another architecture).
    """
    if device not in TARGETS:
        raise ValueError(f"device must be one of {', '.join(TARGETS)}; got {device!r}")
    goal = TARGETS[device].get((phase, ratio))
    return goal.get(arch) if isinstance(goal, dict) else goal
