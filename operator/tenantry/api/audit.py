"""Every auth event goes to the audit ledger: who, what, from where; never a secret.

Events (action, on resource kind):

- `auth.login.succeeded` / `auth.login.failed` (Session): method `password` or `oidc:<name>`;
  a failure names the login name tried, never the password.
- `auth.refresh` (Session), `auth.refresh.reuse-detected` (Session, the family revoked),
  `auth.logout` (Session), `auth.token.revoked` (AccessToken, by jti).
- `credential.exchange.allowed` / `credential.exchange.refused` (Credential, on its tenant's
  chain): which ServiceAccount (and pod), which fields, the reason of a refusal; never a value.
- `apikey.created` / `apikey.revoked` (ApiKey, on the key's tenant chain, by its public
  prefix), `auth.rate-limited` (RateLimit, which bucket; at most one entry per bucket a minute,
  so a flood cannot flood the ledger).

Platform-wide events go to the platform chain; an event about one tenant (an API key) to that
tenant's chain. Recording goes through the durable spool (`tenantry.ledger.recorder`): a
request never waits for, nor fails because of, the database, and no event is lost when the
ledger is briefly down. With `--no-ledger` (explicit) nothing is recorded.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Mapping
from typing import Any

from tenantry.ledger import events
from tenantry.ledger.recorder import Recorder

log = logging.getLogger("tenantry.api.audit")

COMPONENT = "api"
RATE_LIMIT_RECORD_EVERY = 60.0

LOGIN_SUCCEEDED = "auth.login.succeeded"
LOGIN_FAILED = "auth.login.failed"
REFRESH = "auth.refresh"
REFRESH_REUSE = "auth.refresh.reuse-detected"
LOGOUT = "auth.logout"
TOKEN_REVOKED = "auth.token.revoked"  # noqa: S105 - an action name
API_KEY_CREATED = "apikey.created"
API_KEY_REVOKED = "apikey.revoked"
RATE_LIMITED = "auth.rate-limited"
EXCHANGE_ALLOWED = "credential.exchange.allowed"
EXCHANGE_REFUSED = "credential.exchange.refused"


def event(*, actor: str, identity: Mapping[str, Any], action: str, kind: str,
          name: str | None, changes: Mapping[str, Any] | None = None,
          tenant: str | None = None, source_ip: str | None = None,
          request_id: str | None = None, namespace: str | None = None,
          actor_kind: events.ActorKind = events.ActorKind.USER) -> events.AuditEvent:
    """One auth event (pure). `identity`: how the actor authenticated (`events.*_identity`)."""
    return events.AuditEvent(
        tenant=tenant, actor=actor[:254] or "anonymous", actor_kind=actor_kind,
        resource_namespace=namespace,
        identity=dict(identity), action=action, resource_kind=kind, resource_name=name,
        changes=dict(changes or {}), source_ip=_address(source_ip),
        request_id=request_id or None, component=COMPONENT)


def _address(value: str | None) -> str | None:
    try:
        return str(ipaddress.ip_address(value)) if value else None
    except ValueError:
        return None


class AuthLedger:
    """Where the API's routes send auth events (a no-op with --no-ledger)."""

    def __init__(self, recorder: Recorder | None) -> None:
        self.recorder = recorder
        self._limited: dict[str, float] = {}

    @property
    def enabled(self) -> bool:
        return self.recorder is not None

    async def record(self, entry: events.AuditEvent) -> None:
        if self.recorder is not None:
            await self.recorder.record(entry)

    async def rate_limited(self, bucket: str, entry: events.AuditEvent) -> None:
        """Record a tripped limit at most once a minute per bucket (per replica)."""
        now = time.monotonic()
        if now - self._limited.get(bucket, -RATE_LIMIT_RECORD_EVERY) < RATE_LIMIT_RECORD_EVERY:
            return
        if len(self._limited) > 10_000:
            self._limited.clear()
        self._limited[bucket] = now
        await self.record(entry)
