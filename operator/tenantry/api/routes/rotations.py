"""`POST /v1/tenants/{tenant}/rotations`: a tenant admin asks for a rotation now.

A RotationPolicy rotates on demand when its `spec.trigger` changes (`tenantry.model.rotation`).
This route changes it for people who hold the admin role in the API but no kubectl access: the
API checks that the policy's namespace is one of the tenant's (read from the Tenant itself, as
the API's own identity, so a namespace named by the caller is never trusted), then merge-patches
`spec.trigger` to a new unique value with field manager `tenantry-api`. The API's ServiceAccount
may get and patch RotationPolicies and nothing more (manifests/api/rbac.yaml); who asked is the
ledger's `rotation.trigger.requested` entry on the tenant's chain, with the policy, the old and
the new trigger.

`request_rotation` is shared with the pipelines' signed hook (`routes.hooks`): both end in the
same check, patch and ledger entry, differing only in who is named as having asked.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Request
from kubernetes_asyncio import client as aclient
from pydantic import BaseModel, ConfigDict, Field

from tenantry.api import audit, deps
from tenantry.ledger import events
from tenantry.model import common
from tenantry.model import rotation as rotation_model
from tenantry.model import tenant as tenant_model
from tenantry.model.tenant import Role

router = APIRouter(tags=["rotations"])
log = logging.getLogger("tenantry.api.rotations")

ADMIN = deps.tenant_role(Role.ADMIN)
PATCH_ATTEMPTS = 5
FIELD_MANAGER = "tenantry-api"
TRIGGER_REQUESTED = "rotation.trigger.requested"
POLICY_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"

_ERRORS: dict[int | str, dict[str, str]] = {
    401: {"description": "no valid access token or API key"},
    403: {"description": "not an admin of this tenant"},
    404: {"description": "no such RotationPolicy in the tenant's namespaces"},
    429: {"description": "the tenant's request quota is used up"},
    502: {"description": "the Kubernetes API refused or failed the change"},
    503: {"description": "the API runs without a Kubernetes client"}}


class RotationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str = Field(max_length=317, pattern=POLICY_PATTERN,
                        description="The RotationPolicy as NAMESPACE/NAME; the namespace must be "
                                    "one of the tenant's.")

    @property
    def namespace(self) -> str:
        return self.policy.partition("/")[0]

    @property
    def name(self) -> str:
        return self.policy.partition("/")[2]


class RotationRequested(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    policy: str
    trigger: str = Field(description="The value spec.trigger was set to.")
    previous_trigger: str | None = Field(serialization_alias="previousTrigger")
    generation: int = Field(description="The policy's metadata.generation after the change "
                                        "(its status.observedGeneration reaches it once the "
                                        "operator saw the trigger).")


@dataclasses.dataclass(frozen=True)
class Requester:
    """Who asked, as the ledger names them."""

    actor: str
    identity: Mapping[str, Any]
    source_ip: str
    request_id: str
    actor_kind: events.ActorKind = events.ActorKind.USER


def new_trigger(origin: str, request_id: str, now: datetime.datetime) -> str:
    """A spec.trigger value no earlier request produced: where from, when (microseconds),
    and the request's id (pure)."""
    stamp = now.astimezone(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    return f"{origin}:{stamp}:{request_id}"[:rotation_model.MAX_TRIGGER]


def _namespaces(tenant_object: Mapping[str, Any]) -> set[str]:
    spec = tenant_object.get("spec") or {}
    return {str(entry.get("name")) for entry in spec.get("namespaces") or []
            if isinstance(entry, dict)}


def _upstream(error: aclient.ApiException, what: str) -> HTTPException:
    log.warning("kubernetes refused %s: %s %s", what, error.status, error.reason)
    return HTTPException(status_code=502, detail=(
        f"the Kubernetes API answered {error.status} to {what}; nothing was changed"))


async def request_rotation(svc: deps.Services, tenant: str, policy: RotationRequest,
                           who: Requester, *, origin: str) -> RotationRequested:
    """Set `policy`'s spec.trigger if its namespace is `tenant`'s, and record who asked."""
    if svc.kube is None:
        raise HTTPException(status_code=503, detail="this API has no Kubernetes client")
    custom = aclient.CustomObjectsApi(svc.kube)
    missing = HTTPException(status_code=404, detail=(
        f"policy: no RotationPolicy {policy.policy} in tenant {tenant}'s namespaces"))
    try:
        owner = await custom.get_cluster_custom_object(
            common.GROUP, common.VERSION, tenant_model.PLURAL, tenant)
    except aclient.ApiException as error:
        if error.status == 404:
            raise missing from None
        raise _upstream(error, f"reading Tenant {tenant}") from None
    if policy.namespace not in _namespaces(owner):
        raise missing  # the same answer as a policy that does not exist: nothing to learn
    # The precondition keeps `previous` (for the ledger) true; the operator writes the policy's
    # status all the time, which also moves its resourceVersion, so a conflict is retried.
    for attempt in range(PATCH_ATTEMPTS):
        try:
            current = await custom.get_namespaced_custom_object(
                common.GROUP, common.VERSION, policy.namespace, rotation_model.PLURAL,
                policy.name)
            previous = (current.get("spec") or {}).get("trigger")
            trigger = new_trigger(origin, who.request_id, datetime.datetime.now(datetime.UTC))
            patched = await custom.patch_namespaced_custom_object(
                common.GROUP, common.VERSION, policy.namespace, rotation_model.PLURAL,
                policy.name,
                {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                 "spec": {"trigger": trigger}},
                # The generated client would pick JSON Patch for a dict body; its stubs omit
                # the (documented) override.
                field_manager=FIELD_MANAGER,
                _content_type="application/merge-patch+json")  # type: ignore[call-arg]
            break
        except aclient.ApiException as error:
            if error.status == 404:
                raise missing from None
            if error.status == 409 and attempt + 1 < PATCH_ATTEMPTS:
                continue
            if error.status == 409:
                raise HTTPException(status_code=409, detail=(
                    f"policy: {policy.policy} kept changing while the trigger was set; try "
                    "again")) from None
            raise _upstream(error, f"setting spec.trigger of {policy.policy}") from None
    log.info("rotation of %s requested in tenant %s by %s (trigger %s, request %s)",
             policy.policy, tenant, who.actor, trigger, who.request_id)
    entry = audit.event(
        actor=who.actor, identity=who.identity, action=TRIGGER_REQUESTED,
        kind=rotation_model.KIND, name=policy.name, tenant=tenant,
        changes={"spec.trigger": {"from": previous, "to": trigger}, "via": origin},
        source_ip=who.source_ip, request_id=who.request_id)
    await svc.ledger.record(entry.model_copy(update={"resource_namespace": policy.namespace,
                                                     "actor_kind": who.actor_kind}))
    return RotationRequested(policy=policy.policy, trigger=trigger,
                             previous_trigger=previous if isinstance(previous, str) else None,
                             generation=int(patched["metadata"]["generation"]))


@router.post("/v1/tenants/{tenant}/rotations", status_code=202,
             response_model=RotationRequested, response_model_by_alias=True,
             responses={**_ERRORS, 409: {"description": "the policy changed meanwhile"}})
async def rotate(body: RotationRequest, request: Request,
                 access: Annotated[deps.TenantAccess, ADMIN],
                 svc: deps.CurrentServices) -> RotationRequested:
    """Rotate now: set the RotationPolicy's spec.trigger (the operator does the rest)."""
    who = access.caller
    return await request_rotation(svc, access.tenant, body, Requester(
        actor=who.name, identity=who.ledger_identity(), source_ip=deps.client_address(request),
        request_id=deps.request_id(request)), origin="api")
