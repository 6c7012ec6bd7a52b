"""neuralsde/: the modules' imports form no circle, type-only imports included.

A circle between modules, even one that exists only for type hints, means two modules
that cannot be read, tested or moved apart; the layers of the library each import only
the ones below them.
"""

import ast
from pathlib import Path

from helpers import assert_no_import_circle

PACKAGE = Path(__file__).resolve().parents[1] / "neuralsde"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def imported(module: str) -> set[str]:
    """The modules of ``neuralsde`` that ``module`` imports anywhere in its source (under TYPE_CHECKING too)."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                names = [node.module] if node.module else [alias.name for alias in node.names]
            elif node.level == 0 and (node.module or "").startswith("neuralsde."):
                names = [node.module.split(".")[1]]
            else:
                continue
        elif isinstance(node, ast.Import):
            names = [a.name.split(".")[1] for a in node.names if a.name.startswith("neuralsde.")]
        else:
            continue
        found |= {name.split(".")[0] for name in names if name and name.split(".")[0] in MODULES}
    return found - {module}


def test_the_modules_are_found():
    assert {"solvers", "stepping", "_backends", "blocks", "intervals", "stage", "models"} <= set(MODULES)
    assert "intervals" in imported("stage") and "blocks" in imported("intervals")  # the parser sees imports


def test_the_library_has_no_import_circle():
    assert_no_import_circle({m: imported(m) for m in MODULES})
