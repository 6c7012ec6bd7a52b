"""benchmarks/: each module imports on its own, no module imports the package's entry point,
and the modules' imports form no circle."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_no_import_circle

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "benchmarks"
#: Every module of benchmarks/, a subpackage's as ``report.sensitivity`` (its ``__init__`` as ``report``).
MODULES = sorted(
    ".".join(p.relative_to(PACKAGE).with_suffix("").parts).removesuffix(".__init__")
    for p in PACKAGE.rglob("*.py")
    if p.relative_to(PACKAGE).parts[0] != "gpu"
)


def _source(module: str) -> Path:
    path = PACKAGE.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


# The commands that hand parts to the pipeline, and the report each of them imports: where
# a circle between the parts and the entry points would show (each interpreter costs about
# 4 s of CPU, for torch and the library, so the rest is left to the static check below).
ALONE = ("sensitivity", "theorem1", "figures", "noise_sweep", "report", "__main__")


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
    assert set(ALONE) <= set(MODULES)
    assert {"report.section", "report.stats", "report.sensitivity"} <= _imported("report.sensitivity") | {
        "report.sensitivity"
    }  # the parser resolves a subpackage's relative imports


@pytest.mark.slow
def test_each_module_imports_alone_in_a_fresh_interpreter():
    # One interpreter per module, all at once: the order of imports cannot hide a circle.
    procs = {
        module: subprocess.Popen(
            [sys.executable, "-c", f"import benchmarks.{module}"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for module in ALONE
    }
    failed = {}
    for module, proc in procs.items():
        _, err = proc.communicate(timeout=300)
        if proc.returncode != 0:
            failed[module] = err[-1500:]
    assert not failed, failed


def test_no_module_but_the_entry_point_imports_it():
    importers = {m for m in MODULES if not m.endswith("__main__") and "__main__" in _imported(m)}
    assert not importers
    for module in MODULES:
        if module != "__main__":
            assert "benchmarks.__main__" not in _source(module).read_text(), module


def test_the_imports_form_no_circle():
    graph = {m: _imported(m) for m in MODULES}
    assert_no_import_circle(graph)
    # The pipeline runs whatever parts it is handed; it imports none of them.
    assert graph["pipeline"] <= {"cli", "common", "config", "ranks", "store", "train"}
    # The report reads the store; it imports no part (the measuring side) and no entry point.
    for module in (m for m in MODULES if m == "report" or m.startswith("report.")):
        outside = {m for m in graph[module] if m != "report" and not m.startswith("report.")}
        assert outside <= {"common", "config", "presets", "store", "pipeline", "paper"}, (module, outside)
