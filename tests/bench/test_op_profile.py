"""benchmarks.op_profile: two callables' operators side by side, and the time outside them."""

import pytest
import torch

from benchmarks.op_profile import compare, lines


def test_an_operator_only_one_side_calls_is_its_difference_and_the_sums_add_up():
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    runs = {
        "more": lambda: (torch.mm(a, b), torch.sigmoid(a)),
        "base": lambda: torch.mm(a, b),
    }
    out = compare(runs, [("more", "base")], calls=3, top=50)
    pair = out["pairs"]["more/base"]
    ops = {op: (x, y) for op, x, y in pair["ops"]}
    assert ops["aten::sigmoid"][0] > 0 and ops["aten::sigmoid"][1] == 0
    assert "aten::mm" in ops and ops["aten::mm"][1] > 0
    diffs = [abs(x - y) for _, x, y in pair["ops"]]
    assert diffs == sorted(diffs, reverse=True)  # largest difference first
    # Every operator is listed (top=50 is more than either calls), so the listed ones sum to the total.
    assert sum(x for _, x, _ in pair["ops"]) == pytest.approx(pair["op_ms"][0])
    assert sum(y for _, _, y in pair["ops"]) == pytest.approx(pair["op_ms"][1])
    assert pair["outside_ms"] == [w - o for w, o in zip(pair["wall_ms"], pair["op_ms"])]
    # What one side alone calls: sigmoid in "more", nothing in "base".
    assert pair["only_ms"][0] == pytest.approx(ops["aten::sigmoid"][0]) and pair["only_ms"][1] == 0
    assert len(compare(runs, [("more", "base")], calls=1, top=1)["pairs"]["more/base"]["ops"]) == 1
    text = lines("tiny", out)
    assert text[0].startswith("tiny       where the time goes in more/base, forward pass")
    assert any("aten::sigmoid" in line for line in text) and "outside operators" in text[-1]


def test_calls_below_one_are_refused():
    with pytest.raises(ValueError, match="calls must be at least 1, got 0"):
        compare({"x": lambda: None}, [], calls=0)


def test_the_rounds_order_is_shuffled_by_seed_so_no_model_always_follows_the_same_one():
    from benchmarks.common import round_order

    names = ["torchvision", "ode", "sde", "gaussians", "torchvision copy"]
    orders = [round_order(names, r) for r in range(12)]
    assert all(sorted(o) == sorted(names) for o in orders)
    assert orders == [round_order(names, r) for r in range(12)]  # seeded: the same every run
    assert round_order(names, 0, seed=1) != orders[0] or round_order(names, 1, seed=1) != orders[1]
    # Under the former rotation "ode" followed "torchvision" in every round it did not open;
    # shuffled, it follows at least two different models within the benchmark's 12 rounds.
    before = {o[o.index("ode") - 1] for o in orders if o[0] != "ode"}
    assert len(before) >= 2


def test_profile_on_another_device_is_refused_in_one_line_before_anything_runs(capsys):
    from benchmarks.speed import main

    with pytest.raises(SystemExit) as exit_:
        main(["--device", "cuda", "--profile", "--archs", "resnet18"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err[-1].endswith(
        "--profile splits CPU time by operator: it runs with --device cpu only"
    )
