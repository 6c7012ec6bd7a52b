"""The suite's own set-up: pytest-xdist workers by default, and never workers of workers."""

from types import SimpleNamespace

import conftest
import pytest


def _config(numprocesses=None, xdist=True):
    option = SimpleNamespace(numprocesses=numprocesses, maxprocesses=None, dist="no")
    return SimpleNamespace(option=option, pluginmanager=SimpleNamespace(has_plugin=lambda name: xdist))


def test_without_n_the_suite_takes_a_worker_per_core_and_a_file_per_worker(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    config = _config()
    conftest.pytest_cmdline_main(config)
    assert vars(config.option) == {"numprocesses": "auto", "maxprocesses": 4, "dist": "loadfile"}


@pytest.mark.parametrize(
    "numprocesses, xdist, worker",
    [(0, True, None), (3, True, None), (None, False, None), (None, True, "gw0")],
    ids=["n0", "n3", "no-xdist", "in-a-worker"],
)
def test_an_explicit_n_no_xdist_or_a_worker_is_left_as_it_is(monkeypatch, numprocesses, xdist, worker):
    # A worker's options come with -n reset; setting it again there would start workers of workers.
    if worker is None:
        monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    else:
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    config = _config(numprocesses, xdist)
    conftest.pytest_cmdline_main(config)
    assert vars(config.option) == {"numprocesses": numprocesses, "maxprocesses": None, "dist": "no"}
