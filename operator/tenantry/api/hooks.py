"""Inbound webhooks from pipelines: the signature, timestamp and request rules, pure.

A pipeline (CI, a deploy tool) asks for a rotation by POSTing to `/v1/hooks/rotate/{tenant}`
without a user account: it proves itself with a secret shared with that one tenant, the way
GitHub and Stripe sign their webhooks. The seeds' "inbound webhook controls":

- **Signature**: `X-Tenantry-Signature: sha256=<hex>`, the HMAC-SHA256 under the tenant's
  secret of `<timestamp>.<body>` (the `X-Tenantry-Timestamp` header's decimal text, a full stop,
  then the raw body bytes). Compared in constant time (`hmac.compare_digest`); the body is
  parsed only after it verified.
- **Timestamp skew**: `X-Tenantry-Timestamp` is Unix seconds; more than `MAX_SKEW` (5 minutes)
  in the past or in the future is refused, so a captured request stops working within minutes.
- **Idempotency**: an `Idempotency-Key` header is required; the route remembers it (and the
  signature) in PostgreSQL, so a replayed delivery does nothing and says so.
- **Content type and size**: exactly `application/json` (optionally `; charset=utf-8`), at most
  `MAX_BODY` bytes.

Secrets are files in a directory (`--hook-secrets-dir`, a mounted Secret: one key per tenant
name), read when a request arrives so a rotated Secret takes effect without a restart. A tenant
without a file has no hook (404, like a tenant that does not exist).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

TIMESTAMP_HEADER = "X-Tenantry-Timestamp"
SIGNATURE_HEADER = "X-Tenantry-Signature"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_SCHEME = "sha256="
MAX_SKEW = 300
"""Seconds a timestamp may be off the API's clock, either way."""
MAX_BODY = 4096
MIN_SECRET_BYTES = 32
"""A shorter secret file is refused (and logged), as if the tenant had none."""

_TIMESTAMP = re.compile(r"^[0-9]{1,12}$")
_SIGNATURE = re.compile(r"^sha256=[0-9a-f]{64}$")
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
_TENANT_FILE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_CONTENT_TYPE = re.compile(r"^application/json\s*(;\s*charset=\"?utf-8\"?\s*)?$", re.IGNORECASE)


class Refused(Exception):
    """A delivery that must not be acted on: `status` to answer, `reason` to say why."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def signed_message(timestamp: str, body: bytes) -> bytes:
    return timestamp.encode("ascii") + b"." + body


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """The `X-Tenantry-Signature` value for `body` sent at `timestamp` (what a sender computes)."""
    digest = hmac.new(secret, signed_message(timestamp, body), hashlib.sha256).hexdigest()
    return SIGNATURE_SCHEME + digest


def check_content_type(value: str | None) -> None:
    if value is None or not _CONTENT_TYPE.match(value.strip()):
        raise Refused(415, "Content-Type: must be application/json")


def check_size(declared: str | None, body: bytes) -> None:
    if len(body) > MAX_BODY or (declared is not None and declared.isdigit()
                                and int(declared) > MAX_BODY):
        raise Refused(413, f"body: at most {MAX_BODY} bytes")


def idempotency_key(value: str | None) -> str:
    """The request's idempotency key, or Refused (400) naming the header and its rule."""
    if value is None or not value.strip():
        raise Refused(400, f"{IDEMPOTENCY_HEADER}: required (a unique value per delivery; "
                           "a retry sends the same one)")
    if not _IDEMPOTENCY_KEY.match(value.strip()):
        raise Refused(400, f"{IDEMPOTENCY_HEADER}: 8-128 characters of A-Z a-z 0-9 . _ : -")
    return value.strip()


def verify(secret: bytes, *, timestamp: str | None, signature: str | None, body: bytes,
           now: float) -> int:
    """Check a delivery's timestamp and signature; its timestamp, or Refused (401).

    The timestamp's shape and skew are checked first (cheap, and a stale delivery is refused
    whatever its signature), then the HMAC, compared in constant time."""
    if timestamp is None or not _TIMESTAMP.match(timestamp):
        raise Refused(401, f"{TIMESTAMP_HEADER}: required, Unix seconds")
    sent = int(timestamp)
    if sent < now - MAX_SKEW:
        raise Refused(401, f"{TIMESTAMP_HEADER}: more than {MAX_SKEW} s old")
    if sent > now + MAX_SKEW:
        raise Refused(401, f"{TIMESTAMP_HEADER}: more than {MAX_SKEW} s in the future")
    if signature is None or not _SIGNATURE.match(signature.strip().lower()):
        raise Refused(401, f"{SIGNATURE_HEADER}: required, sha256=<64 hex digits>")
    expected = sign(secret, timestamp, body)
    if not hmac.compare_digest(expected.encode("ascii"),
                               signature.strip().lower().encode("ascii")):
        raise Refused(401, f"{SIGNATURE_HEADER}: does not match the body and timestamp")
    return sent


def signature_digest(signature: str) -> bytes:
    """What is remembered of a delivery's signature (so the same signed request is never acted
    on twice, whatever Idempotency-Key it carries)."""
    return hashlib.sha256(signature.strip().lower().encode("ascii")).digest()


def body_digest(body: bytes) -> bytes:
    return hashlib.sha256(body).digest()


def read_secret(directory: Path, tenant: str) -> bytes | None:
    """The tenant's hook secret from `directory` (a file named after the tenant), or None.

    The name is checked against the Tenant name rule before it touches the filesystem, so no
    path (`..`, `/`, a Secret mount's `..data`) can be named."""
    if not _TENANT_FILE.match(tenant) or len(tenant) > 253:
        return None
    path = directory / tenant
    try:
        value = path.read_bytes().strip()
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError):
        return None
    if len(value) < MIN_SECRET_BYTES:
        raise WeakSecret(f"hook secret of tenant {tenant}: at least {MIN_SECRET_BYTES} bytes")
    return value


class WeakSecret(Exception):
    """A secret file too short to be a secret (the tenant's hook is off until it is fixed)."""
