"""Helpers shared by test modules (import as ``from helpers import ...``)."""

import json
import os
import shutil
import sys
from pathlib import Path

import torch
import torch._dynamo
import torch._inductor.config as inductor
from torch import nn

#: The repository (tests/ is one folder below it; the test modules two).
ROOT = Path(__file__).resolve().parents[1]


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters (in place).

    Freshly initialised BatchNorms are identities in eval mode, which would hide
    mistakes in how they are applied.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(0.2 * torch.rand(n, generator=gen) - 0.1)
                m.running_var.copy_(0.5 + torch.rand(n, generator=gen))
                m.weight.copy_(0.5 + torch.rand(n, generator=gen))
                m.bias.copy_(0.2 * torch.rand(n, generator=gen) - 0.1)
    return model


def tiny_model(
    cls,
    seed: int = 0,
    *,
    in_channels: int = 1,
    num_classes: int = 5,
    widths=(4, 8),
    blocks: int = 2,
    trained_bn: bool = True,
    **settings,
) -> nn.Module:
    """A small ODEResNet / SDEResNet with weights drawn from ``seed``.

    ``trained_bn``: BatchNorm statistics as after training (``randomize_batchnorm``) and
    eval mode; otherwise as constructed, in train mode. ``settings`` go to ``cls.small``.
    """
    torch.manual_seed(seed)
    model = cls.small(in_channels=in_channels, num_classes=num_classes, widths=widths, blocks=blocks, **settings)
    return randomize_batchnorm(model, seed).eval() if trained_bn else model


def compiled_equals_eager(model, x, mode, backend="inductor"):
    """``torch.compile(model, fullgraph=True)`` equals the eager model, noise included.

    The model runs in ``mode`` ("eval" or "train"); in train mode the compiled backward
    runs too. Compiled kernels fuse and reorder float32 operations: 1e-4 of the output
    scale. Random draws fall back to torch's generator (``fallback_random``), so compiled
    and eager noise are the same numbers.
    """
    model.train(mode == "train")
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=backend)  # a graph break raises
    with torch.random.fork_rng():
        # The compiled model draws its noise from torch's generator as eager does.
        previous = inductor.fallback_random
        inductor.fallback_random = True
        try:
            torch.manual_seed(3)
            out = compiled(x)
            torch.manual_seed(3)
            ref = model(x)
        finally:
            inductor.fallback_random = previous
    # Compiled kernels fuse and reorder float32 operations: round-off only.
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())
    if mode == "train":
        out.sum().backward()  # the compiled backward runs
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def assert_no_import_circle(graph: dict[str, set[str]]) -> None:
    """Fail with the circle's path if the import graph ``module -> modules it imports`` has one."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            raise AssertionError("import circle: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for other in sorted(graph[module]):
            visit(other, [*path, module])
        done.add(module)

    for module in graph:
        visit(module, [])


def drop_timing(value):
    """A stored result or ``results.json`` without its timings and machine: what may differ between equal runs."""
    if isinstance(value, dict):
        return {k: drop_timing(v) for k, v in value.items() if "seconds" not in k and k != "environment"}
    if isinstance(value, list):
        return [drop_timing(v) for v in value]
    return value


def stored_results(out: Path) -> dict:
    """Every stored cell's result of the run folder ``out``, by key, timings left out."""
    return {
        str(p.relative_to(out / "cells").with_suffix("")): drop_timing(json.loads(p.read_text())["result"])
        for p in sorted((out / "cells").rglob("*.json"))
    }


def torchrun() -> str:
    """The torchrun that comes with this interpreter's torch."""
    path = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert path, "torchrun comes with torch"
    return path
