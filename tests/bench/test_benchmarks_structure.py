"""benchmarks/: each module imports on its own, no module imports the package's entry point,
and the modules' imports form no circle."""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT, assert_no_import_circle

PACKAGE = ROOT / "benchmarks"
#: Every module of benchmarks/, a subpackage's as ``report.sensitivity`` (its ``__init__`` as ``report``).
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__") for p in PACKAGE.rglob("*.py")
)


def _source(module: str) -> Path:
    path = PACKAGE.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


# Imports each module named on its command line into a fresh copy of one interpreter that
# has loaded the third-party packages (torch, Captum, ...) but no module of neuralsde or
# benchmarks: a fork per module, so that every module starts from nothing of ours, for a
# fraction of a second instead of the seconds an interpreter takes to import torch.
ALONE = """
import importlib, json, os, sys, traceback
import numpy, scipy.stats, torch, torchvision, captum.attr, torchdiffeq, torchsde
assert not [m for m in sys.modules if m.split(".")[0] in ("neuralsde", "benchmarks")]
failed, running = {}, {}

def finish():
    pid, status = os.waitpid(-1, 0)
    module, read = running.pop(pid)
    with os.fdopen(read) as fh:
        said = fh.read()
    if status != 0:
        failed[module] = said or "the import ended the process"

for module in sys.argv[1:]:
    if len(running) == 2:  # two at a time, one per core
        finish()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            importlib.import_module("benchmarks" if module == "__init__" else f"benchmarks.{module}")
        except BaseException:
            os.write(write, traceback.format_exc()[-1500:].encode())
            os._exit(1)
        os._exit(0)
    os.close(write)
    running[pid] = (module, read)
while running:
    finish()
print(json.dumps(failed))
"""


def _imported(module: str) -> set[str]:
    """The modules of ``benchmarks`` that ``module`` imports, anywhere in its source."""
    found = set()
    path = _source(module)
    # The package a relative import starts from: the module's own for a package's __init__.
    here = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                base = ".".join(["benchmarks", *anchor, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.startswith("benchmarks."):
                inner = name.removeprefix("benchmarks.")
                if inner in MODULES:
                    found.add(inner)
    return found - {module}


def test_the_modules_are_found():
    assert {"__main__", "pipeline", "report", "report.section", "report.sensitivity", "report.stats"} <= set(MODULES)
    assert {"gpu", "gpu.record", "gpu.sections", "gpu.speed"} <= set(MODULES)  # the GPU command's modules too
    assert {"report.section", "report.stats", "report.sensitivity"} <= _imported("report.sensitivity") | {
        "report.sensitivity"
    }  # the parser resolves a subpackage's relative imports


def test_each_module_imports_alone_in_a_fresh_interpreter():
    # A circle between modules, or a module that works only after another was imported,
    # shows as an ImportError or NameError in the one whose turn it is.
    proc = subprocess.run(
        [sys.executable, "-c", ALONE, *MODULES], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {}


def test_no_module_but_the_entry_point_imports_it():
    importers = {m for m in MODULES if not m.endswith("__main__") and "__main__" in _imported(m)}
    assert not importers
    for module in MODULES:
        if module != "__main__":
            assert "benchmarks.__main__" not in _source(module).read_text(), module


def test_the_imports_form_no_circle():
    graph = {m: _imported(m) for m in MODULES}
    assert_no_import_circle(graph)
    # The pipeline runs whatever parts it is handed, in the registry's order, and the report last; it imports no part.
    allowed = {
        "cli",
        "common",
        "config",
        "context",
        "data",
        "networks",
        "ranks",
        "registry",
        "report",
        "store",
        "train",
    }
    assert graph["pipeline"] <= allowed
    # The registry names the parts and imports none of them (the configuration reads it).
    assert graph["registry"] == set()
    # The report reads the store; it imports no part (the measuring side) and no entry point.
    for module in (m for m in MODULES if m == "report" or m.startswith("report.")):
        outside = {m for m in graph[module] if m != "report" and not m.startswith("report.")}
        assert outside <= {"common", "config", "networks", "presets", "store", "paper", "registry"}, (module, outside)


def _parts() -> set[str]:
    """The modules that define a part (a module-level ``NAME = Part(...)``), the report's package aside."""
    found = set()
    for module in MODULES:
        if module == "report" or module.startswith("report."):
            continue
        for node in ast.parse(_source(module).read_text()).body:
            value = node.value if isinstance(node, ast.Assign) else None
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "Part":
                found.add(module)
    return found


def test_no_part_imports_another():
    """The parts are siblings: what several share (the explainer, the images, the cells) is in a module below."""
    parts = _parts()
    assert parts == {"sensitivity", "theorem1", "mechanism", "interventions", "figures"}
    for part in parts:
        assert not _imported(part) & parts, (part, _imported(part) & parts)
    # Below them: what they share, imported by several.
    assert "cells" in _imported("interventions") and "cells" in _imported("mechanism")


def test_a_claim_is_two_registrations():
    """One line per part in benchmarks.registry (the parts' order, --parts, the store's kinds, the main job)."""
    from benchmarks import registry
    from benchmarks.config import Config
    from benchmarks.report import SECTIONS
    from benchmarks.store import KINDS

    parts = registry.load()
    assert [p.name for p in parts] == list(registry.NAMES) == Config().parts
    for part in parts:  # each part declares the options of exactly the kinds its line gives
        assert tuple(part.options) == registry.PARTS[part.name][1] and all(part.options.values())
    assert set(registry.KINDS) <= KINDS
    # The main job and the noise sweep take their parts from the registry; no entry point lists them by hand.
    for entry in ("__main__", "noise_sweep"):
        assert "registry" in _imported(entry) and not _imported(entry) & _parts()
    assert [p.name for p in registry.load(["theorem1", "sensitivity"])] == ["sensitivity", "theorem1"]
    with pytest.raises(ValueError, match="unknown parts"):
        registry.load(["report"])  # the report is no part: a job writes it last
    assert len(SECTIONS) == len({s.name for s in SECTIONS})
