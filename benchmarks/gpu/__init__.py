"""One command that checks and measures the library on one GPU, within a time budget.

    python -m benchmarks.gpu --out DIR [--budget 360] [--device cuda] [--tiny]
    python -m benchmarks.gpu --publish DIR/gpu.json      # docs/gpu.md from a run

Sections, in order, each with its share of the budget (time a section leaves unused
passes to the next ones):

* ``environment``: the GPU, its memory, driver and CUDA, the versions of torch,
  torchvision, torchdiffeq, torchsde and captum, and the TF32 settings;
* ``correctness``: the tests marked ``cuda`` (``tests/library/test_cuda.py``), in a subprocess;
* ``speed``: the models against torchvision, side by side (``benchmarks.gpu.speed``):
  fp32 and bf16 autocast with channels_last, forward and forward + backward, Captum's
  DeepLift on the ODE twin and its discrete twin, and the ODE forward under
  ``torch.compile``; the median ratio with quartiles, images per second, peak memory;
* ``protocol``: the paper's ImageNet protocol through the README's command, on a
  synthetic ImageFolder and a randomly initialised network, with the sizes cut to fit
  (``benchmarks.gpu.protocol``), and its extrapolation to the full protocol;
* ``record``: ``gpu.md``, every table as Markdown (``benchmarks.gpu.record``).

Every section's result is written to ``DIR/gpu.json`` (and ``DIR/gpu.md``) as soon as it
is done, and the speed section after every line, so a run that is killed keeps what it
finished. A section that fails records its error (type, message, last frames) and the
next one runs; a section over its share stops at the next line it would start, says how
far it got, and is cut off by an alarm if one step alone overruns. The subprocesses' logs
are kept beside: at most four files, no sub-folder.

The exit status is 1 if a section failed, 0 otherwise (a section stopped by its share is
not a failure).

On a CPU (``--device cpu``) the command is a dry run at tiny sizes (ResNet-18 at 32x32 and 16x16,
a few images, ``torch.compile``'s "eager" backend): every code path runs, and the
figures mean nothing. ``--tiny`` forces those sizes on a GPU too.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..common import atomic_write_text, write_json
from .sections import SECTIONS, load

__all__ = ["SECTIONS", "Section", "load", "main", "run"]

#: Each section's share of the budget.
SHARES = {"environment": 0.02, "correctness": 0.25, "speed": 0.37, "protocol": 0.36}
#: Extra time, as a fraction of a section's share, before its alarm cuts it off.
GRACE = 0.25


class OverBudget(BaseException):
    """Raised inside a section by its alarm when it runs past its share and the grace.

    A BaseException, as KeyboardInterrupt is: the handlers inside a section that record
    one line's error and go on must not swallow it.
    """


@dataclass
class Section:
    """What a section works with: the run, its own deadline, and its result to fill.

    Attributes:
        name: the section's name.
        out: the output folder.
        device: where to measure.
        tiny: dry-run sizes.
        deadline: the ``time.perf_counter()`` value the section should end by.
        save: writes the record as it is now.
        work: where the protocol keeps its data and run (None: a temporary folder, deleted).
        result: what the section records; saved with ``save()``.
        reached: a sentence saying how far a section stopped by its budget got.
    """

    name: str
    out: Path
    device: torch.device
    tiny: bool
    deadline: float
    save: Callable[[], None]
    work: Path | None = None
    result: dict = field(default_factory=dict)
    reached: str | None = None

    def left(self) -> float:
        """Seconds left before the deadline (negative once past it)."""
        return self.deadline - time.perf_counter()

    def over(self) -> bool:
        """Whether the section's share is spent."""
        return self.left() <= 0


def _error(err: BaseException) -> dict:
    frames = traceback.extract_tb(err.__traceback__)[-6:]
    return {
        "type": type(err).__name__,
        "message": str(err)[:2000],
        "frames": [f"{f.filename}:{f.lineno} in {f.name}: {f.line}" for f in frames],
    }


