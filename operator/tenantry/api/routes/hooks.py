"""`POST /v1/hooks/rotate/{tenant}`: a pipeline asks for a rotation, signed with a tenant secret.

No user and no token: the request is authenticated by an HMAC-SHA256 signature under a secret
shared with that one tenant (`--hook-secrets-dir`, one file per tenant; the rules are
`tenantry.api.hooks`). Checked in this order, each refusal naming the header and its rule:

1. a hook secret exists for the tenant, and the tenant exists (else 404, the same for both);
2. `Content-Type: application/json` (415) and at most 4 KiB of body (413);
3. an `Idempotency-Key` header (400);
4. `X-Tenantry-Timestamp` within 5 minutes of the API's clock and `X-Tenantry-Signature`
   matching `sha256=HMAC(secret, timestamp + "." + body)` (401), constant-time;
5. the body `{"policy": "NS/NAME"}` (422), then the delivery is remembered in PostgreSQL by its
   key before anything is done: the same key again does nothing and answers 200
   `{"replayed": true, ...}` with what the first delivery did; the same key with another body,
   or the same signature under another key (a captured request replayed with a fresh key), is
   refused with 409.

Then it is exactly `POST /v1/tenants/{tenant}/rotations` (`routes.rotations.request_rotation`),
recorded in the tenant's ledger chain with the actor `hook:<tenant>` and the idempotency key.
Refused deliveries are recorded too (`rotation.hook.refused`, at most once a minute per tenant,
so a flood cannot flood the ledger); each tenant's hook draws from its own request quota.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import pydantic
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from tenantry.api import audit, deps, hooks, store
from tenantry.api.routes import rotations

router = APIRouter(tags=["hooks"])
log = logging.getLogger("tenantry.api.hooks")

REFUSED = "rotation.hook.refused"


class HookAnswer(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    replayed: bool = Field(description="True: this Idempotency-Key was delivered before and "
                                       "nothing was done now; the rest is the first answer.")
    policy: str
    trigger: str
    previous_trigger: str | None = Field(default=None, serialization_alias="previousTrigger")
    generation: int


_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": HookAnswer, "description": "a replay: nothing done, the first answer"},
    400: {"description": "no or malformed Idempotency-Key"},
    401: {"description": "bad or missing signature, or a timestamp more than 5 min off"},
    404: {"description": "no hook for this tenant (no secret, or no such tenant), or no such "
                         "RotationPolicy in its namespaces"},
    409: {"description": "the Idempotency-Key was used with another body, the signature was "
                         "seen under another key, or the first delivery is still in progress"},
    413: {"description": "body over 4 KiB"},
    415: {"description": "Content-Type is not application/json"},
    429: {"description": "the tenant's request quota is used up"},
    502: {"description": "the Kubernetes API refused or failed the change"},
    503: {"description": "the API runs without a Kubernetes client"}}

_BODY_SCHEMA = {"requestBody": {"required": True, "content": {"application/json": {
    "schema": rotations.RotationRequest.model_json_schema()}}}}


async def _refuse(svc: deps.Services, request: Request, tenant: str,
                  refusal: hooks.Refused) -> HTTPException:
    log.info("hook delivery for tenant %s refused: %s (request %s)", tenant, refusal.reason,
             deps.request_id(request))
    await svc.ledger.rate_limited(f"hook-refused:{tenant}", audit.event(
        actor=f"hook:{tenant}", identity={"kind": "hook"}, action=REFUSED, kind="Hook",
        name="rotate", tenant=tenant, changes={"status": refusal.status,
                                               "reason": refusal.reason},
        source_ip=deps.client_address(request), request_id=deps.request_id(request)))
    return HTTPException(status_code=refusal.status, detail=refusal.reason)


def _secret(svc: deps.Services, tenant: str) -> bytes | None:
    directory = svc.settings.hook_secrets_dir
    if directory is None or not svc.directory.exists(tenant):
        return None
    try:
        return hooks.read_secret(directory, tenant)
    except hooks.WeakSecret as weak:
        log.warning("%s; the tenant's hook is off until it is replaced", weak)
        return None


@router.post("/v1/hooks/rotate/{tenant}", status_code=202, response_model=HookAnswer,
             response_model_by_alias=True, responses=_RESPONSES, openapi_extra=_BODY_SCHEMA)
async def rotate(
        tenant: Annotated[str, PathParam(min_length=1, max_length=253)], request: Request,
        svc: deps.CurrentServices,
        timestamp: Annotated[str | None, Header(
            alias=hooks.TIMESTAMP_HEADER,
            description="Unix seconds when the delivery was signed.")] = None,
        signature: Annotated[str | None, Header(
            alias=hooks.SIGNATURE_HEADER,
            description="sha256=<hex HMAC-SHA256 of timestamp + '.' + body>.")] = None,
        idempotency_key: Annotated[str | None, Header(
            alias=hooks.IDEMPOTENCY_HEADER,
            description="A unique value per delivery; a retry sends the same one.")] = None,
) -> Any:
    """Rotate a RotationPolicy of the tenant now, on a signed request from a pipeline."""
    secret = _secret(svc, tenant)
    if secret is None:
        raise HTTPException(status_code=404, detail=f"no hook for tenant {tenant}")
    decision = await store.take_token(svc.pool, f"hook:{tenant}", svc.settings.tenant_limit)
    deps.add_response_headers(request, decision.headers())
    if not decision.allowed:
        raise HTTPException(status_code=429, detail="tenant request quota exceeded",
                            headers=decision.headers())
    body = await request.body()
    try:
        hooks.check_content_type(request.headers.get("content-type"))
        hooks.check_size(request.headers.get("content-length"), body)
        key = hooks.idempotency_key(idempotency_key)
        hooks.verify(secret, timestamp=timestamp, signature=signature, body=body,
                     now=time.time())
    except hooks.Refused as refusal:
        raise await _refuse(svc, request, tenant, refusal) from None
    assert signature is not None  # verified
    try:
        wanted = rotations.RotationRequest.model_validate_json(body)
    except pydantic.ValidationError as invalid:
        raise HTTPException(status_code=422, detail=[
            {"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
            for e in invalid.errors(include_input=False, include_url=False)]) from None
    try:
        earlier = await store.claim_hook_delivery(
            svc.pool, tenant=tenant, idempotency_key=key, body_hash=hooks.body_digest(body),
            signature_hash=hooks.signature_digest(signature), policy=wanted.policy)
    except store.SignatureReused:
        raise await _refuse(svc, request, tenant, hooks.Refused(
            409, f"{hooks.SIGNATURE_HEADER}: this signed delivery was already received under "
                 f"another {hooks.IDEMPOTENCY_HEADER}")) from None
    if earlier is not None:
        return _replay(earlier, body, key)
    try:
        done = await rotations.request_rotation(svc, tenant, wanted, rotations.Requester(
            actor=f"hook:{tenant}", identity={"kind": "hook", "idempotency_key": key},
            source_ip=deps.client_address(request), request_id=deps.request_id(request)),
            origin="hook")
    except Exception:
        await store.release_hook_delivery(svc.pool, tenant=tenant, idempotency_key=key)
        raise
    answer = HookAnswer(replayed=False, **done.model_dump())
    await store.complete_hook_delivery(svc.pool, tenant=tenant, idempotency_key=key,
                                       outcome=done.model_dump())
    return answer


def _replay(earlier: store.HookDelivery, body: bytes, key: str) -> JSONResponse:
    if earlier.body_hash != hooks.body_digest(body):
        raise HTTPException(status_code=409, detail=(
            f"{hooks.IDEMPOTENCY_HEADER}: {key} was used for a different body; use a new key "
            "for a new request"))
    if earlier.outcome is None:
        raise HTTPException(status_code=409, detail=(
            f"{hooks.IDEMPOTENCY_HEADER}: the first delivery of {key} is still in progress"))
    answer = HookAnswer(replayed=True, **earlier.outcome)
    return JSONResponse(answer.model_dump(mode="json", by_alias=True), status_code=200)
