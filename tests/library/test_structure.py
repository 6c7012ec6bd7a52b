"""neuralsde/: the modules' imports form no circle, type-only imports included.

A circle between modules, even one that exists only for type hints, means two modules
that cannot be read, tested or moved apart; the layers of the library each import only
the ones below them.
"""

import ast

from helpers import ROOT, assert_no_import_circle

PACKAGE = ROOT / "neuralsde"
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


def test_no_module_reaches_into_a_stage_private_state():
    """Other modules use the stage's public doors: ``continuous_blocks``, ``set_noise_mode``, ``has_hooks``."""
    private = ("._split(", "._continuous_blocks(", "stage.noise =", "stage.path_seed =", "._forward_hooks")
    for module in MODULES:
        if module in ("stage", "blocks"):
            continue
        text = (PACKAGE / f"{module}.py").read_text()
        assert not [p for p in private if p in text], module


def _private_names(tree: ast.AST) -> set[str]:
    """The private attributes a module defines: ``self._x = ...`` and a class's ``_x`` methods and fields."""
    names = set()
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            names.add(node.attr)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    names.add(item.name)
                elif isinstance(item, (ast.Assign, ast.AnnAssign)):
                    targets = item.targets if isinstance(item, ast.Assign) else [item.target]
                    names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def reaches(module: str, trees: dict[str, ast.AST]) -> list[str]:
    """``obj._x`` in ``module`` where ``_x`` is private to another module of the library."""
    own = _private_names(trees[module])
    others = {n for m, t in trees.items() if m != module for n in _private_names(t)} - own
    found = []
    for node in ast.walk(trees[module]):
        if isinstance(node, ast.Attribute) and node.attr in others:
            if not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
                found.append(f"{module}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_module_reaches_a_private_attribute_of_another():
    trees = {m: ast.parse((PACKAGE / f"{m}.py").read_text()) for m in MODULES}
    assert [line for m in MODULES for line in reaches(m, trees)] == []
    # The scan sees such a reach: the one models.py made before the stage had stop_recording.
    trees["models"] = ast.parse("def f(stage):\n    stage._recording = None\n")
    assert reaches("models", trees) == ["models:2: stage._recording"]


def test_the_stage_doors_do_what_they_say():
    import torch
    from torch import nn

    from neuralsde import ODEResNet
    from neuralsde.blocks import has_hooks

    model = ODEResNet.small(in_channels=1, widths=(4, 8), blocks=2, num_classes=3)
    stage = model.stages[1]  # a stride-2 transition block, then one continuous block
    assert stage.transition_blocks + stage.continuous_blocks == list(stage.blocks)
    assert len(stage.continuous_blocks) == stage.num_continuous == 1
    stage.set_noise_mode(True, 7)
    assert (stage.noise, stage.path_seed) == (True, 7)
    # Every kind of hook, registered deep inside the model, is found by the one scan.
    for register in ("register_forward_hook", "register_forward_pre_hook", "register_full_backward_hook"):
        assert not has_hooks(model)
        handle = getattr(stage.continuous_blocks[0].conv1, register)(lambda *args: None)
        assert has_hooks(model) and has_hooks(stage) and not has_hooks(model.stages[0])
        handle.remove()
    handle = stage.continuous_blocks[0].register_full_backward_pre_hook(lambda *args: None)
    assert has_hooks(model)
    handle.remove()
    assert not has_hooks(nn.Sequential(nn.ReLU())) and torch.is_tensor(model(torch.rand(2, 1, 8, 8)))


def test_no_source_or_test_file_is_over_450_lines():
    """A file one can read in a sitting: the library, the benchmarks and the tests alike."""
    root = PACKAGE.parent
    long = {
        str(p.relative_to(root)): n
        for folder in ("neuralsde", "benchmarks", "tests")
        for p in (root / folder).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 450
    }
    assert long == {}
