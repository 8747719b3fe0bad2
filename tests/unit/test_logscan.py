"""The log scanner finds what it must (each kind of secret, in each form it travels in) and
does not cry wolf at the redacted forms components are meant to log."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from tenantry.api import apikeys
from tenantry.api.tokens import rfc7517, rfc9068, rfc9700
from tests import logscan


def _log(tmp_path: Path, text: str) -> list[logscan.Log]:
    path = tmp_path / "component.log"
    path.write_text(text)
    return [logscan.Log("api", path)]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _access_token() -> str:
    keys = rfc7517.KeySet(signing=ed25519.Ed25519PrivateKey.generate())
    token, _ = rfc9068.issue(keys, rfc9068.Policy(issuer="i", audience="a"),
                             subject="s", username="u", session_id="sid", now=1_700_000_000)
    return token


def test_every_credential_shape_is_found_without_being_registered(tmp_path: Path) -> None:
    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    planted = {
        "signed JWT": f'{{"msg": "refused", "token": "{_access_token()}"}}',
        "refresh token": f"refresh {rfc9700.new_token()} used twice",
        "API key": f"key={apikeys.new_key().key}",
        "PEM private key": pem.splitlines()[0],
        logscan.BASE64_PEM: f'{{"data": {{"tls.key": "{_b64(pem)}"}}}}',
    }
    hits = logscan.scan(_log(tmp_path, "\n".join(planted.values())), {})
    assert [(hit.line, hit.what) for hit in hits] == list(
        enumerate(planted, start=1))


def test_registered_values_are_found_as_is_and_encoded(tmp_path: Path) -> None:
    password, key = "a long enough password, 2026", secrets.token_bytes(32)
    registered: dict[str, str] = {}
    for value, what in ((password, "password"), (key, "master key")):
        logscan.remember(value, what, into=registered)
    lines = [password, base64.b64encode(password.encode()).decode(),
             base64.b64encode(key).decode(), key.hex(), "nothing here"]
    hits = logscan.scan(_log(tmp_path, "\n".join(lines)), registered)
    assert sorted({(hit.line, hit.what) for hit in hits}) == [
        (1, "password"), (2, "password"), (3, "master key"), (4, "master key")]


def test_redacted_forms_are_not_hits(tmp_path: Path) -> None:
    """What components do log: an API key's public prefix, a token's jti, a header alone."""
    new = apikeys.new_key()
    token = _access_token()
    header = token.split(".", 1)[0]
    certificate = base64.b64encode(b"-----BEGIN CERTIFICATE-----\nMIIB" + b"A" * 60).decode()
    text = "\n".join([f"api key {new.prefix}… revoked", f"caBundle {certificate}",
                      f"header {header} refused: unknown kid", "token_type=Bearer"])
    assert logscan.scan(_log(tmp_path, text), {}) == []


def test_a_missing_log_is_scanned_as_empty(tmp_path: Path) -> None:
    assert logscan.scan([logscan.Log("webhook", tmp_path / "never-written.log")], {}) == []
