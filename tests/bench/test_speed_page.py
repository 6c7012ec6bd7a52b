"""docs/speed.md is generated from the committed CPU speed run, and says which targets it met."""

import json
import shutil

import pytest
from helpers import ROOT

from benchmarks.speed_page import load, main, page, publish
from benchmarks.targets import target

DOCS = ROOT / "docs"


def test_the_committed_page_is_the_committed_run_s():
    record = load(DOCS / "data" / "speed-cpu.json")
    assert (DOCS / "speed.md").read_text() == page(record)


def _record(median: float) -> dict:
    ratio = {"median": median, "q1": median - 0.01, "q3": median + 0.01, "min_ratio": median}
    return {
        "benchmark": "speed",
        "config": {"archs": ["resnet18"], "size": 224, "batch": 4, "rounds": 12, "device": "cpu", "seed": 0},
        "environment": {"cpu_count": 2, "processor": "x86_64", "torch_threads": 2,
                        "versions": {"torch": "2", "neuralsde": "0"}},  # fmt: skip
        "results": {"resnet18": {
            "forward": {"ratios": {"ode/torchvision": ratio, "gaussians/ode": ratio},
                        "profile": {"calls": 3, "wall_ms": {}, "op_ms": {}, "pairs": {"ode/torchvision": {
                            "ops": [["aten::aminmax", 1.5, 0.0]], "op_ms": [10.0, 9.0], "wall_ms": [12.0, 10.5],
                            "outside_ms": [2.0, 1.5], "only_ms": [1.5, 0.0]}}}},
            "noise draws": {"values": 10, "seconds": {"torch normal_": 1e-7}, "ns_per_value": {"torch normal_": 10.0},
                            "ratios": {}},
            "compiled forward": {"ratios": {"ode/torchvision": ratio, "sde/sde eager": {**ratio, "median": 1.5}},
                                 "calls_to_amortise": None,
                                 "compile_s": {"torchvision": 30.0, "ode": 40.0, "sde": 50.0}},
        }},
    }  # fmt: skip


@pytest.mark.parametrize("median, verdict", [(1.01, "| met |"), (1.03, "| **missed** |")])
def test_a_target_is_shown_met_or_missed(median, verdict):
    text = page(_record(median))
    goal = target("cpu", "forward", "ode/torchvision", "resnet18")
    row = next(line for line in text.splitlines() if "| forward | ODE ÷ torchvision |" in line)
    assert f"≤ {goal:.2f}" in row and row.endswith(verdict)
    assert "| resnet18 | forward | Gaussians alone ÷ ODE |" in text  # a ratio without a target: no verdict
    assert "| resnet18 | torch normal_ | 10.00 | 0.00 |" in text
    assert "| resnet18 | 30 s | 40 s | 50 s | never (no faster than eager) |" in text
    assert "- resnet18: the SDE twin compiled is 50% slower than eager." in text
    # Where the time goes: the profiled operators, their sum, the wall and the outside time, with differences.
    assert "**resnet18, ODE ÷ torchvision**, forward, ms per call (3 profiled calls):" in text
    assert "| `aten::aminmax` | 1.50 | 0.00 | +1.50 |" in text
    assert "| **outside operators** | 2.00 | 1.50 | +0.50 |" in text
    # In words: 1.5 ms of the 1.5 ms more is what only one side calls, none in shared operators, 0.5 outside.
    assert "ode takes +1.50 ms per call against torchvision (+14.3%): +1.50 ms in operators one of them alone " in text
    assert "-0.50 ms in the operators both call, +0.50 ms outside operators." in text


def test_publish_writes_the_page_and_refuses_what_is_no_cpu_run(tmp_path, capsys):
    source = tmp_path / "speed.json"
    source.write_text(json.dumps(_record(1.0)))
    publish(source, tmp_path / "docs")
    assert (tmp_path / "docs" / "speed.md").read_text() == page(_record(1.0))
    assert json.loads((tmp_path / "docs" / "data" / "speed-cpu.json").read_text()) == _record(1.0)
    gpu = _record(1.0)
    gpu["config"]["device"] = "cuda"
    source.write_text(json.dumps(gpu))
    for bad in (source, tmp_path / "nope.json", shutil.copyfile(ROOT / "pyproject.toml", tmp_path / "x.json")):
        with pytest.raises(SystemExit) as exit_:
            main([str(bad), "--docs", str(tmp_path / "docs")])
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
