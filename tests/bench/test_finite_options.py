"""Every real-valued option of every entry point refuses NaN and infinities in one line (generated from the parsers)."""

import argparse

import pytest

from benchmarks.cli import build_parser

#: Each entry point: its parser, and a call that parses and checks a command line as the command does.
ENTRY_POINTS = {}


def _main_job(argv):
    from benchmarks.cli import parse_args

    parse_args(argv)


def _train(argv):
    from benchmarks.train import main

    main(["--model", "ode", *argv])


def _gpu(argv):
    from benchmarks.gpu import main

    main(["--device", "cpu", *argv])


def _gpu_parser():
    from benchmarks.gpu import _parser

    return _parser()


ENTRY_POINTS = {
    "benchmarks": (build_parser, _main_job),  # also benchmarks.sensitivity, .theorem1, ... (one parser)
    "benchmarks.train": (build_parser, _train),
    "benchmarks.gpu": (_gpu_parser, _gpu),
}


def _float_options(parser: argparse.ArgumentParser) -> list[tuple[str, bool]]:
    """``(flag, takes a list)`` of every option whose values are real numbers."""
    return [
        (action.option_strings[0], action.nargs == "+")
        for action in parser._actions
        if action.type is float and action.option_strings
    ]


CASES = [
    (entry, flag, many, bad)
    for entry, (make, _) in ENTRY_POINTS.items()
    for flag, many in _float_options(make())
    for bad in ("nan", "inf")
]


def test_the_parsers_declare_real_valued_options():
    flags = {flag for entry, flag, _, _ in CASES}
    assert {"--lr", "--sigmas", "--radius", "--table-sigma", "--budget"} <= flags  # the generator finds them


@pytest.mark.parametrize("entry, flag, many, bad", CASES)
def test_nan_and_infinity_are_refused_in_one_line(entry, flag, many, bad, capsys, tmp_path):
    _, call = ENTRY_POINTS[entry]
    value = [bad, "0.5"] if many else [bad]
    with pytest.raises(SystemExit) as exit_:
        call([flag, *value, "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and f"{flag} must be finite, got" in err[-1] and "Traceback" not in "\n".join(err)
    assert not (tmp_path / "out").exists()  # nothing was started
