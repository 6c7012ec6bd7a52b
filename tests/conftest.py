import zlib

import pytest
import torch
from helpers import randomize_batchnorm


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


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Nothing is downloaded at test time: torch.hub's download fails the test that tries."""

    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}; use the local_weights fixture")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


@pytest.fixture
def local_weights(monkeypatch):
    """torchvision's weights enums hand out local state dicts instead of downloading.

    Each (architecture, weights name) gets its own random weights with non-trivial
    BatchNorm statistics, the same at every call, built without touching torch's global
    generator. Returns the list of ``(arch, name, kwargs)`` of every request.
    """
    from torchvision.models import WeightsEnum, get_model, get_model_weights

    from neuralsde.models import TORCHVISION_ARCHS

    arch_of = {get_model_weights(arch): arch for arch in TORCHVISION_ARCHS}
    requests = []
    made: dict[tuple[str, str], dict] = {}

    def get_state_dict(self, *args, **kwargs):
        arch = arch_of[type(self)]
        requests.append((arch, self.name, kwargs))
        if (arch, self.name) not in made:
            seed = zlib.crc32(f"{arch}.{self.name}".encode())
            with torch.random.fork_rng():
                torch.manual_seed(seed)
                made[arch, self.name] = randomize_batchnorm(get_model(arch), seed).state_dict()
        return dict(made[arch, self.name])  # load_state_dict copies the values

    monkeypatch.setattr(WeightsEnum, "get_state_dict", get_state_dict)
    return requests
