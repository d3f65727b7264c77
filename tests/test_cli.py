"""The command line: `minitl demo` trains end to end and reports its accuracy."""

from __future__ import annotations

import re

import pytest

from minitl.cli import main


def test_demo_trains_and_prints_accuracy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--steps", "300"]) == 0
    out = capsys.readouterr().out
    acc = float(re.search(r"test accuracy ([0-9.]+)", out).group(1))
    assert acc > 0.9, out  # spirals are not linearly separable: this needs a trained MLP


def test_unknown_command_exits_with_usage() -> None:
    with pytest.raises(SystemExit):
        main(["nonsense"])
