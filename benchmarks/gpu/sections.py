"""What a GPU run's record holds: its sections, in the order they run, and how it is read back.

Below both the command (``benchmarks.gpu``) and the page writer (``benchmarks.gpu.record``),
so that neither imports the other to learn them.
"""

from __future__ import annotations

from pathlib import Path

from ..common import read_json

__all__ = ["SECTIONS", "load"]

#: The sections of a run, in the order they run.
SECTIONS = ("environment", "correctness", "speed", "protocol", "record")


def load(path: str | Path) -> dict:
    """A run's record from its ``gpu.json``; ValueError if it is not one."""
    record = read_json(path, "gpu.json")
    if not isinstance(record, dict) or not isinstance(record.get("sections"), dict):
        raise ValueError(f"{path}: not a record of python -m benchmarks.gpu (no 'sections')")
    return record
