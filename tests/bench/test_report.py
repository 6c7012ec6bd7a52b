"""benchmarks/report/: the statistics behind every verdict, the table writer, and the registry of sections."""

import math
import re
from pathlib import Path

import pytest
from scipy import stats

from benchmarks.docs import PAGES, TEMPLATES
from benchmarks.networks import Network
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
    known = {"provenance", "agreement", *fills} | {f"section:{n}" for n in names} | {f"verdicts:{p}" for p in PAGES}
    known |= {"section:verdicts", "beside_provenance", "beside_figures"} | {f"beside:{p}" for p in PAGES}
    assert used <= known, used - known  # a placeholder nothing fills would be left on the page
    assert set(fills) <= used, set(fills) - used  # a fill no page shows is dead code
    # Each section's page is a page, and each page with claims opens with its own rows.
    for section in SECTIONS:
        assert section.page is None or section.page in PAGES, section.name
    for page in {s.page for s in SECTIONS if s.page and s.verdicts.__name__ != "_nothing"}:
        text = (TEMPLATES / f"{page}.md").read_text()
        assert f"{{{{verdicts:{page}}}}}" in text, page
    assert Path(TEMPLATES).is_dir()


def test_log_effect_decides_over_seeds_and_over_images_with_one_seed():
    from benchmarks.report.stats import log_effect

    ode = {s: [1.0 + 0.1 * i for i in range(6)] for s in range(4)}
    sde = {s: [0.9 * v for v in vals] for s, vals in ode.items()}  # every image 10% lower, in every seed
    r = log_effect(sde, ode, sign=-1)
    assert r["verdict"] == "holds" and r["agree"] == 4 and r["level"] == "seeds"
    assert r["effect"]["mean"] == pytest.approx(-0.1, abs=1e-12) and r["image"]["n"] == 24
    # Seeds that disagree: depends, whatever the images say.
    mixed = {s: [v * (0.8 if s % 2 else 1.25) for v in vals] for s, vals in ode.items()}
    assert log_effect(mixed, ode, sign=-1)["verdict"] == "depends"
    # One seed: the paired images decide and give the interval (not a zero-width one over one seed).
    noisy = {0: [v * (0.85 + 0.02 * (i % 3)) for i, v in enumerate(ode[0])]}
    one = log_effect(noisy, {0: ode[0]}, sign=-1)
    assert one["level"] == "images" and one["verdict"] == "holds"
    assert one["effect"]["low"] < one["effect"]["mean"] < one["effect"]["high"] < 0


def test_holm_and_the_slope_by_hand():
    from benchmarks.report.dose import holm, slope

    # Sorted 0.01, 0.03, 0.04: 3 x 0.01, max(0.03, 2 x 0.03), max(0.06, 1 x 0.04).
    assert holm({"a": 0.01, "b": 0.04, "c": 0.03}) == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06})
    assert math.isnan(holm({"a": float("nan"), "b": 0.2})["a"]) and holm({"b": 0.2})["b"] == 0.2
    assert slope([0.0, 0.5, 1.0], [1.0, 0.0, -1.0]) == pytest.approx(-2.0) and math.isnan(slope([1.0], [2.0]))


class _Store:
    """What a report section reads from a run: its configuration and its cells of one kind."""

    def __init__(self, cfg, cells):
        self.cfg, self.cells = cfg, cells

    def results(self, kind):
        return self.cells if kind == "sensitivity" else {}


def _dose_cells(falls: dict[int, float], sigmas=(0.5, 1.0)) -> dict:
    """Sensitivity cells whose SDE values are the ODE's times exp(-k σ), k per seed: slope -k exactly."""
    cells = {}
    for seed, k in falls.items():
        base = [0.5 + 0.1 * i for i in range(4)]
        for sigma in (0.0, *sigmas):
            name = Network(sigma).name
            values = [v * math.exp(-k * sigma) for v in base]
            cells[f"s{seed}/{name}"] = {"model": name, "seed": seed, "method": "saliency", "rep": 0, "values": values}
    return cells


