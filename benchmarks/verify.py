"""What makes a stored result trustworthy: its contents' checksum, its shape, the versions it was made under.

``benchmarks.store`` reuses a stored cell only if these agree; it also
seeds each measurement's random draws from the cell's key (``seeded``), so that an
interrupted and resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json

import numpy as np
import torch

from .common import environment

__all__ = ["LIBRARIES", "checksum", "seeded", "shape_problem", "versions"]

#: The libraries whose versions decide whether a stored measurement is reused.
LIBRARIES = ("torch", "torchvision", "captum", "torchdiffeq", "torchsde")


def checksum(record: dict) -> str:
    """The SHA-256 of a cell's canonical JSON (every entry but ``"checksum"``).

    The record goes through JSON once first, so that a result checks the same before it
    is written and once read back (integer keys become strings, tuples lists).
    """
    content = json.loads(json.dumps({k: v for k, v in record.items() if k != "checksum"}))
    return hashlib.sha256(json.dumps(content, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def versions() -> dict[str, str]:
    """The versions of the libraries a measurement depends on."""
    env = environment()["versions"]
    return {k: str(env[k]) for k in LIBRARIES}  # plain strings: torch.__version__ is a str subclass


def _seed_of(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") % (2**63)


@contextlib.contextmanager
def seeded(key: str, device: str | torch.device = "cpu"):
    """Run a block with torch's and NumPy's global generators seeded from ``key``.

    The generators' states are restored afterwards, so the caller's draws are unchanged.
    """
    device = torch.device(device)
    devices = [device] if device.type == "cuda" else []
    seed = _seed_of(key)
    state = np.random.get_state()
    with torch.random.fork_rng(devices=devices, device_type=device.type if devices else "cuda"):
        torch.manual_seed(seed)
        np.random.seed(seed % (2**32))
        try:
            yield
        finally:
            np.random.set_state(state)


def shape_problem(result: dict) -> str | None:
    """A cell's per-image lists must have one number per image."""
    images = result.get("images")
    values = result.get("values")
    if values is not None:
        if not isinstance(values, list):
            return f"values are a {type(values).__name__}, not a list"
        odd = [v for v in values if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)))]
        if odd:
            return f"values of type {type(odd[0]).__name__}, not numbers"
    if images is None:
        return None
    if values is not None and len(values) != len(images):
        return f"{len(values)} values for {len(images)} images"
    return None
