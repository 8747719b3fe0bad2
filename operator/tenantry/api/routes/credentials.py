"""Credentials reach workloads: `POST /v1/credentials/exchange`, and their metadata.

A pod presents its projected ServiceAccount token (audience `tenantry-api`) as a Bearer token
with `{"namespace","name","field"?}`; the API asks the apiserver who that is
(`tokenreview`), applies the Credential's scope (`exchange.decide`), reads the ciphertext
Secret with its own identity and decrypts it in memory with the mounted keyring, and answers
`{"data": {field: value}, "keyId", "generation"}` with `Cache-Control: no-store`. Every
exchange, allowed or refused, is a ledger entry on the tenant's chain (who, which Credential
and fields, from where; never a value). Each ServiceAccount has its own rate limit.

Refusals say what is wrong without telling one workload about another's Credentials: a
ServiceAccount asking outside its namespace is refused before any lookup; 404 only for a
Credential of its own namespace that does not exist.

`GET /v1/tenants/{tenant}/credentials` and `.../credentials/{namespace}/{name}` (viewer and
up): metadata only (scope, fields, key id, generation, last exchange), never values.
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from tenantry.api import audit, deps, exchange, metrics, participants, store, tokenreview
from tenantry.api.routes import participants as participant_routes
from tenantry.api.tokens import scoped
from tenantry.crypto import errors as crypto_errors
from tenantry.kubeapi import ApiError
from tenantry.ledger import events
from tenantry.model import credential
from tenantry.model.tenant import Role

router = APIRouter(tags=["credentials"])
log = logging.getLogger("tenantry.api.credentials")

NAMESPACE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
VIEWER = deps.tenant_role(Role.VIEWER)


class ExchangeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str = Field(min_length=1, max_length=63, pattern=NAMESPACE)
    name: str = Field(min_length=1, max_length=253, pattern=NAME)
    field: str | None = Field(default=None, min_length=1, max_length=253,
                              pattern=credential.DATA_KEY_PATTERN,
                              description="One field; all of them when omitted.")


class ExchangeResponse(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    data: dict[str, str] = Field(description="Field -> value (UTF-8 text; see base64Fields).")
    key_id: str = Field(serialization_alias="keyId")
    generation: int
    base64_fields: list[str] = Field(
        default_factory=list, serialization_alias="base64Fields",
        description="Fields whose value is not UTF-8 text, given base64-encoded.")


_EXCHANGE_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "no ServiceAccount token, the apiserver does not accept it for "
                         "audience tenantry-api, or it lives longer than the API takes"},
    403: {"description": "this ServiceAccount may not use this Credential"},
    404: {"description": "no such Credential (or field) in the ServiceAccount's namespace"},
    409: {"description": "the Credential is not encrypted yet, or its ciphertext is damaged"},
    429: {"description": "this ServiceAccount's exchange rate limit"},
    503: {"description": "the apiserver or the keyring is unavailable"}}


def _bearer(request: Request) -> str:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPException(status_code=401, detail="a ServiceAccount token is required",
                            headers={"WWW-Authenticate": 'Bearer realm="tenantry"'})
    return token.strip()


class _Refusal(Exception):
    def __init__(self, status: int, reason: str, *, tenant: str | None = None) -> None:
        super().__init__(reason)
        self.status, self.reason, self.tenant = status, reason, tenant


async def _tenant_of(svc: deps.Services, namespace: str) -> tuple[str, str]:
    """(tenant name, tenant UID) of `namespace`: its tenant label, confirmed by that Tenant."""
    name = await svc.credentials.namespace_tenant(namespace)
    members = svc.directory.get(name) if name is not None else None
    if members is None or not members.uid or namespace not in members.namespaces:
        raise _Refusal(409, f"namespace {namespace} belongs to no Tenant")
    return members.name, members.uid


async def _exchange(svc: deps.Services, account: tokenreview.Account,
                    body: ExchangeRequest) -> tuple[str, ExchangeResponse]:
    settings = svc.settings
    if account.namespace not in (body.namespace, settings.tenantry_namespace):
        raise _Refusal(403, "a ServiceAccount may only use Credentials of its own namespace")
    obj = await svc.credentials.credential(body.namespace, body.name)
    if obj is None:
        raise _Refusal(404, f"no Credential {body.namespace}/{body.name}")
    tenant_name, tenant_uid = await _tenant_of(svc, body.namespace)
    too_long = exchange.lifetime_refusal(account, settings.max_token_lifetime)
    if too_long is not None:
        raise _Refusal(too_long.status, too_long.reason, tenant=tenant_name)
    decision = exchange.decide(obj, account, settings.tenantry_namespace)
    if not decision.allowed:
        raise _Refusal(decision.status, decision.reason, tenant=tenant_name)
    return tenant_name, await _open(svc, obj, body, tenant_name, tenant_uid)


async def _open(svc: deps.Services, obj: dict[str, Any], body: ExchangeRequest,
                tenant_name: str, tenant_uid: str) -> ExchangeResponse:
    """Read the Credential's ciphertext and decrypt the asked fields in memory."""
    where = exchange.ready(obj)
    if where is None:
        raise _Refusal(409, "the Credential is not encrypted yet; retry once it is Ready",
                       tenant=tenant_name)
    secret = await svc.credentials.secret(obj, where)
    if secret is None:
        raise _Refusal(409, "the Credential's ciphertext Secret is missing (the operator "
                            "restores it)", tenant=tenant_name)
    try:
        ring = svc.keys.get()
    except crypto_errors.KeyringError:
        raise _Refusal(503, "the API has no usable keyring", tenant=tenant_name) from None
    try:
        # In line: a few AES-GCM openings of small values take microseconds (the tenant key's
        # HKDF is cached), less than a hop to a worker thread.
        values = exchange.open_fields(ring, obj, secret, tenant_uid, body.field)
    except KeyError:
        raise _Refusal(404, f"the Credential has no field {body.field!r}",
                       tenant=tenant_name) from None
    except exchange.Unopenable as unopenable:
        svc.credentials.forget(obj, where)
        raise _Refusal(409, str(unopenable), tenant=tenant_name) from None
    text, encoded = exchange.as_text(values)
    return ExchangeResponse(data=text, key_id=where.key_id, generation=where.generation,
                            base64_fields=encoded)