def test_the_dose_response_row_is_each_seeds_slope_decided_over_seeds():
    from benchmarks.config import Config
    from benchmarks.report.dose import summarise, verdicts

    cfg = Config(seeds=[0, 1, 2], sigmas=[0.5, 1.0], methods=["saliency"])
    falls = {0: 0.2, 1: 0.3, 2: 0.25}
    out = summarise(_Store(cfg, _dose_cells(falls)), {})["dose_response"]
    row = out["methods"]["saliency"]
    assert row["per_seed"] == pytest.approx({str(s): -k for s, k in falls.items()})
    assert row["slope"]["mean"] == pytest.approx(-0.25)
    assert row["p"] == pytest.approx(stats.ttest_1samp([-0.2, -0.3, -0.25], 0.0).pvalue)
    assert row["p_holm"] == row["p"]  # a family of one
    assert row["verdict"] == "holds" and row["effect"]["mean"] == pytest.approx(math.expm1(-0.025))
    rows = verdicts({"dose_response": out, "config": cfg.to_dict()})
    assert [r["verdict"] for r in rows] == ["holds"] and rows[0]["agree"] == 3
    # Seeds that disagree in sign: depends.
    mixed = summarise(_Store(cfg, _dose_cells({0: 0.3, 1: -0.3, 2: 0.05})), {})["dose_response"]
    assert mixed["methods"]["saliency"]["verdict"] == "depends"


def test_the_allocation_is_the_narrowest_for_its_cost_and_meets_the_target():
    from benchmarks.report.power import TARGET, _plan

    # tau^2 = 0.01, s^2 = 0.04, a seed costs 4 images: n* = sqrt(4 x 0.04 / 0.01) = 4 images.
    rows = {"x": {"sigma": 0.5, "training": 0.01, "image_variance": 0.04}}
    plan = _plan(rows, 4.0, 1.0)
    assert plan["images"] == 4

    def half(seeds):
        return stats.t.ppf(0.975, seeds - 1) * math.sqrt((0.01 + 0.04 / 4) / seeds)

    assert half(plan["seeds"]) <= TARGET < half(plan["seeds"] - 1)  # the fewest seeds that reach it
    assert plan["seconds"] == pytest.approx(plan["seeds"] * (4.0 + 4 * 1.0))
    # A row below the smallest σ judged is not planned for.
    assert _plan({"x": {**rows["x"], "sigma": 0.1}}, 4.0, 1.0) == {}


def test_the_causal_claims_follow_their_stated_rules():
    from benchmarks.report.interventions import MARGIN, TRAINING_TIME, verdicts

    at_name = Network(0.75, at_attribution=True).name
    first_name, deep_name = Network(0.75, ("layer1",)).name, Network(0.75, ("layer2", "layer3")).name

    def eff(mean, low, high, verdict="depends"):
        return {"effect": {"mean": mean, "low": low, "high": high}, "verdict": verdict, "agree": 0, "seeds": 3,
                "per_seed": [{"effect": mean}] * 3}  # fmt: skip

    def rows(first, at, trained, deep):
        iv = {"sigma": 0.75, "deep": deep_name, "first": first_name, "attribution": at_name,
              "effects": {"saliency": {first_name: first, at_name: at, TRAINING_TIME: trained,
                                       deep_name: deep}}}  # fmt: skip
        return {r["claim"]: r["verdict"] for r in verdicts({"interventions": iv, "config": {"methods": ["saliency"]}})}

    lowers = eff(-0.15, -0.25, -0.07, "holds")  # a decrease beyond the margin, over the whole interval
    flat = eff(-0.01, -MARGIN / 2, 0.03)  # any decrease under the margin
    out = rows(first=flat, at=flat, trained=lowers, deep=lowers)
    assert out == {
        "noise in the deeper stages alone lowers the sensitivity": "holds",
        "noise in the first stage alone lowers it by 5% or more": "fails",
        "noise at training time, not at attribution time, lowers it": "holds",
    }
    # Noise in the first stage lowering it by more than the margin: that claim holds; at attribution time, the
    # timing claim fails.
    out = rows(first=lowers, at=lowers, trained=lowers, deep=eff(0.0, -0.1, 0.1))
    assert list(out.values()) == ["depends", "holds", "fails"]
    # An interval reaching past the margin on both sides settles nothing.
    assert (
        rows(first=eff(-0.05, -0.2, 0.1), at=flat, trained=eff(-0.1, -0.2, 0.0), deep=lowers)[
            "noise in the first stage alone lowers it by 5% or more"
        ]
        == "depends"
    )


def test_every_intervention_network_carries_its_sigma_in_its_name():
    """σ of the interventions is a run option: a network's σ must be in its name, or a cell would be reused."""
    from benchmarks.config import Config
    from benchmarks.networks import Network

    for sigma in (0.5, 0.75):
        cfg = Config(sigmas=[0.5, 0.75], intervention_sigma=sigma)
        nets = [*cfg.intervention_networks(), cfg.attribution_time_network]
        assert len(nets) == 5 and all(net.sigma == sigma for net in nets)
        assert all(Network.parse(net.name) == net for net in nets)  # σ is in the name: a store tells them apart


