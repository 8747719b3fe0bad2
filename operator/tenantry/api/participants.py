"""Participant tokens: what one grants, checked on each use.

A participant token (`tokens.scoped`, typ `tenantry-participant+jwt`) names one tenant, one
resource (`credentials/NS/NAME`) and one role: `viewer` reads that Credential's metadata,
`member` may also exchange it when the Credential is participant-scoped. On every use the
token must verify, still be recorded for its tenant and neither expired nor revoked
(`store.live_participant_token`), so revoking its jti stops it on every replica at once; and
its issuer must still hold the admin role there (judged with the groups they were judged with
at issue; a disabled issuer holds none; one who issued it with an API key, through that key,
which must still be live), so a token dies with its issuer's access.
"""

from __future__ import annotations

import dataclasses
import re

from fastapi import HTTPException

from tenantry.api import deps, memberships, store
from tenantry.api.tokens import rfc9068, scoped
from tenantry.model.tenant import Role

ROLES = ("viewer", "member")
RESOURCE = re.compile(r"^credentials/([a-z0-9]([-a-z0-9]*[a-z0-9])?)/"
                      r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$")


@dataclasses.dataclass(frozen=True)
class Grant:
    jti: str
    tenant: str
    namespace: str
    name: str
    role: str
    issued_by: str
    expires_at: int

    @property
    def resource(self) -> str:
        return f"credentials/{self.namespace}/{self.name}"

    def allows(self, tenant: str, namespace: str, name: str) -> bool:
        return (self.tenant, self.namespace, self.name) == (tenant, namespace, name)


def parse_resource(resource: str) -> tuple[str, str] | None:
    """(namespace, name) of `credentials/NS/NAME`, else None."""
    found = RESOURCE.match(resource)
    return None if found is None else (found.group(1), found.group(3))


def grant_of(claims: dict[str, object]) -> Grant:
    """The grant a verified token's claims make (TokenInvalid when they are not one)."""
    tenant, resource, role = claims.get("tenant"), claims.get("resource"), claims.get("role")
    where = parse_resource(resource) if isinstance(resource, str) else None
    if not isinstance(tenant, str) or where is None or role not in ROLES:
        raise rfc9068.TokenInvalid("malformed participant claims")
    return Grant(jti=str(claims["jti"]), tenant=tenant, namespace=where[0], name=where[1],
                 role=str(role), issued_by=str(claims["sub"]),
                 expires_at=int(str(claims["exp"])))


async def verify(token: str, svc: deps.Services) -> Grant:
    """The live grant of a presented participant token, or a 401."""
    try:
        claims = scoped.verify(token, svc.settings.keys.verification_keys(),
                               svc.settings.policy, scoped.PARTICIPANT)
        grant = grant_of(claims)
    except rfc9068.TokenInvalid:
        raise HTTPException(status_code=401, detail="invalid participant token",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}) \
            from None
    found = await store.live_participant_token(svc.pool, grant.tenant, grant.jti)
    if found is None:
        raise HTTPException(status_code=401, detail="participant token revoked or expired",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if not found.key_live:
        raise HTTPException(status_code=401,
                            detail="participant token issued with an API key that is revoked "
                                   "or expired",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    issuer = deps.Caller(user=found.user, groups=found.groups, key=found.key)
    if found.user.disabled or not memberships.at_least(issuer.role_in(grant.tenant, svc),
                                                       Role.ADMIN):
        raise HTTPException(status_code=401,
                            detail="participant token's issuer no longer holds the admin role "
                                   "in its tenant",
                            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return grant
