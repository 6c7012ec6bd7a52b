import json
import os
import zlib

import pytest
import torch
from filelock import FileLock
from helpers import randomize_batchnorm


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """With pytest-xdist installed and no -n given: one worker per core, at most four.

    A test file goes to one worker (``--dist loadfile``), so that a module's fixture (the
    GPU command's dry run, the faulted two-rank job) is made once. ``-n 0`` runs the suite
    in one process; without pytest-xdist (the GPU machine) it runs in one process too.
    """
    if (
        config.pluginmanager.has_plugin("xdist")
        and config.option.numprocesses is None
        and not os.environ.get("PYTEST_XDIST_WORKER")  # a worker runs its tests itself
    ):
        config.option.numprocesses = "auto"
        config.option.maxprocesses = 4
        config.option.dist = "loadfile"


def pytest_configure(config):
    """Under pytest-xdist each worker computes on one intra-op thread, its subprocesses too.

    The workers share the machine's cores; two threads each would wait on one another
    (a busy core costs a two-thread step five times its idle time, docs/benchmarks.md).
    """
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.fixture
def randomize_bn():
    return randomize_batchnorm


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """The benchmark main job with the quick preset (2 training seeds), run once: (folder, results).

    Once for the whole session: pytest-xdist's workers share one run (the first to ask
    computes it under a lock, the others read what it wrote), so that the suite does not
    pay for it once per worker.
    """
    from benchmarks.__main__ import main

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the session's folder, above each worker's own
    out, done = base / "quick-run" / "results", base / "quick-run" / "finished"
    with FileLock(str(base / "quick-run.lock")):
        if not done.exists():
            results = main(["--preset", "quick", "--out", str(out)])
            assert json.loads((out / "results.json").read_text()) == results
            done.touch()
    return out, json.loads((out / "results.json").read_text())


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
