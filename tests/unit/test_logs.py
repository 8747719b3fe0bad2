"""The one logging setup: what every line carries, and what it never carries (secrets)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tenantry import logs

JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLXZhbHVl"
PEM = ("-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ+secretmaterialhere\n"
       "-----END PRIVATE KEY-----")
PASSWORD = "hunter2-Zq8rT"
BEARER = "tnt_1f9c2b7d0e4a8c6b5d3f"

# (how a secret shows up in free text, the secret itself)
IN_TEXT = [
    (f"connecting to postgresql://tenantry:{PASSWORD}@db:5432/ledger", PASSWORD),
    (f"login with password={PASSWORD} refused", PASSWORD),
    (f'body {{"password": "{PASSWORD}"}}', PASSWORD),
    (f"sent Authorization: Bearer {BEARER}", BEARER),
    (f"refresh_token={BEARER}&grant_type=refresh_token", BEARER),
    (f"token {JWT} expired", JWT.split(".")[2]),
    (f"loaded key {PEM}", "secretmaterialhere"),
]


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """The root logger writing JSON into a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    logs.configure("operator", "json", stream=stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_every_line_is_one_json_object_with_the_common_fields(captured: io.StringIO) -> None:
    logging.getLogger("tenantry.controller.x").warning("namespace %s created", "acme-prod")
    [record] = lines(captured)
    assert record["message"] == "namespace acme-prod created"
    assert record["level"] == "warning"
    assert record["component"] == "operator"
    assert record["logger"] == "tenantry.controller.x"
    assert record["time"].endswith("Z") and record["time"][:4].isdigit()


def test_a_message_cannot_forge_a_second_line(captured: io.StringIO) -> None:
    forged = 'x\n{"level":"info","message":"tenant deleted by admin"}'
    logging.getLogger("t").info("tenant name %s", forged)
    assert len(captured.getvalue().splitlines()) == 1
    assert lines(captured)[0]["message"] == f"tenant name {forged}"


def test_text_format_keeps_one_record_per_line() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.formatter("webhook", "text"))
    logger = logging.getLogger("tenantry.test.text")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info("a\nFORGED ERROR line", extra={"outcome": "denied"})
    finally:
        logger.removeHandler(handler)
    [line] = stream.getvalue().splitlines()
    assert " INFO    webhook tenantry.test.text: a\\nFORGED ERROR line [outcome=denied]" in line


@pytest.mark.parametrize(("text", "secret"), IN_TEXT)
@pytest.mark.parametrize("log_format", logs.FORMATS)
def test_a_secret_in_a_message_never_appears(text: str, secret: str, log_format: str) -> None:
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "%s", (text,), None)
    output = logs.formatter("api", log_format).format(record)
    assert secret not in output
    assert "[REDACTED]" in output or "***" in output


@pytest.mark.parametrize(("text", "secret"), IN_TEXT)
def test_a_secret_in_an_extra_or_its_fields_never_appears(captured: io.StringIO, text: str,
                                                          secret: str) -> None:
    logging.getLogger("t").info("request", extra={
        "password": secret, "note": text,
        "fields": {"client_secret": secret, "nested": {"apiKey": secret, "list": [text]},
                   "path": "/v1/auth/login"}})
    output = captured.getvalue()
    assert secret not in output
    [record] = lines(captured)
    assert record["password"] == "[REDACTED]" and record["client_secret"] == "[REDACTED]"
    assert record["path"] == "/v1/auth/login"  # ordinary fields stay readable


def test_references_to_secrets_keep_their_value(captured: io.StringIO) -> None:
    logging.getLogger("t").info("stored", extra={"secretName": "tenantry-credential-smtp",
                                                 "keyId": "v3", "tokenId": "abc123"})
    [record] = lines(captured)
    assert (record["secretName"], record["keyId"], record["tokenId"]) == (
        "tenantry-credential-smtp", "v3", "abc123")


