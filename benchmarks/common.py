"""Shared plumbing of the benchmark CLIs: run records, atomic writes, timing."""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

__all__ = [
    "atomic_write_text",
    "environment",
    "paired_ratios",
    "progress_bar",
    "quartiles",
    "round_order",
    "save_png",
    "write_json",
]


def environment(device: str | torch.device = "cpu") -> dict:
    """Versions and machine facts recorded with every result."""
    import captum
    import torchdiffeq
    import torchsde
    import torchvision

    import neuralsde

    device = torch.device(device)
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "versions": {
            "neuralsde": neuralsde.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "torchdiffeq": getattr(torchdiffeq, "__version__", "unknown"),
            "torchsde": torchsde.__version__,
            "captum": captum.__version__,
        },
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; results are for reading
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_json(path: str | os.PathLike, what: str):
    """The JSON content of ``path``; ValueError ``"<path>: not a readable <what> (<why>)"`` if it has none."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable {what} ({err})") from None


def write_json(path: str | os.PathLike, data) -> None:
    """Atomically write ``data`` as indented JSON."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_png(fig, path: str | os.PathLike) -> None:
    """Save a matplotlib figure as PNG atomically (temporary file, then rename) and close it."""
    import matplotlib.pyplot as plt

    tmp = f"{path}.{os.getpid()}.tmp.png"
    try:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    finally:
        plt.close(fig)


def progress_bar(total: int, desc: str, *, quiet: bool = False):
    """A progress bar on stderr (tqdm).

    On a terminal it redraws itself in place. When stderr is a file or a pipe each redraw
    would be one more line of the log, so it redraws at most every 30 seconds; with
    ``quiet`` it shows nothing.
    """
    from tqdm import tqdm

    tty = sys.stderr.isatty()
    slow = {} if tty else {"mininterval": 30.0, "maxinterval": 120.0}
    return tqdm(total=total, desc=desc, file=sys.stderr, disable=quiet, **slow)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """The lower quartile, median and upper quartile of ``values``, within their range.

    The quartiles interpolate between neighbouring order statistics (the inclusive method
    of ``statistics.quantiles``). Its default, exclusive method extrapolates beyond the
    smallest and largest values of a small sample: two timing ratios 1 and 9 get the
    lower quartile -1. Clamping keeps min <= q1 <= median <= q3 <= max under rounding.
    """
    median = statistics.median(values)
    if len(values) < 2:
        return median, median, median
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return max(min(values), min(q1, median)), median, min(max(values), max(q3, median))


def _timer(device: torch.device):
    """``timed(fn, inner) -> seconds per call``: CUDA events on a GPU, the wall clock elsewhere.

    On a GPU the events are recorded on the current stream around ``inner`` calls and read
    after one synchronisation, so the figure is the device's time from the first launch to
    the end of the last kernel, including any gap in which the device waited for the host.
    """
    if device.type == "cuda":

        def timed(fn, inner):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1000.0 / inner

        return timed

    def timed(fn, inner):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        return (time.perf_counter() - start) / inner

    return timed


def round_order(names: list[str], r: int, seed: int = 0) -> list[str]:
    """The order of round ``r``: ``names`` shuffled by a generator seeded with ``(seed, r)``.

    Shuffled, not rotated: under a rotation each callable always follows the same one
    (in a round of tv, ode, sde: ode after tv, except when ode opens the round), so what
    one leaves behind (a large free, cold caches) always falls on the same other.
    """
    order = list(names)
    random.Random(f"{seed}:{r}").shuffle(order)
    return order


def paired_ratios(
    runs: dict[str, Callable[[], object]],
    pairs: list[tuple[str, str]],
    *,
    rounds: int,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    progress=None,
    inner: int = 1,
    deadline: float | None = None,
    min_rounds: int = 2,
) -> dict:
    """Time several callables side by side and compare them pairwise.

    Each round calls every callable once (``inner`` times in a row, timed together), in
    an order shuffled from round to round (``round_order``), so slow drifts of the machine
    and what one callable leaves behind for the next hit all of them alike; a ratio is
    formed within each round and the rounds' ratios are summarised by their median and
    quartiles. On a GPU each reading is taken with CUDA events.

    Args:
        runs: name -> zero-argument callable to time.
        pairs: (numerator, denominator) names to compare.
        rounds: timed rounds.
        warmup: untimed rounds first.
        device: where the work runs (CUDA work is timed with events).
        progress: optional callable taking the number of finished rounds.
        inner: calls per reading.
        deadline: a ``time.perf_counter()`` value after which no new round starts once
            ``min_rounds`` are done (None: all ``rounds``).
        min_rounds: rounds made whatever the deadline.

    Returns:
        ``{"rounds": n, "seconds": {name: {"median", "min"}}, "ratios": {"a/b": {"median", "q1", "q3",
        "min_ratio"}}}``: the rounds made, the median and fastest seconds per call, the median
        and quartiles of the per-round ratios, and the ratio of the fastest runs.
    """
    device = torch.device(device)
    timed = _timer(device)
    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        if deadline is not None and r >= min_rounds and time.perf_counter() > deadline:
            break
        for name in round_order(names, r):
            _sync(device)
            times[name].append(timed(runs[name], inner))
        if progress is not None:
            progress(r + 1)
    done = len(times[names[0]])
    out = {
        "rounds": done,
        "seconds": {n: {"median": statistics.median(t), "min": min(t)} for n, t in times.items()},
        "ratios": {},
    }
    for a, b in pairs:
        ratios = [x / y for x, y in zip(times[a], times[b])]
        q1, median, q3 = quartiles(ratios)
        out["ratios"][f"{a}/{b}"] = {
            "median": median,
            "q1": q1,
            "q3": q3,
            # The least-disturbed run of each: a second estimate, robust to a noisy machine.
            "min_ratio": min(times[a]) / min(times[b]),
        }
    return out


class GpuMonitor:
    """Samples the GPU's utilisation (percent busy) in a background thread.

    Uses ``torch.cuda.utilization`` (NVML); on a machine without it the record says so.
    """

    def __init__(self, device: str | torch.device, interval: float = 0.5):
        self.device = torch.device(device)
        self.interval = interval
        self.samples: list[float] = []
        self.error: str | None = None
        self._stop = None
        self._thread = None

    def __enter__(self):
        import threading

        if self.device.type != "cuda":
            self.error = "not a CUDA device"
            return self
        try:
            torch.cuda.utilization(self.device)
        except Exception as err:  # NVML missing or unsupported
            self.error = f"utilisation unavailable: {err}"
            return self
        self._stop = threading.Event()

        def sample():
            while not self._stop.wait(self.interval):
                self.samples.append(float(torch.cuda.utilization(self.device)))

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        return False

    def record(self) -> dict:
        if not self.samples:
            return {"gpu_utilisation_mean": None, "samples": 0, "note": self.error}
        return {
            "gpu_utilisation_mean": sum(self.samples) / len(self.samples),
            "gpu_utilisation_max": max(self.samples),
            "samples": len(self.samples),
        }
