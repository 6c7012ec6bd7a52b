"""benchmarks.gpu: sections within a budget, failures recorded, the test-output parser, the docs page.

The whole command's dry run on the CPU is in tests/bench/test_benchmarks.py.
"""

import json
import time

import pytest
from helpers import ROOT

import benchmarks.gpu as gpu
from benchmarks.gpu import correctness, record
from benchmarks.gpu.speed import target

DOCS = ROOT / "docs"


def _fake_sections(monkeypatch, **functions):
    def noop(section):
        section.result["ran"] = True

    table = {name: functions.get(name, noop) for name in gpu.SHARES}
    monkeypatch.setattr(gpu, "_sections", lambda: table)


def test_a_failing_section_is_recorded_and_the_next_one_runs(tmp_path, monkeypatch):
    def broken(section):
        section.result["half"] = 1
        raise ValueError("no such kernel")

    _fake_sections(monkeypatch, speed=broken)
    rec = gpu.run(tmp_path, budget=30, device="cpu")
    speed = rec["sections"]["speed"]
    assert speed["status"] == "failed" and speed["result"] == {"half": 1}
    assert speed["error"]["type"] == "ValueError" and speed["error"]["message"] == "no such kernel"
    assert any("broken" in frame for frame in speed["error"]["frames"])
    assert rec["sections"]["protocol"]["status"] == "ok" and rec["sections"]["protocol"]["result"]["ran"]
    # What was written to disk is the same record, page included.
    assert json.loads((tmp_path / "gpu.json").read_text())["sections"]["speed"]["status"] == "failed"
    assert "ValueError: no such kernel" in (tmp_path / "gpu.md").read_text()


def test_a_section_over_its_share_stops_and_says_how_far_it_got(tmp_path, monkeypatch):
    def polite(section):
        done = 0
        while not section.over():  # a budget of 0.001 s: over at once
            done += 1
        section.reached = f"{done} of 5 lines"

    _fake_sections(monkeypatch, speed=polite)
    rec = gpu.run(tmp_path, budget=0.001, device="cpu")
    assert rec["sections"]["speed"]["status"] == "partial" and rec["sections"]["speed"]["reached"].endswith(
        "of 5 lines"
    )


def test_a_section_that_never_ends_is_cut_off_and_the_next_one_runs(tmp_path, monkeypatch):
    def endless(section):
        section.result["started"] = True
        while True:  # never returns: only the alarm ends it, however loaded the machine
            try:
                time.sleep(0.05)
            except Exception:  # a section's own error handling must not swallow the alarm
                section.result["swallowed"] = True

    _fake_sections(monkeypatch, correctness=endless)
    rec = gpu.run(tmp_path, budget=1, device="cpu")
    entry = rec["sections"]["correctness"]
    assert entry["status"] == "partial" and "alarm" in entry["reached"] and entry["result"]["started"]
    assert "swallowed" not in entry["result"]
    assert rec["sections"]["speed"]["status"] == "ok"