def _alarm(seconds: float):
    """Raise OverBudget in the main thread after ``seconds`` (where signals allow it)."""
    if not hasattr(signal, "SIGALRM"):
        return lambda: None

    def ring(signum, frame):
        raise OverBudget(f"cut off by its alarm after {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 1.0))

    def cancel():
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

    return cancel


def _sections() -> dict[str, Callable[[Section], None]]:
    from . import correctness, environment, protocol, speed

    return {
        "environment": environment.run,
        "correctness": correctness.run,
        "speed": speed.run,
        "protocol": protocol.run,
    }


def run(out: str | Path, *, budget: float = 360.0, device: str = "cuda", tiny: bool | None = None,
        only: list[str] | None = None, command: str = "", work: str | Path | None = None) -> dict:  # fmt: skip
    """Run the sections into ``out``; returns the record written to ``out/gpu.json``.

    Args:
        out: output folder (created; ``gpu.json``, ``gpu.md`` and the logs go there).
        budget: seconds of wall time for everything.
        device: ``cuda``, ``cuda:N`` or ``cpu`` (a dry run).
        tiny: dry-run sizes; None: on a CPU only.
        only: run just these sections (the others are recorded as skipped).
        command: the command line, for the record.
        work: keep the protocol's data, weights and run there (default: a temporary folder).
    """
    from .record import markdown

    start = time.perf_counter()
    end = start + budget
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device(device)
    tiny = dev.type == "cpu" if tiny is None else tiny
    record: dict = {
        "command": command,
        "budget_s": budget,
        "device": str(dev),
        "tiny": tiny,
        "started_at": time.strftime("%Y-%m-%d %H:%M:%S"),
        "sections": {},
    }

    def save() -> None:
        record["elapsed_s"] = round(time.perf_counter() - start, 2)
        write_json(out / "gpu.json", record)
        atomic_write_text(out / "gpu.md", markdown(record))

    functions = _sections()
    names = list(functions)
    for i, name in enumerate(names):
        now = time.perf_counter()
        shares = [SHARES[n] for n in names[i:]]
        share = max(0.0, end - now) * shares[0] / sum(shares)
        section = Section(name, out, dev, tiny, now + share, save, None if work is None else Path(work))
        entry = record["sections"][name] = {"status": "running", "share_s": round(share, 1), "result": section.result}
        if only is not None and name not in only:
            entry["status"] = "skipped"
            save()
            continue
        print(f"[gpu] {name}: {share:.0f} s", file=sys.stderr, flush=True)
        cancel = _alarm(share * (1 + GRACE) + 5)
        try:
            functions[name](section)
            entry["status"] = "partial" if section.reached else "ok"
        except OverBudget as err:
            entry["status"] = "partial"
            section.reached = section.reached or str(err)
        except Exception as err:  # a failed section is recorded; the next one still runs
            entry["status"] = "failed"
            entry["error"] = _error(err)
        finally:
            cancel()
        if section.reached:
            entry["reached"] = section.reached
        entry["seconds"] = round(time.perf_counter() - now, 2)
        save()
        print(f"[gpu] {name}: {entry['status']} in {entry['seconds']:.0f} s", file=sys.stderr, flush=True)
    record["sections"]["record"] = {"status": "ok", "result": {"files": ["gpu.json", "gpu.md"]}}
    try:
        save()
    except Exception as err:  # the JSON is written first; the page may fail alone
        record["sections"]["record"] = {"status": "failed", "error": _error(err)}
        write_json(out / "gpu.json", record)
    return record


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", default="results-gpu", help="output folder (gpu.json, gpu.md, logs)")
    parser.add_argument("--budget", type=float, default=360.0, help="seconds of wall time for everything")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N, or cpu for a dry run at tiny sizes")
    parser.add_argument("--tiny", action="store_true", help="dry-run sizes on a GPU too")
    parser.add_argument("--only", nargs="+", choices=list(SHARES), help="run just these sections")
    parser.add_argument(
        "--work", help="keep the protocol's synthetic data, weights and run here (default: a temporary folder)"
    )
    parser.add_argument(
        "--publish", metavar="GPU_JSON", help="write docs/gpu.md (and docs/data/gpu.json) from a run's gpu.json"
    )
    parser.add_argument("--docs", default="docs", help="the documentation folder, with --publish")
    return parser


def main(argv: list[str] | None = None) -> dict | None:
    """The command line; returns the run's record (None with ``--publish``)."""
    from ..checks import check_device, check_finite
    from .record import publish, terminal

    parser = _parser()
    args = parser.parse_args(argv)
    if args.publish:
        try:
            publish(args.publish, args.docs)
        except ValueError as err:
            parser.error(str(err))
        return None
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out} is a file, not a folder")
    try:
        check_finite({"--budget": args.budget})
    except ValueError as err:
        parser.error(str(err))
    if not args.budget > 0:
        parser.error(f"--budget must be a positive number of seconds, got {args.budget}")
    try:
        check_device(args.device)
    except ValueError as err:
        parser.error(str(err))
    command = " ".join(["python -m benchmarks.gpu", *(sys.argv[1:] if argv is None else argv)])
    tiny = True if args.tiny else None
    record = run(
        args.out, budget=args.budget, device=args.device, tiny=tiny, only=args.only, command=command, work=args.work
    )
    print(terminal(record))
    print(f"wrote {args.out}/gpu.json and {args.out}/gpu.md ({record['elapsed_s']:.0f} s)")
    return record
