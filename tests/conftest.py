import pytest
import torch
from torch import nn


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


@pytest.fixture
def randomize_bn():
    return randomize_batchnorm


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """The benchmark main job with the quick preset (2 training seeds), run once: (folder, results)."""
    from benchmarks.__main__ import main

    out = tmp_path_factory.mktemp("bench") / "results"
    results = main(["--preset", "quick", "--out", str(out)])
    return out, results
