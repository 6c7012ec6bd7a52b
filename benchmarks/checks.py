"""Checks of a run's option values, each raising ValueError with one line naming the option."""

from __future__ import annotations

import dataclasses
import math

__all__ = ["LOWER_BOUNDS", "check_device", "check_finite", "exists", "float_options", "named_data_hint"]


def check_finite(options: dict) -> None:
    """Every number of every option finite: NaN and infinities pass every comparison's silence.

    Args:
        options: option name (``--lr``) -> its value, a number or a list of numbers.

    Raises:
        ValueError: naming the first option with a value that is not finite.
    """
    for name, value in options.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            shown = " ".join(f"{v:g}" for v in values) if isinstance(value, list) else f"{value:g}"
            raise ValueError(f"{name} must be finite, got {shown}")


def float_options(config_class) -> list[str]:
    """The options of ``config_class`` (a dataclass) whose values are real numbers (one, or a list of them)."""
    defaults = config_class()
    names = []
    for f in dataclasses.fields(config_class):
        value = getattr(defaults, f.name)
        if isinstance(value, float) or (isinstance(value, list) and value and isinstance(value[0], float)):
            names.append(f.name)
    return names


# Options with a smallest allowed value.
# fmt: off
LOWER_BOUNDS = {
    "threads": 1, "blocks": 1, "widths": 1, "image_size": 8, "train_images": 0, "epochs": 1, "batch_size": 1,
    "eval_images": 0, "chunk": 0,
    "ig_batch": 0, "n_images": 1, "repetitions": 1, "n_perturb": 1, "mc_samples": 1, "ig_steps": 1,
    "sg_samples": 1, "sg_ig_steps": 1, "robust_images": 1, "topk": 1, "attack_steps": 1, "theorem_images": 1,
    "bound_steps": 1, "completeness_images": 1, "shapes_n": 20, "shapes_size": 8, "shapes_epochs": 1,
    "figure_images": 1,
    "shap_baselines": 2,  # DeepLIFT-SHAP needs a distribution of baselines
}
# fmt: on


def named_data_hint(opt: str, value: str, named: tuple[str, ...]) -> str:
    """`` (named data sets: digits, cifar10)`` after a --data that is neither a folder nor a name."""
    return f" (named data sets: {', '.join(named)})" if opt == "data" else ""


def exists(path: str) -> bool:
    from pathlib import Path

    return Path(path).exists()


def check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices")
    elif dev.type != "cpu":
        raise ValueError(f"--device {device}: only cpu and cuda are supported")
