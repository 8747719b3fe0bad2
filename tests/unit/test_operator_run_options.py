"""`tenantry operator run` options the e2e tests shorten: `--rotation-interval` (the
RotationPolicy timer's period, 5 s unless given) and `--tenant-retry-delay` (the handlers' 10 s
unless given); anything but a finite positive number of seconds is refused, naming the option."""

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


def test_the_tenant_retry_delay_is_the_handlers_unless_given() -> None:
    def delay(*args: str) -> float | None:
        found = cli.build_parser().parse_args(["operator", "run", *args]).tenant_retry_delay
        return None if found is None else float(found)

    assert delay() is None  # run.run leaves memo alone: the handlers' RETRY_DELAY (10 s)
    assert delay("--tenant-retry-delay", "2") == 2.0
