"""Parametrizes the admission tests over Pod Security Admission's own fixture pods.

A test that takes one of the arguments in `CASES` runs once per matching fixture pod (see
`admission_helpers`); without a Go toolchain or without the module in the Go module cache it is
skipped, with the reason; when TENANTRY_REQUIRE_FIXTURES=1 (as `.ci/run` sets) it fails instead,
so CI can never pass without replaying them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tenantry.admission.violation import Level
from tests.unit.admission.admission_helpers import PsaCase, fixtures_root, psa_cases

# Argument name -> which fixture pods it runs over.
CASES: dict[str, Callable[[PsaCase], bool]] = {
    "psa_pass_case": lambda case: case.verdict == "pass",
    "psa_fail_case": lambda case: case.verdict == "fail",
    "psa_restricted_pass_case": lambda case: (case.verdict == "pass"
                                              and case.level is Level.RESTRICTED),
}


REQUIRED = os.environ.get("TENANTRY_REQUIRE_FIXTURES") == "1"


def _params(wanted: Callable[[PsaCase], bool]) -> list[Any]:
    cases = [c for c in psa_cases() if wanted(c)]
    if cases:
        return [pytest.param(c, id=str(c)) for c in cases]
    _, reason = fixtures_root()
    if REQUIRED:
        raise pytest.UsageError(f"TENANTRY_REQUIRE_FIXTURES=1 but: {reason or 'no fixture pods'}")
    return [pytest.param(None, marks=pytest.mark.skip(reason=reason or "no fixture pods found"))]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name, wanted in CASES.items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, _params(wanted))


@pytest.fixture
def psa_root() -> Path:
    """The fixtures' testdata directory (the test is skipped when it is unavailable)."""
    root, reason = fixtures_root()
    if root is None:
        if REQUIRED:
            pytest.fail(f"TENANTRY_REQUIRE_FIXTURES=1 but: {reason}")
        pytest.skip(reason)
    return root