def _row(claim, setting, verdict, mean=-0.1):
    return {"claim": claim, "setting": setting, "verdict": verdict, "unit": "relative", "note": "",
            "effect": {"mean": mean, "low": mean - 0.05, "high": mean + 0.05}, "agree": 3, "seeds": 5}  # fmt: skip


def test_two_runs_of_one_command_are_compared_row_by_row():
    from benchmarks.report import agreement

    per_sigma = "SDE attributions are less sensitive (secondary, per σ)"
    mine = [
        _row("sensitivity falls as σ grows (primary)", "Saliency", "holds"),
        _row(per_sigma, "Saliency, σ = 0.5", "holds"),
        _row(per_sigma, "DeepLIFT, σ = 0.5", "depends"),
        _row("Theorem 1's bound holds", "every network", "holds"),
        _row("noise costs accuracy", "σ = 0.5", "fails"),
    ]
    theirs = [dict(r) for r in mine]
    theirs[1]["verdict"] = "depends"  # a sensitivity row moves
    theirs[2]["verdict"] = "holds"  # another
    theirs[4]["verdict"] = "holds"  # a flip (not a sensitivity row: still counted)
    env = {"torch_threads": 2}
    results = {"digest": "abc", "environment": env, "verdicts": mine}
    other = agreement.record(
        {"digest": "abc", "environment": {"torch_threads": 1}, "verdicts": theirs},
        [{"status": "finished", "argv": ["--preset", "full"]}],
    )
    c = agreement.compare(results, other)
    assert (c["compared"], len(c["differ"]), c["flips"], c["sensitivity_moves"]) == (5, 3, 1, 2)
    assert c["threads"] == (2, 1) and not c["met"]  # a flip misses the target
    theirs[4]["verdict"] = "fails"
    c = agreement.compare(results, {**other, "verdicts": theirs})
    assert c["met"] and c["flips"] == 0  # two moves are allowed
    text = "\n".join(agreement.page_lines(results, {**other, "verdicts": theirs}))
    assert "**Met**" in text and "with 1 (its verdicts" in text and "| move |" in text
    with pytest.raises(ValueError, match="different configurations"):
        agreement.compare(results, {**other, "digest": "xyz"})
    assert "--compare" in agreement.page_lines(results, None)[0]


def test_a_run_knows_its_preset():
    from benchmarks.config import Config
    from benchmarks.presets import PRESETS
    from benchmarks.report import preset_of

    assert preset_of(Config()) == "default"
    assert preset_of(Config(**PRESETS["full"])) == "full"
    assert preset_of(Config(**{**PRESETS["full"], "device": "cuda"})) == "full"  # wherever it runs
    assert preset_of(Config(**{**PRESETS["full"], "n_images": 7})) == "custom"


def test_the_short_account_says_only_what_the_interventions_decide():
    from benchmarks.report.mechanism_text import _tested

    first = "noise in the first stage alone lowers it by 5% or more"
    deep = "noise in the deeper stages alone lowers the sensitivity"

    def rows(first_verdicts, deep_verdicts):
        return {"verdicts": [_row(first, f"m{i}", v) for i, v in enumerate(first_verdicts)]
                + [_row(deep, f"m{i}", v) for i, v in enumerate(deep_verdicts)]}  # fmt: skip

    assert _tested({"verdicts": []}, ["layer2"]) == ""  # a run without interventions
    raised = _tested(rows(["holds"] * 3, ["fails"] * 3), ["layer2"])
    assert "for 3 of 3 methods" in raised and "(and raises it for 3)" in raised
    assert raised.endswith("the predictors in layer2 move with the sensitivity but do not cause its fall.")
    unclear = _tested(rows(["holds"] * 3, ["depends"] * 3), ["layer2", "layer3"])
    assert unclear.endswith("that the predictors in layer2 and layer3 cause its fall is not shown.")
    assert _tested(rows(["holds"] * 3, ["depends"] * 3), ["layer1"]).endswith("is enough.")
    assert _tested(rows(["fails"] * 3, ["holds"] * 3), []).endswith("acts through the deeper stages.")
    assert _tested(rows(["holds", "depends"], ["depends"] * 2), []).endswith("not settled by this run's seeds.")
    # One deeper-stage row decided, but every effect there far smaller than any first-stage one.
    mixed = rows(["holds"] * 3, ["holds", "depends", "depends"])
    for r, mean in zip(mixed["verdicts"], (-0.21, -0.29, -0.24, -0.033, -0.013, 0.01)):
        r["effect"]["mean"] = mean
    most = _tested(mixed, ["layer3"])
    assert "Most of the effect comes through the first stage" in most and "-29.0% to -21.0%" in most
    assert "-3.3% to +1.0%" in most and most.endswith("more closely than their stages' share of the effect.")
    mixed["verdicts"][3]["effect"]["mean"] = -0.15  # a deeper-stage decrease more than half the smallest first one
    assert _tested(mixed, ["layer3"]).endswith("not settled by this run's seeds.")


