"""What a store does with what it cannot use: one line per rejected file, and entries set aside."""

from __future__ import annotations

import os
import sys
from pathlib import Path

__all__ = ["RejectLog", "not_a_file", "say", "set_aside"]


class RejectLog:
    """One line per rejected file; repeats of a reason within a kind are counted, not printed."""

    def __init__(self):
        self.seen: dict[tuple[str, str], int] = {}

    def __call__(self, path: Path, reason: str, *, group: str | None = None) -> None:
        # Repeats are counted by the reason's kind, before its details ("...: x", "... (x)").
        key = (group or str(path), reason.split(":")[0].split(" (")[0])
        self.seen[key] = self.seen.get(key, 0) + 1
        if self.seen[key] == 1:
            say(f"{path}: {reason}")

    def close(self) -> None:
        for (group, reason), n in self.seen.items():
            if n > 1:
                say(f"... and {n - 1} more in {group} ({reason})")
        self.seen.clear()


def say(line: str) -> None:
    """One line on stderr that does not break a progress bar."""
    from tqdm import tqdm

    tqdm.write(line, file=sys.stderr)


def not_a_file(path: Path) -> str:
    """``not a file but a folder`` (or a special file): why a store entry is set aside."""
    return f"not a file but a {'folder' if path.is_dir() else 'special file'}"


def set_aside(path: Path) -> Path:
    """Rename ``path`` (whatever it is) to ``<name>.damaged`` (``.damaged.1``, ... if taken); returns the new path."""
    aside, n = path.with_name(f"{path.name}.damaged"), 1
    while aside.exists() or aside.is_symlink():
        aside, n = path.with_name(f"{path.name}.damaged.{n}"), n + 1
    os.replace(path, aside)
    return aside
