"""python -m benchmarks.compare: two runs of one command, row by row; nothing written unless asked."""

import copy
import json

import pytest

from benchmarks.compare import main


def _run(folder, results):
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_flips_and_moves_are_printed_row_by_row(quick_run, tmp_path, capsys):
    _, results = quick_run
    other = copy.deepcopy(results)
    rows = other["verdicts"]
    rows[0]["verdict"] = {"holds": "fails", "fails": "holds", "depends": "holds"}[rows[0]["verdict"]]
    rows[1]["verdict"] = "depends" if rows[1]["verdict"] != "depends" else "holds"
    other["environment"] = {**other["environment"], "torch_threads": 1}
    a, b = _run(tmp_path / "a", results), _run(tmp_path / "b", other)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    record = main([str(a), str(b)])
    out = capsys.readouterr().out.strip().splitlines()
    assert f"of {len(rows)} rows both have, 2 differ" in out[0] and "1 thread(s)" in out[0]
    changes = {line.split()[0] for line in out[1:]}
    assert len(out) == 3 and changes <= {"flip", "move"} and "move" in changes
    assert any(f"{rows[1]['claim']}: {rows[1]['setting']}" in line for line in out[1:])
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
    assert record["compared"] == len(rows) and len(record["differ"]) == 2
    main([str(a), str(b), "--json", str(tmp_path / "c.json")])
    assert json.loads((tmp_path / "c.json").read_text())["digest"] == results["digest"]


def test_runs_of_other_configurations_or_no_run_are_refused_in_one_line(quick_run, tmp_path, capsys):
    _, results = quick_run
    other = {**copy.deepcopy(results), "digest": "000000000000"}
    a, b = _run(tmp_path / "a", results), _run(tmp_path / "b", other)
    (tmp_path / "empty").mkdir()
    for second, message in ((b, "different configurations"), (tmp_path / "empty", "holds no results.json")):
        with pytest.raises(SystemExit) as exit_:
            main([str(a), str(second)])
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err.strip().splitlines()[-1]
