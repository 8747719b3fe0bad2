"""`tenantry reencrypt`: which Credentials it picks, what it would do, what it says."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from tenantry.controller.rotation import reencrypt


def _credential(namespace: str, name: str, version: str | None,
                labels: dict[str, str] | None = None) -> dict[str, Any]:
    status = {"secretRef": {"name": f"tenantry-credential-{name}",
                            "keyId": f"{version}.0123456789abcdef"}} if version else {}
    return {"metadata": {"namespace": namespace, "name": name, "labels": labels or {}},
            "status": status}


def test_triage_skips_what_is_current_and_what_holds_no_ciphertext() -> None:
    found = [_credential("b", "one", "v1"), _credential("a", "two", "v2"),
             _credential("a", "three", None), _credential("a", "four", "v1")]
    stale, current = reencrypt.triage(found, "v2")
    assert [reencrypt.name_of(c) for c in stale] == ["a/four", "b/one"]
    assert current == ["a/two"]


def test_selection_by_namespace_and_labels() -> None:
    picked = reencrypt.Selection("acme", {"team": "payments"})
    assert reencrypt.selects(picked, _credential("acme", "x", "v1", {"team": "payments"}))
    assert not reencrypt.selects(picked, _credential("acme", "y", "v1", {"team": "web"}))
    assert not reencrypt.selects(picked, _credential("other", "x", "v1", {"team": "payments"}))
    assert reencrypt.selects(reencrypt.Selection(None, {}), _credential("any", "z", None))


def test_a_selector_is_equality_only() -> None:
    assert reencrypt.parse_selector("team=payments, tier=gold") == {"team": "payments",
                                                                    "tier": "gold"}
    for bad in ("team", "team!=web", "=x"):
        with pytest.raises(argparse.ArgumentTypeError, match="key=value pairs"):
            reencrypt.parse_selector(bad)


def test_the_dry_run_report_says_what_and_under_which_version() -> None:
    report = reencrypt.Report("v3", current=("a/x",), planned=(("a/y", "v1"), ("b/z", "v2"),
                                                                ("b/w", "v1")))
    lines = report.lines(dry_run=True)
    assert lines[0] == "would re-encrypt a/y: v1 -> v3"
    assert lines[-1] == ("dry run: 3 Credential(s) would be re-encrypted under key version v3 "
                         "(now under: v1 2, v2 1), 1 already current; nothing written")
    assert report.exit_code == 0


def test_the_summary_lists_failures_by_name_and_fails_the_exit_code() -> None:
    report = reencrypt.Report("v3", current=("a/x",), reencrypted=("a/y",),
                              failed=(("b/z", "TamperDetected: ..."),))
    assert report.lines(dry_run=False) == [
        "failed b/z: TamperDetected: ...",
        "1 re-encrypted under key version v3, 1 already current, 1 failed"]
    assert report.exit_code == reencrypt.EXIT_FAILED


@pytest.mark.parametrize(("argv", "message"), [
    ([], "say which Credentials"),
    (["--all", "-n", "x", "--keyring", "k"], "exclude each other"),
    (["--all", "--online"], "--online needs --to-version"),
    (["--all"], "offline re-encryption needs --keyring"),
])
def test_usage_errors_say_what_is_missing(argv: list[str], message: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    reencrypt.register(parser.add_subparsers())
    args = parser.parse_args(["reencrypt", *argv])
    assert args.func(args) == reencrypt.EXIT_ERROR
    assert message in capsys.readouterr().err
