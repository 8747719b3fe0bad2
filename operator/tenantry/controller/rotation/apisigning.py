"""I/O of the ApiSigningKeys target (the thin shell around `signingkeys`): read the keyring's
public facts and the API replicas' identity Leases, and ask the API for the next change.

The operator never reads or writes Secret `tenantry-api-signing-keys` (its RBAC has no verb on
it): whoever holds those keys can mint access tokens for anyone. The API replicas publish what
is public about the keyring (versions, kids, which one signs, the Secret's resourceVersion) in
ConfigMap `tenantry-api-signing-state`, and apply the one request the operator writes there as
annotation `tenantry.dev/signing-request` (`signingstate`): the operator's RBAC is get and patch
on that ConfigMap by name, and manifests/api/signing-state.yaml holds it to that annotation.
Leases are listed by label (`tenantry.dev/api-identity`) in Tenantry's namespace; what they
claim is public (kids).
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from tenantry.api import signing, signingstate
from tenantry.controller import events
from tenantry.controller.rotation import plan, signingkeys
from tenantry.crypto import custody
from tenantry.kubeapi import ApiError
from tenantry.model import common

logger = logging.getLogger(__name__)
MAX_EVENT_MESSAGE = 1024


def facts(configmap: Mapping[str, Any] | None, namespace: str
          ) -> tuple[signingkeys.SigningSecret | None, str]:
    """(the keyring's facts as the API published them, or None and why not)."""
    where = f"ConfigMap {namespace}/{signingstate.CONFIGMAP}"
    if configmap is None:
        return None, (f"{where} does not exist: no API replica following the keyring "
                      "(--signing-keyring) has published it; the API creates it (its Role "
                      "tenantry-api-signing-keys)")
    text = (configmap.get("data") or {}).get(signingstate.STATE_KEY)
    if not text:
        return None, f"{where} has no data.{signingstate.STATE_KEY} yet"
    try:
        state = signingstate.parse_state(str(text))
    except signingstate.StateError as error:
        return None, str(error)
    if state.problem:
        return None, f"the API reports: {state.problem}"
    return signingkeys.SigningSecret(resource_version=state.resource_version,
                                     signing=state.signing, kids=dict(state.kids),
                                     retired=signingstate.retired_at(state.answer)), ""


def replica(lease: Mapping[str, Any]) -> signingkeys.Replica:
    """An identity Lease as the planner sees it (a malformed one is a stale one)."""
    meta, spec = lease.get("metadata") or {}, lease.get("spec") or {}
    notes = meta.get("annotations") or {}
    kids = str(notes.get(signing.VERIFICATION_KIDS) or "")
    duration = spec.get("leaseDurationSeconds")
    return signingkeys.Replica(
        name=str(spec.get("holderIdentity") or meta.get("name")),
        verification=frozenset(k for k in kids.split(",") if k),
        signing=str(notes.get(signing.SIGNING_KID) or ""),
        renewed=common.parse_time(spec.get("renewTime")),
        duration=datetime.timedelta(seconds=duration if isinstance(duration, int)
                                    and 0 < duration <= 3600 else 0))


async def observe(memo: kopf.Memo, world: plan.World) -> signingkeys.SigningWorld:
    """The published facts and the Leases, read only for a policy in Tenantry's namespace (any
    other is refused by `signingkeys.problem` and reads nothing of Tenantry's)."""
    namespace = custody.operator_namespace()
    if world.namespace != namespace:
        return signingkeys.SigningWorld(base=world, secret=None, secret_problem="",
                                        replicas=())
    secret: signingkeys.SigningSecret | None = None
    try:
        found = await memo.api.get("v1", "ConfigMap", signingstate.CONFIGMAP, namespace)
        secret, problem = facts(found, namespace)
    except ApiError as error:
        problem = (f"reading ConfigMap {namespace}/{signingstate.CONFIGMAP}: {error.status} "
                   f"{error.reason}")
    replicas: list[signingkeys.Replica] = []
    try:
        leases = await memo.api.list("coordination.k8s.io/v1", "Lease", namespace,
                                     label_selector=f"{signing.IDENTITY_LABEL}=true")
        replicas = [replica(lease) for lease in leases]
    except ApiError as error:
        logger.warning("rotation: listing API identity Leases failed: %s %s", error.status,
                       error.reason)
    return signingkeys.SigningWorld(base=world, secret=secret, secret_problem=problem,
                                    replicas=replicas)


def request_of(change: signingkeys.SigningChange) -> signingstate.Request:
    return signingstate.Request(action=change.action, version=change.version,
                                resource_version=change.resource_version)


async def ask(memo: kopf.Memo, body: Mapping[str, Any],
              change: signingkeys.SigningChange) -> None:
    """Ask the API for `change` (annotation tenantry.dev/signing-request, at the ConfigMap's
    resourceVersion); a request already asked is not asked again, and one the API refused or
    failed is reported as a Warning Event (the next step asks again on fresh facts)."""
    namespace = custody.operator_namespace()
    request = request_of(change)
    where = f"ConfigMap {namespace}/{signingstate.CONFIGMAP}"
    try:
        found = await memo.api.get("v1", "ConfigMap", signingstate.CONFIGMAP, namespace)
        if found is None:
            return  # observe said so (SigningKeysSecretUnavailable)
        meta = found.get("metadata") or {}
        if (meta.get("annotations") or {}).get(signingstate.REQUEST_ANNOTATION) == \
                signingstate.encode_request(request):
            published = _answer(found)
            if published is not None and published.id == request.id and \
                    published.result in (signingstate.REFUSED, signingstate.FAILED):
                message = (f"the API answered signing keyring request {request.id} with "
                           f"{published.result}: {published.message}")
                logger.warning("rotation: %s", message)
                await events.post(memo.api, body, [events.warning(
                    "SigningKeysRequestFailed", message[:MAX_EVENT_MESSAGE])])
            return
        await memo.api.merge_patch("v1", "ConfigMap", signingstate.CONFIGMAP, {
            "metadata": {"resourceVersion": str(meta.get("resourceVersion") or ""),
                         "annotations": {signingstate.REQUEST_ANNOTATION:
                                         signingstate.encode_request(request)}}},
            namespace=namespace)
        logger.info("rotation: asked the API for signing keyring request %s", request.id)
    except ApiError as error:
        if error.status == 409:  # the API published meanwhile: the next step asks again
            return
        message = (f"writing the signing keyring request {request.id} to {where} failed: "
                   f"{error.status} {error.reason}; retrying")
        logger.warning("rotation: %s", message)
        await events.post(memo.api, body, [events.warning("SigningKeysWriteFailed",
                                                          message[:MAX_EVENT_MESSAGE])])


def _answer(configmap: Mapping[str, Any]) -> signingstate.Answer | None:
    """The API's answer to the last request, if it published a readable one."""
    text = (configmap.get("data") or {}).get(signingstate.STATE_KEY)
    try:
        return signingstate.parse_state(str(text)).answer if text else None
    except signingstate.StateError:
        return None
