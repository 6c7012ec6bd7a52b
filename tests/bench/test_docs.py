"""The documentation: strict build, runnable snippets, theory pages generated from a run, the built site."""

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import ROOT

from benchmarks.docs import PAGES, figures_used, render_pages

DOCS = ROOT / "docs"
SNIPPET_PAGES = [
    "quickstart.md",
    "concepts/dynamics.md",
    "concepts/solvers.md",
    "concepts/diffusions.md",
    "concepts/attribution.md",
    pytest.param("recipes/pretrained.md", marks=pytest.mark.slow),  # fine-tunes ResNet-50 twins
]


def check_recipe(namespace: dict) -> None:
    """The pretrained recipe does what it says: identical starts and runs but for the noise."""
    assert namespace["same_start"] is True
    assert namespace["same_training"] is True  # sigma = 0: the SDE twin trains as the ODE twin
    assert namespace["history"]["sde"] != namespace["history"]["ode"]  # the noise changes the run
    assert namespace["cams"]["sde"].shape == namespace["cams"]["ode"].shape == (2, 1, 2, 2)


#: What a page's snippets must leave behind, checked after they ran.
PAGE_CHECKS = {"recipes/pretrained.md": check_recipe}


def python_blocks(page: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", page.read_text(), flags=re.S)


@pytest.mark.parametrize("page", SNIPPET_PAGES)
def test_every_python_snippet_runs(page, tmp_path, monkeypatch, local_weights):
    """Every snippet runs, with pretrained weights from local files (nothing downloads)."""
    blocks = python_blocks(DOCS / page)
    assert blocks, f"{page} has no Python snippet"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:  # in order, sharing names, as a reader would run them
        exec(compile(block, f"{page}", "exec"), namespace)
    PAGE_CHECKS.get(page, lambda namespace: None)(namespace)


def test_quick_start_snippet_checks_what_it_says():
    namespace: dict = {}
    for block in python_blocks(DOCS / "quickstart.md"):
        exec(compile(block, "quickstart.md", "exec"), namespace)
    assert namespace["same"] is True  # one Euler step per block reproduces torchvision
    assert namespace["delta"].abs().max() < 1e-4  # DeepLIFT's completeness through the SDE
    assert namespace["ys"].shape == (3, 8, 4, 5, 5)


def _beside_runs(data: Path) -> list:
    """The runs the pages show beside the digits: each folder of docs/theory/data with a results.json."""
    from benchmarks.report.beside import Beside

    return [
        Beside(
            folder.name,
            json.loads((folder / "results.json").read_text()),
            json.loads((folder / "runs.json").read_text()),
        )
        for folder in sorted(p for p in data.iterdir() if (p / "results.json").exists())
    ]


def test_the_pages_carry_cifar_runs_of_the_presets():
    """CIFAR-10 beside the digits: a primary row per method with a verdict and its interval, over at least 5 seeds."""
    from benchmarks.config import Config
    from benchmarks.presets import PRESETS

    others = {o.label: o for o in _beside_runs(DOCS / "theory" / "data")}
    assert set(others) == {"cifar10-resnet20", "cifar10-resnet56"}
    for label, preset in (("cifar10-resnet20", "cifar10"), ("cifar10-resnet56", "cifar10-resnet56")):
        results = others[label].results
        assert results["preset"] == preset and len(results["seeds"]) >= 5
        assert Config(**results["config"]).to_dict()["arch"] == PRESETS[preset]["arch"]
        assert others[label].runs[-1]["status"] == "finished"
        primary = [r for r in results["verdicts"] if r["claim"] == "sensitivity falls as σ grows (primary)"]
        assert {r["setting"].split(",")[0] for r in primary} == {
            "Saliency", "Integrated Gradients", "DeepLIFT", "DeepLIFT-SHAP"
        }  # fmt: skip
        assert all(r["verdict"] in ("holds", "fails", "depends") and r["seeds"] == 5 for r in primary)
    sensitivity = (DOCS / "theory" / "sensitivity.md").read_text()
    for text in ("### On CIFAR-10, beside the digits", "## On CIFAR-10: where the runs come from", "JPEG"):
        assert text in sensitivity
    for page in ("theorem1", "explains"):
        assert "CIFAR-10, ResNet-20" in (DOCS / "theory" / f"{page}.md").read_text()


def test_theory_pages_are_generated_from_the_committed_run():
    data = DOCS / "theory" / "data"
    results = json.loads((data / "results.json").read_text())
    runs = json.loads((data / "runs.json").read_text())
    compare = json.loads((data / "compare.json").read_text()) if (data / "compare.json").exists() else None
    others = _beside_runs(data)
    pages = render_pages(results, runs, compare, others)
    for page in PAGES:
        committed = (DOCS / "theory" / f"{page}.md").read_text()
        assert committed == pages[page], f"docs/theory/{page}.md differs from what python -m benchmarks.docs makes"
        assert "Where these numbers come from" in committed  # command, configuration, machine
        assert "| " in committed and "](img/" in committed  # a measured table and a plot
    for name in figures_used(pages):
        assert (DOCS / "theory" / "img" / name).stat().st_size > 1000
    # The committed pages come from a real run of the full protocol (--preset full), and the
    # default job keeps at least five training seeds.
    from benchmarks.config import Config
    from benchmarks.presets import PRESETS

    # (Options added since the run are at their defaults in it.)
    assert Config(**results["config"]).to_dict() == Config(**PRESETS["full"]).to_dict() and results["preset"] == "full"
    assert len(Config().seeds) >= 5
    assert runs[-1]["status"] == "finished"
    assert all(r["seeds"] in (None, len(results["seeds"])) for r in results["verdicts"] if r["unit"] == "relative")


def build_site(dest: Path, *options: str) -> Path:
    """``mkdocs build`` into DEST; fails the test with mkdocs' messages if the build fails."""
    mkdocs = Path(sys.executable).with_name("mkdocs")
    command = [str(mkdocs)] if mkdocs.exists() else [sys.executable, "-m", "mkdocs"]
    proc = subprocess.run(
        [*command, "build", *options, "-d", str(dest)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dest


def test_mkdocs_builds_in_strict_mode(tmp_path):
    build_site(tmp_path / "site", "--strict")
    for page in ("index.html", "api/index.html", "theory/theorem1/index.html", "quickstart/index.html"):
        assert (tmp_path / "site" / page).exists()


# The built site: typeset formulas, nothing loaded from other hosts, no raw roles.

# Formulas, had they been left in code spans.
FORMULA_MARKS = ("e^{", "‖", "Σ", "∑", "∫", "σ", "Δ", "_k", "\\(", "\\frac")
ABSOLUTE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:)?//", re.I)  # http://, https://, //host
NAVIGATION = {"canonical", "alternate", "next", "prev"}  # <link> relations that load nothing


class _Tags(HTMLParser):
    """The resources a page loads and the text of its code spans."""

    def __init__(self):
        super().__init__()
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.links: list[str] = []
        self.styles: list[str] = []
        self.code: list[str] = []
        self._code_depth = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.scripts.append(attrs["src"])
        rel = set((attrs.get("rel") or "").split())
        if tag == "link" and attrs.get("href") and not (rel and rel <= NAVIGATION):
            self.links.append(attrs["href"])
            if "stylesheet" in rel:
                self.stylesheets.append(attrs["href"])
        if attrs.get("style"):
            self.styles.append(attrs["style"])
        if tag == "code":
            self._code_depth += 1
            self.code.append("")

    def handle_endtag(self, tag):
        if tag == "code" and self._code_depth:
            self._code_depth -= 1

    def handle_data(self, data):
        if self._code_depth:
            self.code[-1] += data


def _parse(page: Path) -> _Tags:
    tags = _Tags()
    tags.feed(page.read_text(encoding="utf-8"))
    return tags


def _css_urls(text: str) -> list[str]:
    urls = (u.strip().strip("'\"") for u in re.findall(r"url\(([^)]*)\)", text))
    return [u for u in urls if not u.startswith("data:")]


def _target(site: Path, base: Path, url: str) -> Path:
    """The file a same-host URL names (404.html uses URLs from the site root)."""
    path = url.split("#")[0].split("?")[0]
    return site / path.lstrip("/") if path.startswith("/") else base / path


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    # Not --strict: test_mkdocs_builds_in_strict_mode covers that; these checks report on their own.
    return build_site(tmp_path_factory.mktemp("docs") / "site")


def _pages(site: Path) -> list[Path]:
    return sorted(site.rglob("*.html"))


def test_theorem1_formulas_are_math_not_code(site):
    page = site / "theory" / "theorem1" / "index.html"
    html = page.read_text(encoding="utf-8")
    assert html.count('class="arithmatex"') >= 20
    assert '<div class="arithmatex">' in html  # the theorem's inequality, displayed


def test_pages_keep_formulas_out_of_code_spans(site):
    assert "theory/theorem1/index.html" in {p.relative_to(site).as_posix() for p in _pages(site)}
    for page in _pages(site):
        if page.parent == site / "api":
            continue  # the API reference shows docstrings
        for code in _parse(page).code:
            assert not any(mark in code for mark in FORMULA_MARKS), f"{page.relative_to(site)}: {code!r}"


def test_katex_renders_arithmatex_elements_from_local_files(site):
    tags = _parse(site / "theory" / "theorem1" / "index.html")
    assert any(src.endswith("assets/katex/katex.min.js") for src in tags.scripts)
    assert any(src.endswith("assets/katex/contrib/auto-render.min.js") for src in tags.scripts)
    assert any(src.endswith("assets/javascripts/katex-init.js") for src in tags.scripts)
    assert any(href.endswith("assets/katex/katex.min.css") for href in tags.stylesheets)
    init = (site / "assets" / "javascripts" / "katex-init.js").read_text()
    assert "document$.subscribe" in init and ".arithmatex" in init and "renderMathInElement" in init


def test_nothing_is_loaded_from_another_host(site):
    pages = _pages(site)
    assert len(pages) >= 10
    for page in pages:
        tags = _parse(page)
        loaded = tags.scripts + tags.links + [u for style in tags.styles for u in _css_urls(style)]
        for url in loaded:
            assert not ABSOLUTE.match(url), f"{page.relative_to(site)} loads {url}"
        for url in tags.scripts + tags.stylesheets:
            assert _target(site, page.parent, url).is_file(), f"{page.relative_to(site)}: {url} is missing"
    stylesheets = sorted(site.rglob("*.css"))
    assert stylesheets
    for css in stylesheets:
        for url in _css_urls(css.read_text(encoding="utf-8")):
            assert not ABSOLUTE.match(url), f"{css.relative_to(site)} loads {url}"
            assert _target(site, css.parent, url).is_file(), f"{css.relative_to(site)}: {url} is missing"


def test_no_unrendered_sphinx_roles(site):
    for page in [*_pages(site), *site.rglob("*.json")]:
        text = page.read_text(encoding="utf-8")
        for role in (":meth:", ":func:", ":class:"):
            assert role not in text, f"{page.relative_to(site)} shows {role}"