def test_many_seeds_put_the_accuracies_one_seed_a_row_with_the_largest_gap():
    from benchmarks.report.networks import WIDE, tables

    seeds = list(range(WIDE + 1))
    ode = {str(s): 0.98 for s in seeds}
    sde = {**ode, "3": 0.95}  # 3 points below its ODE twin: over the 2-point limit
    models = {
        "ode": {"sigma": 0.0, "accuracy": ode, "test_accuracy": mean_ci(list(ode.values())), "epochs": 12},
        "sde-0.5": {"sigma": 0.5, "accuracy": sde, "test_accuracy": mean_ci(list(sde.values())), "epochs": 12},
    }
    text = "\n".join(tables({"seeds": seeds, "models": models, "accuracy_gap": 0.02}))
    assert "over the limit in 1 of 7 seeds (3)." in text
    assert "| 3 | 0.9800 | 0.9500 | 0.0300 |" in text and "| 0 | 0.9800 | 0.9800 | 0.0000 |" in text
    assert "seed 6" not in text  # no column per seed
    few = "\n".join(tables({"seeds": seeds[:WIDE], "models": models, "accuracy_gap": 0.02}))
    assert f"seed {WIDE - 1}" in few


def test_the_comparison_needs_every_sensitivity_row_and_says_what_one_run_lacks():
    from benchmarks.report import agreement

    per_sigma = "SDE attributions are less sensitive (secondary, per σ)"
    mine = [_row(per_sigma, "Saliency, σ = 0.5", "holds"), _row("Theorem 1's bound holds", "every network", "holds")]
    results = {"digest": "abc", "environment": {"torch_threads": 2}, "verdicts": mine}
    other = {"digest": "abc", "environment": {"torch_threads": 1}, "argv": [], "verdicts": mine[:1]}
    c = agreement.compare(results, other)
    assert c["met"] and c["only_one"] == 1  # a claim besides sensitivity missing from the other run
    assert "1 row(s) are in one run only (the second run covers 1 of 2)" in "\n".join(
        agreement.page_lines(results, other)
    )
    assert not agreement.compare(results, {**other, "verdicts": mine[1:]})["met"]  # a sensitivity row missing
    text = "\n".join(agreement.page_lines(results, other))
    assert "Not covered by the second run, so not checked here: *Theorem 1's bound holds* (every row)." in text
    assert "*SDE attributions are less sensitive" not in text.split("Not covered")[1]


def test_tables_name_the_decided_rows_an_interval_barely_decides():
    from benchmarks.report.verdicts import marginal, section

    def row(low, high, verdict, line=0.0):
        return {**_row("noise costs accuracy", f"[{low}, {high}]", verdict), "line": line,
                "effect": {"mean": (low + high) / 2, "low": low, "high": high}}  # fmt: skip

    # Half-width 0.1: marginal where the nearer end is within 0.05 of the line.
    assert marginal(row(0.04, 0.24, "holds")) and not marginal(row(0.06, 0.26, "holds"))
    assert marginal(row(-0.24, -0.04, "fails")) and not marginal(row(-0.26, -0.06, "fails"))
    assert not marginal(row(-0.1, 0.1, "depends"))
    assert marginal(row(-0.09, 0.11, "holds", line=-0.1))  # decided against -5% and the like
    assert not marginal(row(0.04, 0.24, "holds", line=None))  # a range or a combination: no line
    rows = [row(0.04, 0.24, "holds"), row(0.5, 0.7, "holds"), row(-0.1, 0.1, "depends")]
    text = "\n".join(section({"verdicts": rows, "seeds": [0, 1], "completeness_tolerance": 1e-3}))
    assert "**1 of 2 decided rows are marginal**: noise costs accuracy — [0.04, 0.24] (holds)." in text
    assert "--preset full" in text
    text = "\n".join(section({"verdicts": rows[1:], "seeds": list(range(40)), "completeness_tolerance": 1e-3}))
    assert "None of the 1 decided rows is marginal." in text and "--preset full" not in text
