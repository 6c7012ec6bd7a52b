"""The ``protocol`` section: the paper's ImageNet protocol, scaled to fit, and its extrapolation.

It makes a synthetic ImageFolder (random images with a class cue, 10 classes) and a
randomly initialised network saved as the weights file, and runs the README's ImageNet
command on them, ``python -m benchmarks --arch ... --data ... --weights ...
--train-data ... --device ...``, with the fine-tuning and measurement sizes cut to fit
the section's share (the subprocess gets what is left of it as its time limit; what it
finished is kept by its store). The same folder serves as training and evaluation data,
so the fine-tuned networks classify enough of its images correctly for the protocol.

From the run's store it reads the time of each sensitivity cell (one network, method
and repetition over ``n_images`` images) and the fine-tuning time of the ODE and SDE
twins; in-process it times one training step (forward, loss, backward, Adam) of
torchvision's network and of both twins side by side. From these it extrapolates the
paper's full protocol on one GPU: 100 images x 5 repetitions x 4 methods for the ODE
and the SDE network, per training seed, for 5 seeds, each seed fine-tuning both networks
for one epoch of ImageNet's 1,281,167 training images.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torchvision

from ..common import paired_ratios
from ..networks import ODE, Network
from .correctness import ROOT

LOG = "protocol.log"
METHODS = ("saliency", "integrated_gradients", "deeplift", "deeplift_shap")
#: The paper's protocol: images per repetition, repetitions, training seeds, ImageNet's training set.
#: The SDE twin the extrapolation times (σ of the paper's tables).
SIGMA = 0.5
FULL = {"images": 100, "repetitions": 5, "seeds": 5, "train_images": 1_281_167, "epochs": 1}

SIZES = {
    # The imagenet preset (chosen by --data), with these cuts.
    "gpu": dict(
        arch="resnet50", image_size=224, classes=10, per_class=32, reserve=30.0,
        options=[
            "--epochs", "1", "--batch-size", "32", "--n-images", "4", "--repetitions", "2",
            "--robust-images", "2", "--attack-steps", "2", "--theorem-images", "1", "--bound-steps", "1",
            "--completeness-images", "1", "--figure-images", "1",
        ],
    ),
    # The quick preset's sizes, as the test suite's ImageFolder run; like the imagenet preset,
    # without the shapes and the interventions.
    "tiny": dict(
        arch="resnet18", image_size=16, classes=10, per_class=4, reserve=5.0,
        options=[
            "--preset", "quick", "--epochs", "1", "--batch-size", "16", "--n-images", "2", "--repetitions", "2",
            "--lr", "1e-4", "--robust-methods", "saliency", "--bound-steps", "1", "--shap-baselines", "2",
            "--no-shapes", "--no-interventions", "--theorem-images", "1", "--completeness-images", "1",
        ],
    ),
}  # fmt: skip


def image_folder(root: Path, *, classes: int, per_class: int, size: int, seed: int = 0) -> Path:
    """Random RGB images with a class cue (one bright square per class position), as PNG files."""
    from PIL import Image

    gen = torch.Generator().manual_seed(seed)
    side = max(size // 4, 1)
    for c in range(classes):
        folder = root / f"class{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        row, col = divmod(c % 16, 4)
        for i in range(per_class):
            pixels = (torch.rand(size, size, 3, generator=gen) * 160).to(torch.uint8)
            pixels[row * side : (row + 1) * side, col * side : (col + 1) * side, c % 3] = 255
            Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")
    return root


def command(sizes: dict, data: Path, weights: Path, out: Path, device: str) -> list[str]:
    """The README's ImageNet command on the synthetic data, with the section's cuts."""
    return [
        sys.executable, "-m", "benchmarks", "--arch", sizes["arch"], "--data", str(data), "--weights", str(weights),
        "--train-data", str(data), "--device", device, "--out", str(out), "--seeds", "0",
        "--image-size", str(sizes["image_size"]), "--methods", *METHODS, *sizes["options"],
        "--threads", str(torch.get_num_threads()),  # the machine's, as every other section computes on
    ]  # fmt: skip


def read_store(out: Path) -> dict:
    """What the run's store holds: sensitivity cell times, fine-tuning times, parts reached."""
    cells = out / "cells"
    sens: dict[str, dict[str, list[dict]]] = {}
    for path in sorted((cells / "sensitivity").glob("s*/*.json")):
        content = json.loads(path.read_text())
        r = content["result"]
        n = len(r["images"])
        entry = {"rep": r["rep"], "seconds": content["seconds"], "images": n}
        sens.setdefault(r["model"], {}).setdefault(r["method"], []).append(entry)
    train = {}
    for path in sorted((cells / "train").glob("s*/*.json")):
        r = json.loads(path.read_text())["result"]
        train[path.stem] = {"seconds": r.get("train_seconds"), "epochs": r.get("epochs")}
    kinds = sorted(p.name for p in cells.iterdir() if p.is_dir()) if cells.exists() else []
    runs = json.loads((out / "runs.json").read_text()) if (out / "runs.json").exists() else []
    return {"sensitivity": sens, "train": train, "kinds": kinds, "status": runs[-1]["status"] if runs else None}


