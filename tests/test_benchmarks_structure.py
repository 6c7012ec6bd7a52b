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
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py"))

# The commands that hand parts to the pipeline, and the report each of them imports: where
# a circle between the parts and the entry points would show (each interpreter costs about
# 4 s of CPU, for torch and the library, so the rest is left to the static check below).
ALONE = ("sensitivity", "theorem1", "figures", "noise_sweep", "report", "__main__")


def _imported(module: str) -> set[str]:
    """The modules of ``benchmarks`` that ``module`` imports, anywhere in its source."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level == 1:
                base = f"benchmarks.{base}" if base else "benchmarks"
            elif node.level > 1:
                continue
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if len(parts) == 2 and parts[0] == "benchmarks" and parts[1] in MODULES:
                found.add(parts[1])
    return found - {module}


def test_the_modules_are_found():
    assert {"__main__", "pipeline", "report", "results", "tables", "plots"} <= set(MODULES)
    assert set(ALONE) <= set(MODULES)


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
    importers = {m for m in MODULES if m != "__main__" and "__main__" in _imported(m)}
    assert not importers
    for module in MODULES:
        if module != "__main__":
            assert "benchmarks.__main__" not in (PACKAGE / f"{module}.py").read_text(), module


def test_the_imports_form_no_circle():
    graph = {m: _imported(m) for m in MODULES}
    assert_no_import_circle(graph)
    # The pipeline runs whatever parts it is handed; it imports none of them.
    assert graph["pipeline"] <= {"common", "config", "store", "train"}
