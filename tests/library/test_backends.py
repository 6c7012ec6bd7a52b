"""neuralsde._backends: the one file coupled to torchdiffeq's and torchsde's internals."""

import re
import subprocess
import sys
import zipfile

import pytest
import torch
from helpers import ROOT

from neuralsde import _backends, integrate

PRIVATE = re.compile(r"torchdiffeq\._impl|torchsde\._core")


def test_every_private_name_is_still_there():
    missing = _backends.missing_private_names()
    assert missing == [], (
        f"the installed torchdiffeq/torchsde moved {missing}; neuralsde._backends was tested with "
        f"{_backends.TESTED_VERSIONS}: adapt it (its header lists what it uses) or pin a tested release"
    )


def test_private_names_are_touched_in_one_file_only():
    files = [*ROOT.glob("neuralsde/**/*.py"), *ROOT.glob("benchmarks/**/*.py")]
    touching = sorted(str(f.relative_to(ROOT)) for f in files if PRIVATE.search(f.read_text()))
    assert touching == ["neuralsde/_backends.py"]


def test_a_moved_name_gives_a_clear_error_and_leaves_euler_working(monkeypatch):
    # (``import torchdiffeq._impl.odeint as m`` would give the function of that name.)
    monkeypatch.delattr(sys.modules["torchdiffeq._impl.odeint"], "SOLVERS")
    y0 = torch.ones(2, 3)
    with pytest.raises(ImportError, match=r"torchdiffeq\._impl\.odeint\.SOLVERS.*tested with torchdiffeq 0\.2\.5"):
        integrate(lambda t, y: -y, y0, [0.0, 1.0], method="rk4")
    assert _backends.missing_private_names() == ["torchdiffeq._impl.odeint.SOLVERS"]
    # The library's own step needs no private name.
    assert torch.isfinite(integrate(lambda t, y: -y, y0, [0.0, 1.0], method="euler", dt=0.1)).all()


def test_neuralsde_imports_and_steps_when_every_private_name_has_moved():
    # A release that moves the private names must not break `import neuralsde`, nor the
    # methods that do not need them. The names are removed before neuralsde is imported.
    code = """
import importlib, torch, torchdiffeq, torchsde
for module, name in [("torchdiffeq._impl.odeint", "SOLVERS"), ("torchdiffeq._impl.rk_common", "_ButcherTableau"),
                     ("torchdiffeq._impl.rk_common", "_runge_kutta_step"), ("torchsde._core.base_sde", "ForwardSDE"),
                     ("torchsde._core.methods", "select")]:
    delattr(importlib.import_module(module), name)
import neuralsde
from neuralsde import _backends
y = neuralsde.integrate(lambda t, y: -y, torch.ones(2, 3), [0.0, 1.0], diffusion=lambda t, y: 0.1 * y, dt=0.1)
print(len(_backends.missing_private_names()), tuple(y.shape))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["5", "(2,", "2,", "3)"]


def test_pyproject_bounds_torchdiffeq_and_torchsde_on_both_sides():
    text = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python >= 3.11 only)
    for package in ("torchdiffeq", "torchsde"):
        (spec,) = re.findall(rf'^\s*"({package}[^"]*)"', text, re.M)
        assert re.search(r">=\s*[\d.]+", spec) and re.search(r"<\s*[\d.]+", spec), spec


@pytest.mark.slow
def test_the_wheel_holds_neuralsde_only(tmp_path):
    # Takes about 10 s: a real build, as `pip wheel --no-deps .` makes it.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    # The distribution's name (the index refuses "neuralsde": it folds it onto "neural-sde").
    assert wheel.name.startswith("neuralsde_resnets-")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"neuralsde"}
    assert "neuralsde/py.typed" in names
