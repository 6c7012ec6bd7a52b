"""The ``speed`` section: the models against torchvision, side by side, at GPU sizes.

Every line times its models in one loop of rounds (``benchmarks.common.paired_ratios``:
the order is shuffled from round to round, a ratio is formed within each round, CUDA events
after a warm-up) and reports the median ratio with its quartiles, each model's images
per second and its peak memory. Lines, most important first:

========================  ==========================================================
``fp32 forward``           eval mode, ``torch.no_grad``; the SDE with its noise on
``fp32 forward+backward``  train mode (noise on), loss = sum of the logits
``fp32 deeplift``          Captum's DeepLift on the ODE twin and on its discrete twin
``bf16 forward``           ``torch.autocast(bfloat16)``, channels_last
``bf16 forward+backward``  the same, train mode
``bf16 compiled forward``  the ODE twin and torchvision under ``torch.compile``
========================  ==========================================================

"fp32" runs with PyTorch's TF32 defaults, which the environment section records (on an
H200, cuDNN convolutions use TF32 unless it is switched off). Peak memory is what one
call adds to what was allocated before it (``torch.cuda.max_memory_allocated`` after a
reset): activations, gradients and workspaces, without the resident weights.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings

import torch
import torchvision
from tqdm import tqdm

from neuralsde import ODEResNet, SDEResNet
from neuralsde.discrete import DiscreteResNet

from ..common import paired_ratios
from ..targets import target as target_of

#: Sizes: at GPU scale, and for a dry run.
SIZES = {
    "gpu": dict(arch="resnet50", size=224, forward=64, train=32, deeplift=16, rounds=20, inner=3, compile="inductor"),
    "tiny": dict(arch="resnet18", size=32, forward=4, train=2, deeplift=2, rounds=3, inner=1, compile="eager"),
}
LINES = (
    ("fp32", "forward"),
    ("fp32", "forward+backward"),
    ("fp32", "deeplift"),
    ("bf16", "forward"),
    ("bf16", "forward+backward"),
    ("bf16", "compiled forward"),
)


def target(phase: str, ratio: str) -> float | None:
    """The target of a ratio on a line of this phase, if it has one (``benchmarks.targets``, the GPU's)."""
    return target_of("gpu", phase, ratio)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory(fn, device: torch.device) -> float | None:
    """MiB one call of ``fn`` adds at its peak to what was allocated before it (None off a GPU)."""
    if device.type != "cuda":
        return None
    _sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    _sync(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


class Models:
    """torchvision's network and its ODE and SDE twins (same weights), on the device."""

    def __init__(self, arch: str, device: torch.device, seed: int = 0):
        torch.manual_seed(seed)
        tv = torchvision.models.get_model(arch)
        self.nets = {
            "torchvision": tv.to(device),
            "ode": ODEResNet.from_torchvision(tv).to(device),
            "sde": SDEResNet.from_torchvision(tv, sigma=0.5, method="euler").to(device),
        }
        self.nets["sde"].set_noise(eval_samples=1)  # noise on in eval mode too: the cost of drawing it
        self.device = device
        self.layout = torch.contiguous_format

    def layout_to(self, layout) -> None:
        for net in self.nets.values():
            net.to(memory_format=layout)
        self.layout = layout


def _precision(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _callables(models: Models, phase: str, precision: str, x: torch.Tensor, compile_backend: str) -> tuple[dict, dict]:
    """The callables a line times, and what it records about them (compile times)."""
    device, nets, notes = models.device, models.nets, {}
    if phase == "forward":
        for net in nets.values():
            net.eval()

        def forward(net):
            def call():
                with torch.no_grad(), _precision(device, precision):
                    net(x)

            return call

        return {name: forward(net) for name, net in nets.items()}, notes
    if phase == "forward+backward":
        for net in nets.values():
            net.train()

        def step(net):
            def call():
                net.zero_grad(set_to_none=True)
                with _precision(device, precision):
                    out = net(x)
                out.float().sum().backward()

            return call

        return {name: step(net) for name, net in nets.items()}, notes
    if phase == "deeplift":
        from captum.attr import DeepLift

        ode = nets["ode"].eval()
        twins = {"ode": ode, "discrete": DiscreteResNet(ode).eval()}

        def deeplift(net):
            explainer = DeepLift(net)

            def call():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    explainer.attribute(x, target=0)

            return call

        return {name: deeplift(net) for name, net in twins.items()}, notes
    if phase == "compiled forward":
        torch.compiler.reset()
        runs = {}
        for name in ("ode", "torchvision"):
            net = nets[name].eval()
            compiled = torch.compile(net, fullgraph=True, backend=compile_backend)

            def call(compiled=compiled):
                with torch.no_grad(), _precision(device, precision):
                    compiled(x)

            start = time.perf_counter()
            call()
            _sync(device)
            notes[f"{name}_compile_s"] = round(time.perf_counter() - start, 2)
            runs[f"{name}_compiled"] = call
        runs["ode"] = _callables(models, "forward", precision, x, compile_backend)[0]["ode"]
        notes["backend"] = compile_backend
        return runs, notes
    raise ValueError(f"unknown phase {phase!r}")


#: The ratios each phase reports.
PAIRS = {
    "forward": [("ode", "torchvision"), ("sde", "ode")],
    "forward+backward": [("ode", "torchvision"), ("sde", "ode")],
    "deeplift": [("ode", "discrete")],
    "compiled forward": [("ode_compiled", "torchvision_compiled"), ("ode_compiled", "ode")],
}


def measure_line(models: Models, precision: str, phase: str, sizes: dict, deadline: float) -> dict:
    """One line: its ratios, each model's seconds, images per second and peak memory."""
    device = models.device
    batch = {"forward": sizes["forward"], "compiled forward": sizes["forward"], "deeplift": sizes["deeplift"]}.get(
        phase, sizes["train"]
    )
    layout = torch.channels_last if precision == "bf16" else torch.contiguous_format
    if models.layout != layout:
        models.layout_to(layout)
    gen = torch.Generator(device=device).manual_seed(1)
    x = torch.randn(batch, 3, sizes["size"], sizes["size"], device=device, generator=gen)
    x = x.contiguous(memory_format=layout)
    runs, notes = _callables(models, phase, precision, x, sizes["compile"])
    for fn in runs.values():  # warm-up first: cuDNN's algorithm search must not count as peak memory
        fn()
        fn()
    memory = {name: peak_memory(fn, device) for name, fn in runs.items()}
    bar = tqdm(total=sizes["rounds"], desc=f"speed: {precision} {phase}", leave=False, file=sys.stderr)
    timing = paired_ratios(
        runs,
        PAIRS[phase],
        rounds=sizes["rounds"],
        warmup=1,
        device=device,
        inner=sizes["inner"],
        deadline=deadline,
        min_rounds=3,
        progress=lambda r: bar.update(1),
    )
    bar.close()
    out = {
        "timer": "CUDA events" if device.type == "cuda" else "wall clock",
        "precision": precision,
        "phase": phase,
        "layout": "channels_last" if layout == torch.channels_last else "contiguous",
        "batch": batch,
        "image_size": sizes["size"],
        "rounds": timing["rounds"],
        "inner": sizes["inner"],
        "ratios": {},
        "models": {},
        **notes,
    }
    for name, ratio in timing["ratios"].items():
        out["ratios"][name] = {**ratio, "target": target(phase, name)}
    for name, sec in timing["seconds"].items():
        out["models"][name] = {
            "seconds": sec["median"],
            "images_per_s": batch / sec["median"] if sec["median"] > 0 else None,
            "peak_mib": memory[name],
        }
    if memory.get("ode") is not None and memory.get("torchvision"):
        out["memory_ratio"] = {"ode/torchvision": memory["ode"] / memory["torchvision"]}
        out["memory_ratio_target"] = target("memory", "ode/torchvision")
    return out


#: The least time, in seconds, a line is started with (at GPU sizes; a compile needs more).
MIN_LINE = {"compiled forward": 60.0}


def run(section) -> None:
    sizes = SIZES["tiny" if section.tiny else "gpu"]
    section.result.update(sizes={k: v for k, v in sizes.items()}, lines=[])
    # What "fp32" means on this GPU: TF32 convolutions and matrix products, or not.
    section.result["tf32"] = {
        "convolutions": bool(torch.backends.cudnn.allow_tf32),
        "matmul": bool(torch.backends.cuda.matmul.allow_tf32),
    }
    # cuDNN picks its fastest algorithm per shape, as training scripts on GPUs set it (the
    # warm-up rounds pay for the search); the setting is restored afterwards.
    previous = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = section.device.type == "cuda"
    section.result["cudnn_benchmark"] = torch.backends.cudnn.benchmark
    try:
        _lines(section, sizes)
    finally:
        torch.backends.cudnn.benchmark = previous


def _lines(section, sizes: dict) -> None:
    models = Models(sizes["arch"], section.device)
    lines = section.result["lines"]
    for i, (precision, phase) in enumerate(LINES):
        left = section.left()
        need = 0.0 if section.tiny else MIN_LINE.get(phase, 5.0)
        if left < need:
            section.reached = f"{i} of {len(LINES)} lines measured; {len(LINES) - i} left out for time"
            break
        # The lines still to come share what is left; each keeps at least its first rounds.
        deadline = time.perf_counter() + left / (len(LINES) - i)
        try:
            lines.append(measure_line(models, precision, phase, sizes, deadline))
        except Exception as err:  # one line's failure is recorded; the others are still measured
            lines.append({"precision": precision, "phase": phase, "error": f"{type(err).__name__}: {err}"[:1000]})
        section.save()
    failed = [f"{line['precision']} {line['phase']}" for line in lines if "error" in line]
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(lines)} lines failed: {', '.join(failed)}")
