"""I/O of the ApiSigningKeys target (the thin shell around `signingkeys`): read Secret
tenantry-api-signing-keys and the API replicas' identity Leases, write the Secret.

The operator reads the Secret by name (its RBAC: get and patch on that one Secret, nothing else
in Tenantry's namespace) and holds the keys only to name them (their kids); it writes one change
per step as a JSON merge patch with the resourceVersion it read as a precondition, so a Secret
changed meanwhile is not overwritten (409: the next step reads it again). A new key is made
here, written, and forgotten. Leases are listed by label (`tenantry.dev/api-identity`) in
Tenantry's namespace; what they claim is public (kids).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import kopf

from tenantry.api import signing
from tenantry.api.tokens import rfc7517
from tenantry.controller import events
from tenantry.controller.credential import custody
from tenantry.controller.kubeapi import ApiError
from tenantry.controller.rotation import plan, schedule, signingkeys

logger = logging.getLogger(__name__)
MAX_EVENT_MESSAGE = 1024


def secret_facts(secret: Mapping[str, Any]) -> signingkeys.SigningSecret:
    """The public facts of the Secret as the API returns it (`data` base64-encoded);
    KeyFileError naming the member and the rule if it is not a valid signing keyring."""
    data = secret.get("data") or {}
    try:
        files = {str(k): base64.b64decode(str(v), validate=True) for k, v in data.items()}
    except (binascii.Error, ValueError):
        raise rfc7517.KeyFileError("a value of its data is not base64") from None
    ring = rfc7517.signing_keyring_from_files(files)
    return signingkeys.SigningSecret(
        resource_version=str((secret.get("metadata") or {}).get("resourceVersion") or ""),
        signing=ring.signing, kids=dict(ring.kids))


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
        renewed=schedule.parse_time(spec.get("renewTime")),
        duration=datetime.timedelta(seconds=duration if isinstance(duration, int)
                                    and 0 < duration <= 3600 else 0))


async def observe(memo: kopf.Memo, world: plan.World) -> signingkeys.SigningWorld:
    """The Secret and the Leases, read only for a policy in Tenantry's namespace (any other is
    refused by `signingkeys.problem` and reads nothing of Tenantry's)."""
    namespace = custody.operator_namespace()
    if world.namespace != namespace:
        return signingkeys.SigningWorld(base=world, secret=None, secret_problem="",
                                        replicas=())
    where = f"Secret {namespace}/{signingkeys.SECRET}"
    secret: signingkeys.SigningSecret | None = None
    problem = ""
    try:
        found = await memo.api.get("v1", "Secret", signingkeys.SECRET, namespace)
    except ApiError as error:
        found, problem = None, f"reading {where}: {error.status} {error.reason}"
    if found is None and not problem:
        problem = (f"{where} does not exist: create it with "
                   f"`{signingkeys.create_command(namespace)}` and mount it into the API "
                   "(--signing-keyring)")
    if found is not None:
        try:
            secret = secret_facts(found)
        except rfc7517.KeyFileError as error:
            problem = f"{where}: {error}"
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


def secret_patch(change: signingkeys.SigningChange,
                 key: bytes | None = None) -> dict[str, Any]:
    """The JSON merge patch of the Secret for `change` (`key`: the new PEM for "add"), with
    its resourceVersion precondition."""
    def encoded(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    value: str | None
    if change.action == "add":
        if key is None:
            raise ValueError("adding a version needs its key")
        field, value = change.version + rfc7517.KEY_SUFFIX, encoded(key)
    elif change.action == "promote":
        field, value = rfc7517.SIGNING_FILE, encoded(change.version.encode("ascii"))
    elif change.action == "retire":
        field, value = change.version + rfc7517.KEY_SUFFIX, None
    else:
        raise ValueError(f"unknown signing keyring change {change.action!r}")
    return {"metadata": {"resourceVersion": change.resource_version}, "data": {field: value}}


async def write(memo: kopf.Memo, body: Mapping[str, Any],
                change: signingkeys.SigningChange) -> bool:
    """Write the Secret as `change` says, only if it is still the version read; False when the
    write failed (not a conflict: the timer tries again)."""
    namespace = custody.operator_namespace()
    key = rfc7517.private_pem(rfc7517.generate()) if change.action == "add" else None
    try:
        await memo.api.merge_patch("v1", "Secret", signingkeys.SECRET,
                                   secret_patch(change, key), namespace=namespace)
    except ApiError as error:
        if error.status == 409:
            return True
        # Never the patch (it may hold a key): status and reason only.
        message = (f"writing Secret {namespace}/{signingkeys.SECRET} ({change.action} "
                   f"{change.version}) failed: {error.status} {error.reason}; retrying")
        logger.warning("rotation: %s", message)
        await events.post(memo.api, body, [events.warning("SigningKeysWriteFailed",
                                                          message[:MAX_EVENT_MESSAGE])])
        return False
    finally:
        del key
    return True
