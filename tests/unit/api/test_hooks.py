"""The signed rotation hook's pure rules: signature, timestamp skew, idempotency key, content
type, size, and where a tenant's secret may be read from."""

from __future__ import annotations

import datetime
import hashlib
import hmac
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantry.api import hooks
from tenantry.api.routes import rotations

SECRET = b"s" * 40
NOW = 1_800_000_000.0
BODY = b'{"policy": "acme-prod/quarterly"}'


def signed(body: bytes = BODY, timestamp: str = str(int(NOW))) -> dict[str, Any]:
    return {"timestamp": timestamp, "signature": hooks.sign(SECRET, timestamp, body),
            "body": body}


def refusal(**delivery: Any) -> hooks.Refused:
    with pytest.raises(hooks.Refused) as refused:
        hooks.verify(SECRET, now=NOW, **delivery)
    return refused.value


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body_as_documented() -> None:
    expected = hmac.new(SECRET, b"1800000000." + BODY, hashlib.sha256).hexdigest()
    assert hooks.sign(SECRET, "1800000000", BODY) == f"sha256={expected}"
    assert hooks.verify(SECRET, now=NOW, **signed()) == 1_800_000_000


def test_upper_case_hex_is_the_same_signature() -> None:
    delivery = signed()
    delivery["signature"] = str(delivery["signature"]).upper().replace("SHA256=", "sha256=")
    assert hooks.verify(SECRET, now=NOW, **delivery) == int(NOW)


@pytest.mark.parametrize("tamper", ["body", "timestamp", "secret", "truncated", "scheme"])
def test_any_change_to_what_was_signed_is_refused(tamper: str) -> None:
    delivery = signed()
    if tamper == "body":
        delivery["body"] = BODY.replace(b"quarterly", b"monthly")
    elif tamper == "timestamp":
        delivery["timestamp"] = str(int(NOW) + 1)
    elif tamper == "secret":
        delivery["signature"] = hooks.sign(b"t" * 40, str(int(NOW)), BODY)
    elif tamper == "truncated":
        delivery["signature"] = str(delivery["signature"])[:-2]
    else:
        delivery["signature"] = str(delivery["signature"]).replace("sha256=", "sha1=")
    refused = refusal(**delivery)
    assert refused.status == 401 and hooks.SIGNATURE_HEADER in refused.reason


@pytest.mark.parametrize(("offset", "words"), [(-301, "old"), (301, "future")])
def test_a_timestamp_more_than_five_minutes_off_is_refused_even_when_signed(
        offset: int, words: str) -> None:
    refused = refusal(**signed(timestamp=str(int(NOW) + offset)))
    assert refused.status == 401 and words in refused.reason


@pytest.mark.parametrize("offset", [-300, 0, 300])
def test_a_timestamp_within_five_minutes_is_accepted(offset: int) -> None:
    assert hooks.verify(SECRET, now=NOW, **signed(timestamp=str(int(NOW) + offset))) \
        == int(NOW) + offset


@pytest.mark.parametrize("timestamp", [None, "", "-5", "1.5", "1e9", " 1800000000",
                                       "99999999999999"])
def test_a_missing_or_malformed_timestamp_is_refused(timestamp: str | None) -> None:
    refused = refusal(timestamp=timestamp, signature=hooks.sign(SECRET, "0", BODY), body=BODY)
    assert refused.status == 401 and hooks.TIMESTAMP_HEADER in refused.reason


@pytest.mark.parametrize("signature", [None, "", "sha256=", "sha256=zz" + "0" * 62, "0" * 64])
def test_a_missing_or_malformed_signature_is_refused(signature: str | None) -> None:
    refused = refusal(timestamp=str(int(NOW)), signature=signature, body=BODY)
    assert refused.status == 401 and hooks.SIGNATURE_HEADER in refused.reason


@given(st.binary(max_size=200), st.text(max_size=80))
def test_no_forged_signature_verifies(body: bytes, signature: str) -> None:
    if signature.strip().lower() == hooks.sign(SECRET, str(int(NOW)), body):
        return
    with pytest.raises(hooks.Refused):
        hooks.verify(SECRET, timestamp=str(int(NOW)), signature=signature, body=body, now=NOW)


@pytest.mark.parametrize("value", ["application/json", "application/json; charset=utf-8",
                                   "Application/JSON;charset=UTF-8"])
def test_json_content_types_are_accepted(value: str) -> None:
    hooks.check_content_type(value)


@pytest.mark.parametrize("value", [None, "", "text/plain", "application/x-www-form-urlencoded",
                                   "application/json-patch+json", "application/jsonx",
                                   "application/json; charset=latin-1", "multipart/form-data"])
def test_other_content_types_are_refused_with_415(value: str | None) -> None:
    with pytest.raises(hooks.Refused) as refused:
        hooks.check_content_type(value)
    assert refused.value.status == 415


def test_bodies_over_the_limit_are_refused_by_size_or_declared_length() -> None:
    hooks.check_size(str(hooks.MAX_BODY), b"x" * hooks.MAX_BODY)
    for declared, body in ((None, b"x" * (hooks.MAX_BODY + 1)),
                           (str(hooks.MAX_BODY + 1), b"{}")):
        with pytest.raises(hooks.Refused) as refused:
            hooks.check_size(declared, body)
        assert refused.value.status == 413


@pytest.mark.parametrize("value", [None, "", "   ", "short", "has space in it",
                                   "x" * 129, "semi;colon-key", "ünïcode-key"])
def test_the_idempotency_key_is_required_and_well_formed(value: str | None) -> None:
    with pytest.raises(hooks.Refused) as refused:
        hooks.idempotency_key(value)
    assert refused.value.status == 400 and hooks.IDEMPOTENCY_HEADER in refused.value.reason


def test_a_good_idempotency_key_is_kept() -> None:
    assert hooks.idempotency_key(" deploy-4711:build.12 ") == "deploy-4711:build.12"


def test_secrets_are_read_only_by_tenant_name_never_by_path(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "hooks"
    secrets_dir.mkdir()
    (secrets_dir / "acme").write_bytes(SECRET + b"\n")
    (tmp_path / "outside").write_bytes(SECRET)
    (secrets_dir / "..data").mkdir()
    assert hooks.read_secret(secrets_dir, "acme") == SECRET
    for name in ("../outside", "..data", "/etc/passwd", "acme/", "ACME", "", "nobody"):
        assert hooks.read_secret(secrets_dir, name) is None


def test_a_short_secret_is_refused_not_used(tmp_path: Path) -> None:
    (tmp_path / "acme").write_bytes(b"password")
    with pytest.raises(hooks.WeakSecret) as weak:
        hooks.read_secret(tmp_path, "acme")
    assert "password" not in str(weak.value)


def test_remembered_digests_are_not_the_secret_or_signature() -> None:
    signature = hooks.sign(SECRET, "1", BODY)
    assert len(hooks.signature_digest(signature)) == 32
    assert hooks.signature_digest(signature) == hooks.signature_digest(signature.upper()
                                                                         .replace("SHA", "sha"))
    assert hooks.body_digest(BODY) != hooks.body_digest(BODY + b" ")


def test_new_triggers_are_unique_per_request_and_fit_the_field() -> None:
    now = datetime.datetime(2026, 12, 1, 11, 0, tzinfo=datetime.UTC)
    first = rotations.new_trigger("api", "req-1", now)
    assert first == "api:20261201T110000.000000Z:req-1"
    assert rotations.new_trigger("api", "req-2", now) != first
    assert len(rotations.new_trigger("hook", "r" * 128, now)) == 128
