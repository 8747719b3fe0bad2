"""Secret-looking values never reach the ledger (pure)."""

from __future__ import annotations

import copy
import time

import pytest

from tenantry.ledger import redact
from tenantry.ledger.redact import REDACTED


@pytest.mark.parametrize("key", [
    "password", "db_password", "passwd", "passphrase", "clientSecret", "client_secret",
    "secret", "token", "refresh_token", "accessToken", "api_key", "apiKey", "X-Api-Key",
    "privateKey", "private_key", "Authorization", "cookie", "credentials", "plaintext",
    "signingKey", "masterKey",
])
def test_secret_looking_keys_are_redacted(key: str) -> None:
    assert redact.redact({key: "hunter2"}) == {key: REDACTED}


@pytest.mark.parametrize("key", [
    "tokenId", "token_id", "secretRef", "secretName", "apiKeyPrefix", "keyVersion",
    "credentialRef", "name", "namespace", "quota", "keyId",
])
def test_keys_that_only_refer_to_secrets_are_kept(key: str) -> None:
    assert redact.redact({key: "value"}) == {key: "value"}


def test_whole_subtrees_under_a_secret_key_are_replaced_at_any_depth() -> None:
    value = {"spec": {"items": [{"name": "db", "password": {"nested": "x"}}],
                      "secretRef": {"name": "creds", "keyId": "k1", "token": "t"}}}
    assert redact.redact(value) == {
        "spec": {"items": [{"name": "db", "password": REDACTED}],
                 "secretRef": {"name": "creds", "keyId": "k1", "token": REDACTED}}}


@pytest.mark.parametrize("text", [
    "-----BEGIN PRIVATE KEY-----\nMIIB...\n-----END PRIVATE KEY-----",
    "-----BEGIN RSA PRIVATE KEY-----\nabc",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl",
    "Bearer abc.def.ghi",
    "basic dXNlcjpwYXNz",
])
def test_credential_looking_strings_are_redacted_anywhere(text: str) -> None:
    assert redact.redact({"note": text, "list": [text]}) == {"note": REDACTED,
                                                             "list": [REDACTED]}


def test_passwords_inside_urls_are_masked() -> None:
    assert redact.redact({"url": "postgresql://app:s3cr3t@db:5432/tenantry"}) == {
        "url": "postgresql://app:***@db:5432/tenantry"}
    assert redact.redact({"url": "https://example.com/a:b@c"}) == {
        "url": "https://example.com/a:b@c"}


def test_ordinary_values_and_input_are_untouched() -> None:
    value = {"replicas": 3, "enabled": True, "cidr": "10.0.0.0/8", "labels": {"team": "a"},
             "none": None, "ratio": 0.5}
    original = copy.deepcopy(value)
    assert redact.redact(value) == original
    assert value == original


def test_sentences_that_merely_start_like_a_scheme_are_kept() -> None:
    assert redact.redact({"note": "Basic plan selected"}) == {"note": "Basic plan selected"}


@pytest.mark.parametrize("text", [
    "x" * 200_000,
    "a" * 200_000 + "://",
    "eyJ" * 70_000,
    "eyJ" + "a" * 200_000 + ".eyJ",
    "-----BEGIN " * 20_000,
    "bearer " + "a" * 200_000 + " !",
    "a://" + ":" * 200_000,
])
def test_redaction_stays_linear_on_adversarial_strings(text: str) -> None:
    # Event size is bounded, but a quadratic pattern on 64 KiB already takes seconds per event.
    started = time.perf_counter()
    redact.redact({"value": text})
    assert time.perf_counter() - started < 0.5
