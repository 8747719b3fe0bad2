"""`tenantry operator run --rotation-interval`: the RotationPolicy timer's period, 5 s unless
given (the e2e tests give a shorter one); anything but a finite positive number is refused,
naming the option."""

from __future__ import annotations

import pytest

from tenantry import cli
from tenantry.controller.rotation import plan


def _interval(*args: str) -> float:
    return float(cli.build_parser().parse_args(["operator", "run", *args]).rotation_interval)


def test_the_default_is_the_products_five_seconds() -> None:
    assert _interval() == plan.TIMER_INTERVAL == 5.0


def test_a_shorter_interval_is_taken_as_given() -> None:
    assert _interval("--rotation-interval", "0.5") == 0.5


@pytest.mark.parametrize("bad", ["0", "-1", "nan", "inf", "soon"])
def test_a_bad_interval_is_refused_naming_the_option(
        bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _interval("--rotation-interval", bad)
    assert exited.value.code == 2
    assert "argument --rotation-interval" in capsys.readouterr().err