def _exchange_event(request: Request, account: tokenreview.Account | None,
                    body: ExchangeRequest, *, tenant: str | None, allowed: bool,
                    fields: list[str], reason: str = "") -> events.AuditEvent:
    identity: dict[str, Any] = {"kind": "serviceaccount"}
    if account is not None:
        identity |= {"uid": account.uid, **({"pod": account.pod} if account.pod else {})}
    changes: dict[str, Any] = {"fields": fields} if allowed else {
        "reason": reason[:200], **({"field": body.field} if body.field else {})}
    return audit.event(
        actor=account.username if account else "anonymous", identity=identity,
        action=audit.EXCHANGE_ALLOWED if allowed else audit.EXCHANGE_REFUSED,
        kind=credential.KIND, name=body.name, namespace=body.namespace, tenant=tenant,
        changes=changes, source_ip=deps.client_address(request),
        request_id=deps.request_id(request),
        actor_kind=events.ActorKind.SERVICEACCOUNT if account else events.ActorKind.USER)


@router.post("/v1/credentials/exchange", response_model=ExchangeResponse,
             response_model_by_alias=True, responses=_EXCHANGE_ERRORS)
async def exchange_credential(body: ExchangeRequest, request: Request, response: Response,
                              svc: deps.CurrentServices) -> ExchangeResponse:
    """A workload's ServiceAccount token for the value of a Credential it may use."""
    token = _bearer(request)
    response.headers["Cache-Control"] = "no-store"
    if scoped.kind_of(token) == scoped.PARTICIPANT:
        return await _participant_exchange(token, body, request, svc)
    try:
        account = await svc.reviewer.review(token)
    except tokenreview.ReviewUnavailable as unavailable:
        metrics.EXCHANGES.labels("error").inc()
        log.warning("token review unavailable: %s (request %s)", unavailable,
                    deps.request_id(request))
        raise HTTPException(status_code=503, detail="cannot review the token now; retry") \
            from None
    if account is None:
        metrics.EXCHANGES.labels("refused").inc()
        await svc.ledger.record(_exchange_event(
            request, None, body, tenant=None, allowed=False, fields=[],
            reason="token refused by the apiserver (invalid, expired or another audience)"))
        raise HTTPException(status_code=401, detail="the apiserver does not accept this token "
                                                    "for audience tenantry-api",
                            headers={"WWW-Authenticate": 'Bearer realm="tenantry", '
                                                         'error="invalid_token"'})
    decision = await store.take_token(svc.pool, f"exchange-sa:{account.username}",
                                      svc.settings.exchange_limit)
    deps.add_response_headers(request, decision.headers())
    if not decision.allowed:
        metrics.RATE_LIMITED.labels("exchange").inc()
        raise HTTPException(status_code=429, detail="exchange rate limit of this "
                                                    "ServiceAccount", headers=decision.headers())
    try:
        tenant_name, answer = await _exchange(svc, account, body)
    except _Refusal as refusal:
        metrics.EXCHANGES.labels("error" if refusal.status >= 500 else "refused").inc()
        log.info("exchange refused: %s for %s/%s: %s (request %s)", account.username,
                 body.namespace, body.name, refusal.reason, deps.request_id(request))
        await svc.ledger.record(_exchange_event(request, account, body, tenant=refusal.tenant,
                                                allowed=False, fields=[],
                                                reason=refusal.reason))
        raise HTTPException(status_code=refusal.status, detail=refusal.reason) from None
    except ApiError as error:
        metrics.EXCHANGES.labels("error").inc()
        log.warning("exchange: apiserver error %s (request %s)", error.status,
                    deps.request_id(request))
        raise HTTPException(status_code=503, detail="the apiserver is unavailable; retry") \
            from None
    metrics.EXCHANGES.labels("allowed").inc()
    log.info("exchange: %s read %s/%s (%d field(s)) (request %s)", account.username,
             body.namespace, body.name, len(answer.data), deps.request_id(request))
    await svc.ledger.record(_exchange_event(request, account, body, tenant=tenant_name,
                                            allowed=True, fields=sorted(answer.data)))
    return answer


