"""The ``environment`` section: the machine, the GPU and the software a run measured."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess

import torch

PACKAGES = ("torch", "torchvision", "torchdiffeq", "torchsde", "captum", "numpy", "scipy", "neuralsde")


def version(package: str) -> str | None:
    """The installed version of ``package``, or None if it is missing."""
    try:
        module = __import__(package)
        found = getattr(module, "__version__", None)
        if found:
            return str(found)
    except Exception:  # a package that does not import is reported as missing
        return None
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _driver() -> str | None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        out = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def describe(device: torch.device) -> dict:
    """Versions, machine facts and, on a GPU, its name, memory, driver, CUDA and TF32 settings."""
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "versions": {name: version(name) for name in PACKAGES},
        "cuda_available": torch.cuda.is_available(),
        "tf32": {
            # PyTorch's defaults: TF32 in cuDNN convolutions on, in matrix products off.
            "cudnn_convolutions": bool(torch.backends.cudnn.allow_tf32),
            "matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = {
            "name": props.name,
            "memory_gib": round(props.total_memory / 2**30, 1),
            "capability": f"{props.major}.{props.minor}",
            "multiprocessors": props.multi_processor_count,
            "count": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "driver": _driver(),
        }
    return info


def run(section) -> None:
    section.result.update(describe(section.device))
    missing = [name for name, v in section.result["versions"].items() if v is None]
    if missing:
        section.result["missing"] = missing