def per_image(cells: list[dict]) -> dict:
    """Seconds per (image, method, repetition) of one network and method: first and later repetitions."""
    first = [c["seconds"] / c["images"] for c in cells if c["rep"] == 0 and c["seconds"]]
    later = [c["seconds"] / c["images"] for c in cells if c["rep"] > 0 and c["seconds"]]
    steady = later or first
    return {
        "first_rep": min(first) if first else None,
        "later_reps": sum(later) / len(later) if later else None,
        "steady": sum(steady) / len(steady) if steady else None,
    }


def train_steps(arch: str, classes: int, batch: int, size: int, device: torch.device, deadline: float) -> dict:
    """One fine-tuning step (forward, cross-entropy, backward, Adam) of torchvision's network and both twins."""
    from neuralsde import ODEResNet, SDEResNet

    torch.manual_seed(0)
    tv = torchvision.models.get_model(arch, num_classes=classes)
    nets = {
        "torchvision": tv.to(device).train(),
        "ode": ODEResNet.from_torchvision(tv).to(device).train(),
        "sde": SDEResNet.from_torchvision(tv, sigma=SIGMA).to(device).train(),
    }
    gen = torch.Generator(device=device).manual_seed(2)
    x = torch.randn(batch, 3, size, size, device=device, generator=gen)
    y = torch.randint(0, classes, (batch,), device=device, generator=gen)

    def step(net):
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)

        def call():
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()

        return call

    timing = paired_ratios(
        {name: step(net) for name, net in nets.items()},
        [("ode", "torchvision"), ("sde", "torchvision"), ("sde", "ode")],
        rounds=20,
        warmup=2,
        device=device,
        deadline=deadline,
        min_rounds=3,
    )
    return {
        "batch": batch,
        "rounds": timing["rounds"],
        "ratios": timing["ratios"],
        "images_per_s": {name: batch / s["median"] for name, s in timing["seconds"].items()},
    }


def extrapolate(times: dict[str, dict[str, dict]], rates: dict[str, float]) -> dict:
    """The full protocol's time on one GPU, from the measured per-image and per-step figures.

    Args:
        times: network -> method -> ``per_image`` figures.
        rates: network -> fine-tuning images per second.
    """
    per_seed_attr = 0.0
    for methods in times.values():
        for method in METHODS:
            t = methods.get(method, {}).get("steady")
            if t is None:
                return {"complete": False, "missing": f"no time for {method}"}
            per_seed_attr += t * FULL["images"] * FULL["repetitions"]
    per_seed_train = sum(FULL["train_images"] * FULL["epochs"] / rates[name] for name in ("ode", "sde"))
    cells = FULL["seeds"] * 2 * len(METHODS) * FULL["repetitions"]
    return {
        "complete": True,
        "attributions_per_seed_s": per_seed_attr,
        "fine_tuning_per_seed_s": per_seed_train,
        "total_s": FULL["seeds"] * (per_seed_attr + per_seed_train),
        "ranks_for_an_hour": ranks_for(
            3600.0, FULL["seeds"] * per_seed_train, cells, FULL["seeds"] * per_seed_attr / cells
        ),
        "assumes": FULL,
    }


