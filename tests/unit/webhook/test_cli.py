"""`tenantry webhook run`: options, defaults and the help text."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import pytest

from tenantry import cli
from tenantry.webhook import cli as webhook_cli
from tenantry.webhook import configuration
from tenantry.webhook.run import Settings

ANY_ADDRESS = "0.0.0.0"  # noqa: S104 - what the default means, not a bind


def _settings(*argv: str) -> Settings:
    args = cli.build_parser().parse_args(["webhook", "run", *argv])
    settings: Settings = webhook_cli.settings_from(args)
    return settings


def test_in_cluster_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENANTRY_NAMESPACE", raising=False)
    monkeypatch.setenv("TENANTRY_LEDGER_DSN", "postgresql://app:pw@db/tenantry")
    settings = _settings("--service", "tenantry-system/tenantry-webhook")
    assert settings.ledger_dsn == "postgresql://app:pw@db/tenantry"
    assert settings.ledger_fail_closed is True
    assert settings.operator_user == "system:serviceaccount:tenantry-system:tenantry-operator"
    assert settings.endpoint == configuration.ServiceEndpoint(
        "tenantry-system", "tenantry-webhook", 443)
    assert (settings.listen_host, settings.listen_port) == (ANY_ADDRESS, 8443)
    assert settings.failure_policy == "Fail"
    assert settings.timeout_seconds == 5
    assert settings.namespace == "tenantry-system"
    assert settings.secret_name == "tenantry-webhook-tls"
    assert settings.configuration_name == "tenantry-admission"


def test_local_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TENANTRY_NAMESPACE", "platform")
    settings = _settings("--url", "https://127.0.0.1:9443", "--listen", "127.0.0.1:9443",
                         "--resync", "1s", "--ca-propagation", "2s", "--cert-validity", "12h",
                         "--tls-san", "localhost", "--failure-policy", "Ignore",
                         "--timeout-seconds", "3", "--no-ledger")
    assert settings.ledger_dsn is None
    assert settings.endpoint == configuration.UrlEndpoint(
        "https://127.0.0.1:9443")
    assert settings.namespace == "platform"
    assert settings.resync_interval == 1.0
    policy = settings.cert_policy
    assert policy.ca_propagation == datetime.timedelta(seconds=2)
    assert policy.cert_validity == datetime.timedelta(hours=12)
    assert settings.extra_names == ("localhost",)
    assert settings.failure_policy == "Ignore"
    assert settings.timeout_seconds == 3


def test_the_ledger_is_required_unless_opted_out(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.delenv("TENANTRY_LEDGER_DSN", raising=False)
    with pytest.raises(ValueError, match="audit ledger is required"):
        _settings("--url", "https://127.0.0.1:9443")
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text("postgresql://app:pw@db/tenantry\n")
    settings = _settings("--url", "https://127.0.0.1:9443", "--ledger-dsn-file", str(dsn_file),
                         "--ledger-failure", "allow")
    assert settings.ledger_dsn == "postgresql://app:pw@db/tenantry"
    assert settings.ledger_fail_closed is False
    with pytest.raises(ValueError, match="--ledger-dsn-file"):
        _settings("--url", "https://127.0.0.1:9443", "--ledger-dsn-file", str(tmp_path / "no"))


@pytest.mark.parametrize("argv", [
    [],                                                    # neither --url nor --service
    ["--url", "https://h", "--service", "a/b"],            # both
    ["--service", "no-slash"],
    ["--url", "https://h", "--listen", "nowhere"],
    ["--url", "https://h", "--timeout-seconds", "10"],
    ["--url", "https://h", "--failure-policy", "Sometimes"],
    ["--url", "https://h", "--resync", "soon"],
])
def test_bad_options_are_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["webhook", "run", *argv])


def test_a_plain_http_url_is_refused() -> None:
    args = cli.build_parser().parse_args(["webhook", "run", "--url", "http://127.0.0.1:1"])
    with pytest.raises(ValueError, match="https"):
        webhook_cli.settings_from(args)


def test_help_explains_routes_selection_and_certificates(
        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["webhook", "run", "--help"])
    text = capsys.readouterr().out
    for expected in ("/validate/workloads", "/validate/credentials", "--url", "--service",
                     "--failure-policy", "--cert-dir", "tenantry.dev/tenant", "kube-system",
                     "caBundle", "examples:"):
        assert expected in text


@pytest.mark.parametrize(("text", "seconds"), [("90d", 90 * 86400), ("12h", 43200),
                                               ("30m", 1800), ("45s", 45), ("1.5", 1.5)])
def test_durations(text: str, seconds: float) -> None:
    assert webhook_cli.duration(text).total_seconds() == seconds
    with pytest.raises(argparse.ArgumentTypeError):
        webhook_cli.duration("1w")


def test_listen_addresses() -> None:
    assert webhook_cli.listen_address("127.0.0.1:9443") == ("127.0.0.1", 9443)
    assert webhook_cli.listen_address("[::]:8443") == ("::", 8443)
    assert webhook_cli.listen_address(":8443") == (ANY_ADDRESS, 8443)