def test_an_exception_is_its_type_redacted_message_and_frames(captured: io.StringIO) -> None:
    try:
        raise ConnectionError(f"could not connect to postgresql://app:{PASSWORD}@db/x")
    except ConnectionError:
        logging.getLogger("t").exception("flush failed")
    assert PASSWORD not in captured.getvalue()
    [record] = lines(captured)
    assert record["exception"]["type"] == "ConnectionError"
    assert "postgresql://app:***@db/x" in record["exception"]["message"]
    assert any("test_an_exception_is_its_type" in f for f in record["exception"]["frames"])


async def test_each_task_logs_its_own_reconcile_fields(captured: io.StringIO) -> None:
    logger = logging.getLogger("tenantry.controller.tenant")

    async def reconcile(tenant: str) -> str:
        reconcile_id = logs.bind_reconcile("Tenant", tenant, tenant=tenant)
        await asyncio.sleep(0)  # interleave with the other reconciliation
        logger.info("applied", extra={"outcome": "applied"})
        return reconcile_id

    ids = await asyncio.gather(asyncio.create_task(reconcile("acme")),
                               asyncio.create_task(reconcile("globex")))
    by_tenant = {r["tenant"]: r for r in lines(captured)}
    assert by_tenant["acme"]["object"] == "Tenant/acme"
    assert by_tenant["globex"]["object"] == "Tenant/globex"
    assert [by_tenant["acme"]["reconcile_id"], by_tenant["globex"]["reconcile_id"]] == ids
    assert ids[0] != ids[1]
    assert all(r["outcome"] == "applied" for r in by_tenant.values())
    logger.info("outside")  # the test's own context saw neither
    assert "tenant" not in lines(captured)[-1]


def test_kopf_object_lines_name_the_object_and_the_outcome(captured: io.StringIO) -> None:
    # What kopf's per-object logger attaches (a logger of our own: kopf's would post Events).
    kopf_logger = logging.getLogger("tests.kopf-objects")
    ref = {"apiVersion": "tenantry.dev/v1alpha1", "kind": "Credential", "name": "smtp",
           "namespace": "acme-prod", "uid": "u-1"}
    kopf_logger.info("Handler 'reconcile_credential' succeeded.",
                     extra={"k8s_ref": ref, "k8s_skip": False, "settings": object()})
    kopf_logger.error("Handler 'reconcile_credential' failed temporarily: 409 Conflict",
                      extra={"k8s_ref": {**ref, "kind": "Tenant", "namespace": None,
                                         "name": "acme"}})
    done, retry = lines(captured)
    assert (done["object"], done["outcome"]) == ("Credential/acme-prod/smtp", "succeeded")
    assert "settings" not in done and "k8s_ref" not in done
    assert (retry["object"], retry["tenant"], retry["outcome"]) == (
        "Tenant/acme", "acme", "retrying")


def test_client_libraries_never_log_bodies_even_verbose() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        logs.configure("operator", "json", verbose=True, stream=stream)
        logging.getLogger("tenantry.x").debug("debug is on")
        logging.getLogger("kubernetes_asyncio.client.rest").debug(
            "response body: {\"data\": {\"token\": \"c2VjcmV0\"}}")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    assert "debug is on" in stream.getvalue()
    assert "c2VjcmV0" not in stream.getvalue()


def test_configure_replaces_earlier_handlers(captured: io.StringIO) -> None:
    logs.configure("operator", "json", stream=captured)  # as after kopf.configure
    logging.getLogger("t").info("once")
    assert len(lines(captured)) == 1


def test_an_unknown_format_names_the_option() -> None:
    with pytest.raises(ValueError, match=r"--log-format 'xml': expected one of json, text"):
        logs.formatter("api", "xml")


def test_the_api_logs_an_exception_by_its_type_only() -> None:
    try:
        raise ValueError("the client sent: " + "p4ssw0rd-in-a-sentence")
    except ValueError:
        record = logging.LogRecord("api", logging.ERROR, __file__, 1, "refused", (), None)
        record.exc_info = sys.exc_info()
    for log_format in logs.FORMATS:
        output = logs.formatter("api", log_format, exception_detail=False).format(record)
        assert "ValueError" in output and "p4ssw0rd" not in output