async def _reader(tenant: str, namespace: str, name: str, request: Request,
                  svc: deps.Services) -> deps.TenantAccess | participants.Grant:
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() == "bearer" and scoped.kind_of(token) == scoped.PARTICIPANT:
        grant = await participants.verify(token, svc)
        if not grant.allows(tenant, namespace, name):
            raise HTTPException(status_code=403, detail=deps.PARTICIPANT_ONLY)
        await participant_routes.record_use(svc, request, grant, "read")
        return grant
    who = await deps.caller(request, svc)
    return await deps.require_role(tenant, Role.VIEWER, request, who, svc)


async def _participant_exchange(token: str, body: ExchangeRequest, request: Request,
                                svc: deps.Services) -> ExchangeResponse:
    """A participant token (role member) for its one participant-scoped Credential."""
    grant = await participants.verify(token, svc)
    try:
        if grant.role != "member" or (grant.namespace, grant.name) != (body.namespace,
                                                                        body.name):
            raise _Refusal(403, deps.PARTICIPANT_ONLY, tenant=grant.tenant)
        obj = await svc.credentials.credential(body.namespace, body.name)
        if obj is None:
            raise _Refusal(404, f"no Credential {body.namespace}/{body.name}",
                           tenant=grant.tenant)
        if (obj.get("spec") or {}).get("scope") != credential.Scope.PARTICIPANT.value:
            raise _Refusal(403, "only a participant-scoped Credential can be exchanged with "
                                "a participant token", tenant=grant.tenant)
        tenant_name, tenant_uid = await _tenant_of(svc, body.namespace)
        if tenant_name != grant.tenant:
            raise _Refusal(403, deps.PARTICIPANT_ONLY, tenant=grant.tenant)
        answer = await _open(svc, obj, body, tenant_name, tenant_uid)
    except _Refusal as refusal:
        metrics.EXCHANGES.labels("refused").inc()
        await svc.ledger.record(audit.event(
            actor=f"participant:{grant.jti}", identity={"kind": "participant",
                                                         "jti": grant.jti},
            action=audit.EXCHANGE_REFUSED, kind=credential.KIND, name=body.name,
            namespace=body.namespace, tenant=grant.tenant,
            changes={"reason": refusal.reason[:200]}, source_ip=deps.client_address(request),
            request_id=deps.request_id(request)))
        raise HTTPException(status_code=refusal.status, detail=refusal.reason) from None
    metrics.EXCHANGES.labels("allowed").inc()
    await participant_routes.record_use(svc, request, grant, "exchange")
    return answer


