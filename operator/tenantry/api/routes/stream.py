"""The live audit stream: `POST /v1/tickets`, then a WebSocket upgrade with the ticket.

Browsers cannot put an `Authorization` header on a WebSocket upgrade, and a token in a URL
ends up in logs. So a signed-in user first asks `POST /v1/tickets` `{"path"}` for a ticket
(`{"ticket", "expires_in": 30}`): a scoped token (`tokens.scoped`, typ `tenantry-ticket+jwt`)
bound to that user and that exact path, valid 30 seconds and good for one upgrade. The upgrade
`GET /v1/tenants/{tenant}/audit/stream?ticket=...[&after=SEQ]` (or `/v1/platform/audit/stream`
for platform admins) is refused before it is accepted (HTTP 403, no WebSocket) when the ticket
is missing, forged, expired, for another path, already used, or the user no longer holds the
role (tenant admin and up). Then every entry of the chain after `after` (default: from now)
is sent as one JSON text message (the shape of `GET .../audit` items), as it is appended
(`stream.Hub`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, WebSocket
from pydantic import BaseModel, ConfigDict, Field
from starlette.websockets import WebSocketDisconnect

from tenantry.api import deps, memberships, metrics, store
from tenantry.api.routes.audit import Entry
from tenantry.api.tokens import rfc9068, scoped
from tenantry.ledger import hashing
from tenantry.model.tenant import Role

router = APIRouter(tags=["audit"])
log = logging.getLogger("tenantry.api.stream")

TICKET_TTL = 30
PAGE = 200
TENANT_STREAM = re.compile(r"^/v1/tenants/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)/audit/stream$")
PLATFORM_STREAM = "/v1/platform/audit/stream"


class TicketRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(max_length=300, description="The stream path the ticket opens, e.g. "
                                                  "`/v1/tenants/acme/audit/stream`.")


class Ticket(BaseModel):
    ticket: str
    expires_in: int


def chain_of(path: str) -> str | None:
    """The chain a stream path follows (a tenant's, or the platform chain), else None."""
    if path == PLATFORM_STREAM:
        return hashing.PLATFORM_CHAIN
    found = TENANT_STREAM.match(path)
    return None if found is None else found.group(1)


def may_follow(who: deps.Caller, chain: str, svc: deps.Services) -> bool:
    if chain == hashing.PLATFORM_CHAIN:
        return who.is_platform_admin(svc.settings)
    return memberships.at_least(who.role_in(chain, svc), Role.ADMIN)


@router.post("/v1/tickets", response_model=Ticket,
             responses={401: {"description": "no valid access token"},
                        403: {"description": "an API key, or no admin role on that chain"},
                        422: {"description": "not a stream path"}})
async def ticket(body: TicketRequest, who: deps.SessionCaller,
                 svc: deps.CurrentServices) -> Ticket:
    """A one-time, 30-second ticket for one WebSocket upgrade of `path`."""
    chain = chain_of(body.path)
    if chain is None:
        raise HTTPException(status_code=422, detail="path: not an audit stream path "
                                                    "(/v1/tenants/{tenant}/audit/stream)")
    if not may_follow(who, chain, svc):
        raise HTTPException(status_code=403, detail="this stream needs the admin role in the "
                                                    "tenant (platform admin for the platform)")
    token, _, _ = scoped.issue(svc.settings.keys, svc.settings.policy, scoped.TICKET,
                               subject=str(who.user.id), ttl=TICKET_TTL, now=int(time.time()),
                               claims={"path": body.path, "username": who.user.username,
                                       "groups": list(who.groups)})
    return Ticket(ticket=token, expires_in=TICKET_TTL)


async def _admit(websocket: WebSocket, svc: deps.Services, ticket: str | None) -> str | None:
    """The chain to follow, or None after refusing the upgrade (HTTP 403)."""
    path = websocket.url.path
    chain = chain_of(path)
    try:
        if not ticket or chain is None:
            raise rfc9068.TokenInvalid("no ticket")
        claims = scoped.verify(ticket, svc.settings.keys.verification_keys(),
                               svc.settings.policy, scoped.TICKET)
        if claims.get("path") != path:
            raise rfc9068.TokenInvalid("ticket for another path")
        user = await store.get_user(svc.pool, uuid.UUID(str(claims["sub"])))
        if user is None or user.disabled:
            raise rfc9068.TokenInvalid("user gone")
        groups = claims.get("groups")
        who = deps.Caller(user=user, groups=tuple(str(g) for g in groups)
                          if isinstance(groups, list) else ())
        if not may_follow(who, chain, svc):
            raise rfc9068.TokenInvalid("no longer holds the role")
        if not await store.spend_jti(svc.pool, str(claims["jti"]), int(claims["exp"]),
                                     "ticket"):
            raise rfc9068.TokenInvalid("ticket already used")
    except (rfc9068.TokenInvalid, ValueError) as refused:
        reason = refused.reason if isinstance(refused, rfc9068.TokenInvalid) else "malformed"
        log.info("stream upgrade refused: %s (path %s)", reason, path)
        await websocket.close(code=1008)  # before accept: the server answers HTTP 403
        return None
    return chain


async def _follow(websocket: WebSocket, svc: deps.Services, chain: str,
                  after: int | None) -> None:
    pool = svc.ledger_pool
    if after is None:
        head = await pool.fetchval("SELECT seq FROM ledger.chain_heads WHERE chain = $1", chain)
        after = int(head or 0)
    subscription = svc.hub.subscribe(chain)
    metrics.STREAM_SUBSCRIBERS.inc()
    closed = asyncio.ensure_future(websocket.receive())  # a client close ends the stream
    try:
        while True:
            waiting = asyncio.ensure_future(subscription.wake.wait())
            done, _ = await asyncio.wait({waiting, closed}, return_when=asyncio.FIRST_COMPLETED)
            if closed in done:
                waiting.cancel()
                return
            subscription.wake.clear()
            # Arm the chain before reading it (ledger migration 5): an entry this read misses
            # will then notify.
            await pool.execute("SELECT ledger.watch($1)", chain)
            while True:
                rows = await store.ledger_entries(pool, chain, after=after, before=None,
                                                  newest_first=False, limit=PAGE, action=None,
                                                  actor=None)
                for row in rows:
                    entry = Entry.of(row)
                    await websocket.send_text(entry.model_dump_json(by_alias=True))
                    after = entry.seq
                if len(rows) < PAGE:
                    break
    finally:
        closed.cancel()
        svc.hub.unsubscribe(subscription)
        metrics.STREAM_SUBSCRIBERS.dec()


async def _stream(websocket: WebSocket, ticket: str | None, after: int | None) -> None:
    svc: deps.Services = websocket.app.state.services
    if svc.hub is None or svc.ledger_pool is None:
        await websocket.close(code=1011)
        return
    chain = await _admit(websocket, svc, ticket)
    if chain is None:
        return
    await websocket.accept()
    with contextlib.suppress(WebSocketDisconnect):
        await _follow(websocket, svc, chain, after)


Cursor = Annotated[int | None, Query(ge=0, le=2**53, description="Send entries after this "
                                                                 "sequence number first.")]
TicketParam = Annotated[str | None, Query(max_length=4096)]


@router.websocket("/v1/tenants/{tenant}/audit/stream")
async def tenant_stream(websocket: WebSocket, tenant: str, ticket: TicketParam = None,
                        after: Cursor = None) -> None:
    await _stream(websocket, ticket, after)


@router.websocket("/v1/platform/audit/stream")
async def platform_stream(websocket: WebSocket, ticket: TicketParam = None,
                          after: Cursor = None) -> None:
    await _stream(websocket, ticket, after)

