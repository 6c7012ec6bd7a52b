"""benchmarks/report/: the statistics behind every verdict, the table writer, and the registry of sections."""

import math
import re
from pathlib import Path

import pytest
from scipy import stats

from benchmarks.docs import PAGES, TEMPLATES
from benchmarks.report import SECTIONS
from benchmarks.report.formatting import markdown_table
from benchmarks.report.stats import mean_ci, paired_test

PLACEHOLDER = re.compile(r"\{\{([a-z_:0-9]+)\}\}")


def test_mean_ci_and_paired_test_agree_with_scipy():
    values = [1.0, 2.0, 4.0, 7.0]
    ci = mean_ci(values)
    half = stats.t.ppf(0.975, 3) * stats.tstd(values) / 2
    assert ci["mean"] == 3.5 and ci["low"] == pytest.approx(3.5 - half) and ci["high"] == pytest.approx(3.5 + half)
    a, b = [1.0, 2.0, 3.0, 4.0, 5.5], [0.5, 1.0, 2.5, 3.0, 4.0]
    out = paired_test(a, b)
    assert out["mean_diff"] == pytest.approx(0.9)
    assert out["t_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert out["wilcoxon_p"] == pytest.approx(stats.wilcoxon([x - y for x, y in zip(a, b)]).pvalue)
    assert math.isnan(mean_ci([])["mean"])
    with pytest.raises(ValueError, match="same length"):
        paired_test([1.0, 2.0], [1.0])


def test_the_table_writer_escapes_pipes_and_refuses_ragged_rows():
    lines = markdown_table(["stage", "median |z|"], [["layer1", 0.5], ["layer2", "a|b"]])
    assert lines == ["| stage | median \\|z\\| |", "|---|---|", "| layer1 | 0.5 |", "| layer2 | a\\|b |"]
    # Every line has as many unescaped cell separators as the header: no cell is split.
    assert {len(re.findall(r"(?<!\\)\|", line)) for line in lines} == {3}
    with pytest.raises(ValueError, match="2 cells, its header 3"):
        markdown_table(["a", "b", "c"], [["1", "2"]])


def test_the_registry_and_the_page_templates_agree():
    names = [s.name for s in SECTIONS]
    assert len(names) == len(set(names))
    fills = [key for s in SECTIONS for key in s.fills]
    plots = [key for s in SECTIONS for key in s.plots]
    assert len(fills) == len(set(fills)) and len(plots) == len(set(plots))
    used = {m for page in PAGES for m in PLACEHOLDER.findall((TEMPLATES / f"{page}.md").read_text())}
    known = {"provenance", *fills} | {f"section:{n}" for n in names} | {f"verdicts:{p}" for p in PAGES}
    known |= {"section:verdicts"}
    assert used <= known, used - known  # a placeholder nothing fills would be left on the page
    assert set(fills) <= used, set(fills) - used  # a fill no page shows is dead code
    # Each section's page is a page, and each page with claims opens with its own rows.
    for section in SECTIONS:
        assert section.page is None or section.page in PAGES, section.name
    for page in {s.page for s in SECTIONS if s.page and s.verdicts.__name__ != "_nothing"}:
        text = (TEMPLATES / f"{page}.md").read_text()
        assert f"{{{{verdicts:{page}}}}}" in text, page
    assert Path(TEMPLATES).is_dir()
