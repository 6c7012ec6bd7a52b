"""The documentation: strict build, runnable snippets, theory pages generated from a run."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.docs import PAGES, figures_used, render_pages

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SNIPPET_PAGES = [
    "quickstart.md",
    "concepts/dynamics.md",
    "concepts/solvers.md",
    "concepts/diffusions.md",
    "concepts/attribution.md",
]


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("page", SNIPPET_PAGES)
def test_every_python_snippet_runs(page, tmp_path, monkeypatch):
    blocks = python_blocks(DOCS / page)
    assert blocks, f"{page} has no Python snippet"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:  # in order, sharing names, as a reader would run them
        exec(compile(block, f"{page}", "exec"), namespace)


def test_quick_start_snippet_checks_what_it_says():
    namespace: dict = {}
    for block in python_blocks(DOCS / "quickstart.md"):
        exec(compile(block, "quickstart.md", "exec"), namespace)
    assert namespace["same"] is True  # one Euler step per block reproduces torchvision
    assert namespace["delta"].abs().max() < 1e-4  # DeepLIFT's completeness through the SDE
    assert namespace["ys"].shape == (3, 8, 4, 5, 5)


def test_theory_pages_are_generated_from_the_committed_run():
    data = DOCS / "theory" / "data"
    results = json.loads((data / "results.json").read_text())
    runs = json.loads((data / "runs.json").read_text())
    pages = render_pages(results, runs)
    for page in PAGES:
        committed = (DOCS / "theory" / f"{page}.md").read_text()
        assert committed == pages[page], f"docs/theory/{page}.md differs from what python -m benchmarks.docs makes"
        assert "Where these numbers come from" in committed  # command, configuration, machine
        assert "| " in committed and "](img/" in committed  # a measured table and a plot
    for name in figures_used(pages):
        assert (DOCS / "theory" / "img" / name).stat().st_size > 1000
    # The committed pages come from a real run of the main job (its default configuration).
    assert results["config"]["n_images"] >= 50 and results["config"]["repetitions"] >= 3
    assert runs[-1]["status"] == "finished"


def test_mkdocs_builds_in_strict_mode(tmp_path):
    mkdocs = Path(sys.executable).with_name("mkdocs")
    command = [str(mkdocs)] if mkdocs.exists() else [sys.executable, "-m", "mkdocs"]
    proc = subprocess.run(
        [*command, "build", "--strict", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for page in ("index.html", "api/index.html", "theory/theorem1/index.html", "quickstart/index.html"):
        assert (tmp_path / "site" / page).exists()
