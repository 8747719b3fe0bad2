"""`tenantry webhook run`: options, defaults and the help text."""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path

import pytest

from tenantry import cli
from tenantry.devcluster import pki
from tenantry.webhook import cli as webhook_cli
from tenantry.webhook import clientauth, configuration
from tenantry.webhook.run import Settings

ANY_ADDRESS = "0.0.0.0"  # noqa: S104 - what the default means, not a bind


def _settings(*argv: str) -> Settings:
    args = cli.build_parser().parse_args(["webhook", "run", *argv])
    settings: Settings = webhook_cli.settings_from(args)
    return settings


@pytest.fixture
def client_ca(tmp_path: Path) -> Path:
    """A CA file as --client-ca-file wants it."""
    path = tmp_path / "client-ca.crt"
    path.write_bytes(pki.make_ca("apiserver-webhook-client-ca").cert_pem)
    return path


def test_in_cluster_defaults(monkeypatch: pytest.MonkeyPatch, client_ca: Path) -> None:
    monkeypatch.delenv("TENANTRY_NAMESPACE", raising=False)
    monkeypatch.setenv("TENANTRY_LEDGER_DSN", "postgresql://app:pw@db/tenantry")
    settings = _settings("--service", "tenantry-system/tenantry-webhook",
                         "--client-ca-file", str(client_ca))
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
    # Client certificates are required (any CN the CA verifies, unless --client-cn).
    assert settings.client_ca_file == client_ca
    assert settings.clients == clientauth.ClientPolicy(client_ca)
    assert settings.insecure_no_client_auth is False


def test_local_development(monkeypatch: pytest.MonkeyPatch, client_ca: Path) -> None:
    monkeypatch.setenv("TENANTRY_NAMESPACE", "platform")
    settings = _settings("--url", "https://127.0.0.1:9443", "--listen", "127.0.0.1:9443",
                         "--resync", "1s", "--ca-propagation", "2s", "--cert-validity", "12h",
                         "--tls-san", "localhost", "--failure-policy", "Ignore",
                         "--timeout-seconds", "3", "--no-ledger",
                         "--client-ca-file", str(client_ca), "--client-cn", "apiserver",
                         "--client-cn", "apiserver-2")
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
    assert settings.client_common_names == ("apiserver", "apiserver-2")


def test_the_ledger_is_required_unless_opted_out(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path, client_ca: Path) -> None:
    monkeypatch.delenv("TENANTRY_LEDGER_DSN", raising=False)
    url = ("--url", "https://127.0.0.1:9443", "--client-ca-file", str(client_ca))
    with pytest.raises(ValueError, match="audit ledger is required"):
        _settings(*url)
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text("postgresql://app:pw@db/tenantry\n")
    settings = _settings(*url, "--ledger-dsn-file", str(dsn_file),
                         "--ledger-failure", "allow")
    assert settings.ledger_dsn == "postgresql://app:pw@db/tenantry"
    assert settings.ledger_fail_closed is False
    with pytest.raises(ValueError, match="--ledger-dsn-file"):
        _settings(*url, "--ledger-dsn-file", str(tmp_path / "no"))


def test_client_authentication_is_required_unless_explicitly_bypassed(
        capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["webhook", "run", "--url", "https://127.0.0.1:9443", "--no-ledger"]
    with pytest.raises(clientauth.ClientAuthError,
                       match=r"--client-ca-file FILE.*--insecure-no-client-auth"):
        webhook_cli.settings_from(cli.build_parser().parse_args(argv))
    # The command says so and exits 2, before touching any cluster.
    args = cli.build_parser().parse_args(argv)
    assert webhook_cli.run_command(args) == 2
    assert "the apiserver must authenticate to the webhook" in capsys.readouterr().err
    settings = _settings(*argv[2:], "--insecure-no-client-auth")
    assert settings.insecure_no_client_auth is True and settings.client_ca_file is None
    assert settings.clients.insecure
    assert "NOT CHECKED" in settings.clients.describe()


def test_a_client_cn_without_a_client_ca_is_refused() -> None:
    with pytest.raises(ValueError, match="--client-cn needs --client-ca-file"):
        _settings("--url", "https://h", "--no-ledger", "--insecure-no-client-auth",
                  "--client-cn", "apiserver")


def test_the_client_ca_and_the_bypass_exclude_each_other(client_ca: Path) -> None:
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["webhook", "run", "--url", "https://h",
                                       "--client-ca-file", str(client_ca),
                                       "--insecure-no-client-auth"])


@pytest.mark.parametrize(("content", "reason"), [
    (None, "cannot read it"),
    (b"", "holds no PEM certificate"),
    (b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n", "not a certificate"),
])
def test_an_unusable_client_ca_file_is_refused_at_start(tmp_path: Path, content: bytes | None,
                                                        reason: str) -> None:
    path = tmp_path / "ca.crt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=f"--client-ca-file {path}: {reason}"):
        _settings("--url", "https://h", "--no-ledger", "--client-ca-file", str(path))


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
                     "caBundle", "examples:", "--client-ca-file", "--client-cn",
                     "--insecure-no-client-auth", "AdmissionConfiguration"):
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