# -- metadata ----------------------------------------------------------------------------------

class CredentialInfo(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    namespace: str
    name: str
    scope: str
    fields: list[str]
    allowed_service_accounts: list[str] = Field(serialization_alias="allowedServiceAccounts")
    key_id: str | None = Field(serialization_alias="keyId")
    generation: int | None
    ready: bool
    last_exchange_time: str | None = Field(serialization_alias="lastExchangeTime")


class CredentialList(BaseModel):
    items: list[CredentialInfo]


def _info(obj: dict[str, Any], last: dict[tuple[str, str], str]) -> CredentialInfo:
    metadata, spec = obj.get("metadata") or {}, obj.get("spec") or {}
    where = exchange.ready(obj)
    conditions = {c.get("type"): c.get("status")
                  for c in (obj.get("status") or {}).get("conditions") or ()}
    key = (str(metadata.get("namespace")), str(metadata.get("name")))
    return CredentialInfo(
        namespace=key[0], name=key[1], scope=str(spec.get("scope") or "caller"),
        fields=list(where.fields) if where else [],
        allowed_service_accounts=list(spec.get("allowedServiceAccounts") or []),
        key_id=where.key_id if where else None, generation=where.generation if where else None,
        ready=conditions.get("Ready") == "True", last_exchange_time=last.get(key))


async def _held_namespaces(svc: deps.Services, tenant: str) -> list[str]:
    held: list[str] = await svc.credentials.held(svc.directory, tenant)
    return held


async def _last_exchanges(svc: deps.Services, tenant: str) -> dict[tuple[str, str], str]:
    if svc.ledger_pool is None:
        return {}
    rows = await store.last_exchanges(svc.ledger_pool, tenant, audit.EXCHANGE_ALLOWED)
    return {(row["namespace"], row["name"]): row["at"].isoformat() for row in rows}


@router.get("/v1/tenants/{tenant}/credentials", response_model=CredentialList,
            response_model_by_alias=True,
            responses={401: {"description": "no valid access token or API key"},
                       403: {"description": "no role in this tenant"}})
async def list_credentials(access: Annotated[deps.TenantAccess, VIEWER],
                           svc: deps.CurrentServices) -> CredentialList:
    """The tenant's Credentials, metadata only."""
    found: list[dict[str, Any]] = []
    for namespace in await _held_namespaces(svc, access.tenant):
        found += svc.credentials.in_namespace(namespace)
    last = await _last_exchanges(svc, access.tenant)
    items = [_info(obj, last) for obj in found]
    return CredentialList(items=sorted(items, key=lambda i: (i.namespace, i.name)))


@router.get("/v1/tenants/{tenant}/credentials/{namespace}/{name}",
            response_model=CredentialInfo, response_model_by_alias=True,
            responses={401: {"description": "no valid access token or API key"},
                       403: {"description": "no role in this tenant"},
                       404: {"description": "no such Credential in the tenant"}})
async def get_credential(tenant: Annotated[str, PathParam(max_length=253,
                                                         pattern=deps.TENANT_NAME)],
                         namespace: Annotated[str, PathParam(max_length=63, pattern=NAMESPACE)],
                         name: Annotated[str, PathParam(max_length=253, pattern=NAME)],
                         request: Request, svc: deps.CurrentServices) -> CredentialInfo:
    """One Credential of the tenant, metadata only (viewers and up, or a participant token
    issued for exactly this Credential)."""
    access = await _reader(tenant, namespace, name, request, svc)
    if namespace not in await _held_namespaces(svc, access.tenant):
        raise HTTPException(status_code=404, detail="no such Credential in this tenant")
    obj = await svc.credentials.credential(namespace, name)
    if obj is None:
        raise HTTPException(status_code=404, detail="no such Credential in this tenant")
    return _info(obj, await _last_exchanges(svc, access.tenant))
