"""The command line shared by every benchmark entry point: one flag per ``Config`` field, presets, threads."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys

import torch

from .checks import check_finite
from .config import NAMED_DATA, Config
from .presets import PRESETS

__all__ = ["build_parser", "parse_args", "threads"]


def _shown(value) -> str:
    """An option's value as it would be typed on the command line."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        if (
            len(value) > 6
            and all(isinstance(v, int) for v in value)
            and value == list(range(value[0], value[0] + len(value)))
        ):  # 0 1 ... 39
            return f"{_shown(value[0])} {_shown(value[1])} ... {_shown(value[-1])}"
        return " ".join(_shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return "none" if value is None else str(value)


def _default_help(name: str, default) -> str:
    """`` (default: X)``, and the presets' values where they differ (the parser's own defaults are None)."""
    text = f"default: {_shown(default)}"
    presets = [f"{p} {_shown(v[name])}" for p, v in sorted(PRESETS.items()) if name in v and v[name] != default]
    if presets:
        text += "; --preset " + ", ".join(presets)
    return f" ({text})".replace("%", "%%")


def build_parser(description: str = "") -> argparse.ArgumentParser:
    """The command line shared by every benchmark entry point (one flag per Config field).

    Every option's parser default is None, so that a preset applies where an option is not
    given; its help shows the default it gets (``Config``'s) and the presets' values.
    """
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False)
    run = parser.add_argument_group("the run")
    run.add_argument("--out", default="results", help="output folder (default: results)")
    run.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="a named set of sizes (options given after it win); imagenet applies by default to an ImageFolder --data",
    )
    run.add_argument(
        "--restart", action="store_true", help="discard the stored measurements in --out (the networks are kept)"
    )
    run.add_argument("--retrain", action="store_true", help="discard the stored networks in --out too")
    run.add_argument(
        "--quiet", action="store_true", help="no progress bars (warnings, errors and the summary still show)"
    )
    run.add_argument(
        "--rank-timeout",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="under torchrun: a rank not heard from for this long is taken as lost, and the job stops with a line "
        "saying to rerun it (default: 600)",
    )
    groups = {
        "train": parser.add_argument_group("networks (changing one retrains)"),
        "measure": parser.add_argument_group("measurements (changing one recomputes what depends on it)"),
        "run": run,
    }
    defaults = Config()
    for f in dataclasses.fields(Config):
        flag = "--" + f.name.replace("_", "-")
        value = getattr(defaults, f.name)
        group, help_text = groups[f.metadata["role"]], f.metadata["help"].replace("%", "%%")
        help_text += _default_help(f.name, value)
        if isinstance(value, bool):
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif isinstance(value, list):
            kind = type(value[0]) if value else str
            group.add_argument(flag, nargs="+", type=kind, default=None, metavar=kind.__name__.upper(), help=help_text)
        else:
            kind = int if isinstance(value, int) else float if isinstance(value, float) else str
            group.add_argument(flag, type=kind, default=None, help=help_text)
    return parser


def parse_args(argv: list[str] | None = None, description: str = "") -> tuple[Config, argparse.Namespace]:
    """Build a Config from the command line (preset first, then explicit options), validated."""
    parser = build_parser(description)
    args = parser.parse_args(argv)
    values = {}
    explicit = {f.name: getattr(args, f.name) for f in dataclasses.fields(Config) if getattr(args, f.name) is not None}
    preset = args.preset or ("imagenet" if explicit.get("data", "digits") not in NAMED_DATA else None)
    if preset:
        values.update(PRESETS[preset])
    values.update(explicit)
    cfg = Config(**values)
    try:
        check_finite({"--rank-timeout": args.rank_timeout})
        if args.rank_timeout <= 0:
            raise ValueError(f"--rank-timeout must be positive, got {args.rank_timeout:g}")
        cfg.validate()
    except ValueError as err:  # one line, no usage dump: the message names the option
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return cfg, args


@contextlib.contextmanager
def threads(count: int):
    """torch computes on ``count`` intra-op CPU threads inside the block, as before it afterwards.

    A run enters it before anything is computed or recorded (the count is part of the
    numerics, and the run's record says which it was); a caller in the same process, a test
    or a notebook, gets its own count back.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
