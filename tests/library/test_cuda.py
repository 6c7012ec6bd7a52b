"""The library on a CUDA GPU (marker ``cuda``; skipped on a machine without one).

    python -m pytest -m cuda tests/library/test_cuda.py

``python -m benchmarks.gpu`` runs these in its correctness section. Unless a test says
otherwise it switches TF32 off, so that float32 comparisons are about the library's
arithmetic and not about TF32's 10-bit mantissa.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import warnings

import pytest
import torch
import torchvision
from captum.attr import DeepLift, LayerGradCam
from helpers import ROOT, compiled_equals_eager, randomize_batchnorm, tiny_model
from torch import nn

from neuralsde import ODEResNet, SDEResNet, attribute

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning"),
]
DEVICE = "cuda"


@pytest.fixture(autouse=True)
def no_tf32():
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


def tv_model(arch: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return randomize_batchnorm(torchvision.models.get_model(arch, num_classes=10), seed).to(DEVICE).eval()


def small(cls, **kwargs) -> nn.Module:
    return tiny_model(cls, 0, in_channels=3, num_classes=10, widths=(8, 16), trained_bn=False, **kwargs).to(DEVICE)


def images(n: int, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed)).to(DEVICE)


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_from_torchvision_is_exact_on_cuda(arch):
    """One Euler step per block is torchvision's network: equal logits on the GPU in fp32.

    The twin launches the same kernels in the same order; 1e-5 of the logit scale allows
    only a different summation order inside one kernel (float32 round-off, ~1e-7
    relative per operation, over ~50 layers), not a wrong block.
    """
    tv = tv_model(arch)
    x = images(4, 64)
    with torch.no_grad():
        ref = tv(x)
        out = ODEResNet.from_torchvision(tv).eval()(x)
    assert out.device.type == "cuda"
    assert (out - ref).abs().max().item() <= 1e-5 * ref.abs().max().item()


def _run(model, x, seed):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    out = model(x)
    out.square().sum().backward()
    return out.detach(), [p.grad.detach().clone() for p in model.parameters()]


def test_sde_forward_and_backward_are_reproducible_from_a_seed_on_cuda():
    """The Brownian increments come from the GPU's generator, which torch.manual_seed seeds.

    Forward: bit for bit (same kernels, same noise). Gradients: 1e-5 of their scale,
    since some CUDA backward kernels accumulate with atomics in a varying order. Another
    seed moves the output by far more (the noise is O(sigma) = O(0.5) per step).
    """
    model = small(SDEResNet, sigma=0.5).train()
    x = images(4)
    out1, grads1 = _run(model, x, 5)
    out2, grads2 = _run(model, x, 5)
    out3, _ = _run(model, x, 6)
    assert torch.equal(out1, out2)
    for a, b in zip(grads1, grads2):
        assert (a - b).abs().max().item() <= 1e-5 * max(a.abs().max().item(), 1e-12)
    assert (out1 - out3).abs().max().item() > 1e-2 * out1.abs().max().item()


@pytest.mark.parametrize("method", ["smoothgrad", "gradient_shap"])
def test_attribute_with_a_seed_is_reproducible_on_cuda(method):
    model = small(ODEResNet).eval()
    x = images(2)
    kwargs = dict(target=3, nt_samples=4) if method == "smoothgrad" else dict(target=3, baselines=images(3, seed=9))
    a = attribute(model, x, method, seed=11, **kwargs).attribution
    b = attribute(model, x, method, seed=11, **kwargs).attribution
    c = attribute(model, x, method, seed=12, **kwargs).attribution
    assert a.device.type == "cuda"
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * a.abs().max().item())
    assert (a - c).abs().max().item() > 1e-3 * a.abs().max().item()


@pytest.mark.parametrize(
    "cls, settings",
    [(ODEResNet, dict(method="euler")), (ODEResNet, dict(method="rk4", steps_per_block=2)),
     (SDEResNet, dict(method="euler", sigma=0.5))],
    ids=["ode-euler", "ode-rk4", "sde-euler"],
)  # fmt: skip
def test_deeplift_completeness_through_the_solver_on_cuda(cls, settings):
    """sum(attributions) = F(x) - F(0) through the solver, up to float32 round-off (1e-4 of the gap)."""
    model = small(cls, **settings).eval()
    randomize_batchnorm(model, 3)
    x = images(3)
    baseline = torch.zeros_like(x)
    with torch.no_grad():
        gap = model(x)[:, 2] - model(baseline)[:, 2]
    _, delta = DeepLift(model).attribute(x, baselines=baseline, target=2, return_convergence_delta=True)
    assert (delta.abs() <= 1e-4 * gap.abs().clamp_min(1e-3)).all(), (delta, gap)


def test_layer_gradcam_on_the_last_block_on_cuda():
    tv = tv_model("resnet18")
    twin = ODEResNet.from_torchvision(tv).eval()
    x = images(2, 64)
    cam = LayerGradCam(twin, twin.layer4[-1]).attribute(x, target=7)
    ref = LayerGradCam(tv, tv.layer4[-1]).attribute(x, target=7)
    assert cam.shape == ref.shape == (2, 1, 2, 2)
    torch.testing.assert_close(cam, ref, rtol=1e-4, atol=1e-5 * ref.abs().max().item())


def test_half_precision_and_autocast_on_cuda():
    """fp16 weights, and fp16 / bf16 autocast: torchvision's accuracy, no false SolverError.

    Bounds as on the CPU (tests/library/test_models.py): 5e-3 (fp16) and 3e-2 (bf16) of the logit
    scale against fp32, and the twin within 1e-3 of torchvision at the same precision.
    """
    tv = tv_model("resnet18")
    x = images(8, 64)
    with torch.no_grad():
        ref = tv(x)
        scale = ref.abs().max().item()
        half = copy.deepcopy(tv).half()
        out = ODEResNet.from_torchvision(half).eval()(x.half()).float()
        assert (out - ref).abs().max().item() <= 5e-3 * scale
        for dtype, bound in ((torch.float16, 5e-3), (torch.bfloat16, 3e-2)):
            with torch.autocast("cuda", dtype=dtype):
                tv_low = tv(x).float()
                for cls in (ODEResNet, SDEResNet):
                    out = cls.from_torchvision(tv).eval()(x).float()
                    assert (out - ref).abs().max().item() <= bound * scale, (dtype, cls)
                    assert (out - tv_low).abs().max().item() <= 1e-3 * scale, (dtype, cls)
                noisy = SDEResNet.from_torchvision(tv, sigma=0.5, steps_per_block=2).train()(x)
            assert torch.isfinite(noisy).all()


def test_torch_compile_with_fullgraph_on_cuda():
    """inductor on the GPU: the ODE in eval mode and the SDE in train mode (noise, backward) equal eager.

    Compiled kernels fuse and reorder float32 operations: 1e-4 of the output scale.
    """
    x = images(4)
    for cls, mode in ((ODEResNet, "eval"), (SDEResNet, "train")):
        compiled_equals_eager(small(cls), x, mode, "inductor")


@pytest.mark.parametrize(
    "cls, settings",
    [(ODEResNet, dict(method="euler")), (ODEResNet, dict(method="rk4", steps_per_block=2)),
     (ODEResNet, dict(method="midpoint", steps_per_block=2)), (SDEResNet, dict(method="euler", sigma=0.5)),
     (SDEResNet, dict(method="srk", sigma=0.5, diffusion="multiplicative")),
     (SDEResNet, dict(method="milstein", sigma=0.5, diffusion="multiplicative"))],
    ids=["ode-euler", "ode-rk4", "ode-midpoint", "sde-euler", "sde-srk", "sde-milstein"],
)  # fmt: skip
def test_no_host_synchronisation_inside_a_solve_on_cuda(cls, settings):
    """A stage's solve, forward and backward, with CUDA's sync debug mode set to raise.

    The one read of a forward pass, whether every block stayed finite, happens after the
    solve (``check_finite``), once per model call; here it is left to the caller.
    """
    model = small(cls, **settings).train()
    stage = model.layer1
    x = torch.randn(2, 8, 8, 8, device=DEVICE, requires_grad=True)
    stage.flow(x, check_finite=False).sum().backward()  # warm-up: lazy initialisations may synchronise
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y = stage.flow(x, check_finite=False)
        y.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    stage.check_finite()


def test_one_training_step_with_torchrun_on_nccl(tmp_path):
    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    assert torchrun, "torchrun comes with torch"
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=1", "-m", "benchmarks.train", "--model", "ode",
         "--preset", "quick", "--seeds", "0", "--epochs", "1", "--device", DEVICE, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ode (seed 0): test accuracy" in proc.stdout
    cell = json.loads((out / "cells" / "train" / "s0" / "ode.json").read_text())
    assert cell["device"].startswith("cuda") and len(cell["result"]["history"]) == 1


def test_the_quick_preset_runs_on_cuda(tmp_path):
    out = tmp_path / "quick"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--preset", "quick", "--device", DEVICE, "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["config"]["device"] == DEVICE
    assert results["theorem1"]["all_hold"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert (out / "tables.md").read_text().startswith("#")