def test_the_pytest_output_parser():
    output = """\
tests/library/test_cuda.py::test_a PASSED                                       [ 33%]
tests/library/test_cuda.py::test_b[x-1] FAILED                                  [ 66%]
tests/library/test_cuda.py::test_c SKIPPED (needs a CUDA GPU)                   [100%]
============================= slowest durations ==============================
1.50s call     tests/library/test_cuda.py::test_a
0.20s setup    tests/library/test_cuda.py::test_a
0.70s call     tests/library/test_cuda.py::test_b[x-1]
=========================== short test summary info ============================
FAILED tests/library/test_cuda.py::test_b[x-1] - AssertionError: 3 != 4
==================== 1 failed, 1 passed, 1 skipped in 3.10s ====================
"""
    parsed = correctness.parse(output)
    assert parsed["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert parsed["tests"]["test_a"] == {"outcome": "passed", "seconds": 1.7}
    assert parsed["tests"]["test_b[x-1]"]["reason"] == "AssertionError: 3 != 4"


def test_targets_are_the_issue_of_each_ratio():
    assert target("forward", "ode/torchvision") == 1.03 and target("forward+backward", "ode/torchvision") == 1.05
    assert target("forward", "sde/ode") == target("forward+backward", "sde/ode") == 1.10
    assert target("deeplift", "ode/discrete") == 1.05 and target("memory", "ode/torchvision") == 1.05
    assert target("compiled forward", "ode_compiled/ode") is None


def test_the_docs_page_is_generated_from_the_published_record():
    committed = (DOCS / "gpu.md").read_text()
    assert committed == record.page(record.published(DOCS)), "run python -m benchmarks.gpu --publish"
    if record.published(DOCS) is None:
        assert "Nothing has been measured on a GPU yet" in committed and "≤ 1.03" in committed


def test_publish_refuses_a_dry_run_and_writes_the_page_of_a_gpu_run(tmp_path, monkeypatch):
    _fake_sections(monkeypatch)
    dry = gpu.run(tmp_path / "dry", budget=5, device="cpu")
    with pytest.raises(ValueError, match="dry run"):
        record.publish(tmp_path / "dry" / "gpu.json", tmp_path / "docs")
    # A record as a GPU run writes it (the figures here are made up for the page's layout).
    line = {
        "precision": "fp32", "phase": "forward", "batch": 64, "rounds": 20, "timer": "CUDA events",
        "ratios": {"ode/torchvision": {"median": 1.07, "q1": 1.05, "q3": 1.08, "min_ratio": 1.06, "target": 1.03}},
        "models": {"ode": {"seconds": 0.1, "images_per_s": 640.0, "peak_mib": 900.0}},
    }  # fmt: skip
    fake = {**dry, "device": "cuda", "tiny": False}
    fake["sections"]["speed"]["result"] = {"lines": [line], "sizes": {"arch": "resnet50", "size": 224}}
    (tmp_path / "gpu.json").write_text(json.dumps(fake))
    record.publish(tmp_path / "gpu.json", tmp_path / "docs")
    page = (tmp_path / "docs" / "gpu.md").read_text()
    assert json.loads((tmp_path / "docs" / "data" / "gpu.json").read_text()) == fake
    assert "## Measured" in page and "| fp32 forward | 64 | ODE ÷ torchvision | 1.070 |" in page
    assert "**missed**" in page and "Nothing has been measured" not in page


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "not a record of python -m benchmarks.gpu"),
        ("{trunc", "not a readable gpu.json"),
        (None, "not a readable"),
    ],
)
def test_publish_of_a_file_that_is_not_a_record_is_one_line(tmp_path, capsys, content, message):
    if content is not None:
        (tmp_path / "gpu.json").write_text(content)
    with pytest.raises(SystemExit):
        gpu.main(["--publish", str(tmp_path / "gpu.json"), "--docs", str(tmp_path / "docs")])
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "docs").exists()


@pytest.mark.parametrize(
    "argv, message",
    [(["--budget", "-5"], "--budget must be a positive number of seconds, got -5.0"),
     (["--device", "tpu"], "--device 'tpu' is not a device; use cpu, cuda or cuda:N"),
     (["--device", "meta"], "--device meta: only cpu and cuda are supported")],
)  # fmt: skip
def test_bad_options_end_in_one_line_before_anything_runs(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        gpu.main(["--out", str(tmp_path / "out"), *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_rank_count_for_an_hour_is_the_fewest_that_fit():
    from benchmarks.gpu.protocol import extrapolate, ranks_for

    # 2 h of fine-tuning and 200 cells of 60 s: 16 ranks take 450 + 13 * 60 = 1230 s, 3 take
    # 2400 + 67 * 60 = 6420 s; the fewest within the hour is the smallest r with
    # 7200 / r + ceil(200 / r) * 60 <= 3600: r = 5 gives 1440 + 2400 = 3840, r = 6 gives 1200 + 2040 = 3240.
    assert ranks_for(3600, 7200, 200, 60) == 6
    assert ranks_for(3600, 0, 200, 3601) is None  # one cell alone is over the hour
    assert ranks_for(3600, 0, 1, 3600) == 1
    times = {net: {m: {"steady": 0.5} for m in ("saliency", "integrated_gradients", "deeplift", "deeplift_shap")}
             for net in ("ode", "sde-0.5")}  # fmt: skip
    ex = extrapolate(times, {"ode": 1000.0, "sde": 1000.0})
    # Per seed: 8 (network, method) pairs x 100 images x 5 repetitions x 0.5 s = 2000 s; fine-tuning 2 x 1281 s.
    assert ex["attributions_per_seed_s"] == pytest.approx(2000.0)
    assert ex["ranks_for_an_hour"] == ranks_for(3600, 5 * ex["fine_tuning_per_seed_s"], 200, 50.0)