def ranks_for(limit_s: float, train_s: float, cells: int, cell_s: float, most: int = 4096) -> int | None:
    """The fewest ranks (GPUs) of one torchrun job that finish the protocol within ``limit_s``, at best.

    With R ranks, the fine-tuning (``train_s`` on one GPU) runs with DistributedDataParallel
    on all of them, taken as R times as fast, and the ``cells`` measurement cells of
    ``cell_s`` each (one network, method and repetition over the protocol's images) are
    shared out, at most ``ceil(cells / R)`` to a rank: ``train_s / R + ceil(cells / R) *
    cell_s``. Perfect scaling, so the true count is this or more. None if no count up to
    ``most`` does (one cell alone takes longer than the limit).
    """
    for r in range(1, most + 1):
        if train_s / r + -(-cells // r) * cell_s <= limit_s:
            return r
    return None


def run(section) -> None:
    sizes = SIZES["tiny" if section.tiny else "gpu"]
    result = section.result
    result["sizes"] = {k: v for k, v in sizes.items() if k != "reserve"}
    keep = section.work is not None
    work = section.work if keep else Path(tempfile.mkdtemp(prefix="neuralsde-gpu-"))
    try:
        start = time.perf_counter()
        data = image_folder(
            work / "data", classes=sizes["classes"], per_class=sizes["per_class"], size=sizes["image_size"]
        )
        weights = work / f"{sizes['arch']}.pth"
        torch.manual_seed(0)
        torch.save(torchvision.models.get_model(sizes["arch"], num_classes=sizes["classes"]).state_dict(), weights)
        result["setup_s"] = round(time.perf_counter() - start, 2)
        out = work / "run"
        argv = command(sizes, data, weights, out, str(section.device))
        result["command"] = " ".join(["python", *argv[1:]]).replace(str(work), "WORK")
        limit = max(section.left() - sizes["reserve"], 10.0)
        start = time.perf_counter()
        try:
            proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=limit)
            log, code = proc.stdout + "\n" + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as err:
            log, code = _text(err.stdout) + "\n" + _text(err.stderr), None
            section.reached = f"the run was stopped by the section's limit of {limit:.0f} s"
        result["run_s"] = round(time.perf_counter() - start, 2)
        result["exit_code"] = code
        (section.out / LOG).write_text(_tail(log))
        result["log"] = LOG
        store = read_store(out)
        result["parts_reached"] = store["kinds"]
        result["run_status"] = store["status"]
        train_images = sizes["classes"] * sizes["per_class"]
        result["fine_tuning"] = {
            name: {**t, "images_per_s": train_images * (t["epochs"] or 0) / t["seconds"] if t["seconds"] else None}
            for name, t in store["train"].items()
        }
        result["per_image_s"] = {
            net: {method: per_image(cells) for method, cells in methods.items()}
            for net, methods in store["sensitivity"].items()
        }
        section.save()
        batch = int(sizes["options"][sizes["options"].index("--batch-size") + 1])
        steps = train_steps(
            sizes["arch"], sizes["classes"], batch, sizes["image_size"], section.device, section.deadline - 2
        )
        result["train_step"] = steps
        rates = {"ode": steps["images_per_s"]["ode"], "sde": steps["images_per_s"]["sde"]}
        nets = {net: m for net, m in result["per_image_s"].items() if net in (ODE, Network(SIGMA).name)}
        result["extrapolation"] = extrapolate(nets, rates) if len(nets) == 2 else {"complete": False}
        if code not in (0, None):
            raise RuntimeError(f"the protocol's run exited with {code}: {_last_error(log)}")
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _tail(log: str, limit: int = 200_000) -> str:
    # Progress bars redraw with carriage returns; keep each bar's last state.
    lines = [line.rsplit("\r", 1)[-1] for line in log.splitlines()]
    text = "\n".join(lines)
    return text[-limit:]


def _last_error(log: str) -> str:
    lines = [line for line in _tail(log).splitlines() if line.strip()]
    return lines[-1][:500] if lines else "no output"
