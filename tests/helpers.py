"""Helpers shared by test modules (import as ``from helpers import ...``)."""

import torch
import torch._dynamo
import torch._inductor.config as inductor


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
