"""Where kopf keeps what it last handled of each object (its diff base): for Credentials and
Tenants, in the status they write anyway; for every other kind, in an annotation as before. And
kopf's progress records, which stay annotations, without their marker on those two kinds.

kopf compares each event's body with this diff base to tell a create or an update from a body
it has already handled. Kept in an annotation, it costs one more write per handled change: the
handler's status goes to the status subresource, the annotation to the object itself, two
PATCHes, the second of which the credentials webhook also saw. For a Credential, handled once at
creation and at each change, that was one of its five writes. Kept as
`status.handledConfiguration`, it rides in the same status PATCH as the handler's status.

It is also harder to forge there: the object's annotations are writable by anyone who may
patch the Credential (a tenant's admins), its status only by the operator.

kopf's progress storage also brands the object once with a `tenantry.dev/kopf-managed`
annotation, a write of its own on a Credential that needs nothing else; `Progress` leaves it
out on Credentials (their progress records are still annotations, written only when a handler
is retried, and `DiffBase` ignores them by prefix instead of by that marker).

A Tenant's handler writes its status itself, with a merge patch of its own, before kopf's patch
(Ready must not wait for kopf's round trip, see `tenant.handlers`): so kopf's store would be a
status PATCH of its own after it. The handler puts the diff base into its own status write
instead (`handled`, only once it has nothing left to retry) and tells `store` so (`written`),
which then leaves it out of kopf's patch. A Tenant handled at once then costs kopf only the
finalizer it needs for its deletionPolicy. Tenants are cluster-scoped objects only cluster
admins may write, but the status subresource still narrows who can forge the record to those
who may write a Tenant's status (the operator), as RBAC grants the two apart.

Objects handled by an earlier operator keep their annotation until it is no longer needed:
`fetch` falls back to it (only while the status says that operator handled the current
generation: an annotation alone is anybody's word, see `_handled_this_generation`), the next
handled change writes the status field, and the annotation is then ignored (never part of the
compared essence, like every `tenantry.dev/` annotation kopf's own storages write: progress
records of retries).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, cast

import kopf

from tenantry.model import common
from tenantry.model import credential as credential_model
from tenantry.model import tenant as tenant_model

KEY = "last-handled-configuration"
STATUS_FIELD = "handledConfiguration"


STATUS_KINDS = frozenset({credential_model.KIND, tenant_model.KIND})
"""The kinds whose diff base lives in `status.handledConfiguration`; their CRDs declare it."""

# uid -> the encoded diff base a handler wrote in its own status write, until kopf stores it.
_written: dict[str, str] = {}


def in_status(body: Mapping[str, Any]) -> bool:
    """Whether `body`'s diff base lives in its status (Credentials, Tenants)."""
    return body.get("kind") in STATUS_KINDS and \
        str(body.get("apiVersion", "")).startswith(f"{common.GROUP}/")


def _handled_this_generation(body: Mapping[str, Any]) -> bool:
    """Whether the operator's status says it handled `body`'s current generation: the only
    case in which an old annotation may still stand for the diff base (objects handled by an
    operator that kept it there). Anyone who may patch the object may write the annotation,
    also on create; only the operator writes the status (the status subresource: a create or
    an update of the object itself never carries one). Without this, a tenant's admin could
    create a Credential whose forged annotation claims it handled already, and kopf would skip
    it; or, on an object handled by an older operator, forge it together with a new spec."""
    observed = (body.get("status") or {}).get("observedGeneration")
    generation = (body.get("metadata") or {}).get("generation")
    return isinstance(observed, int) and observed == generation


def _encode(essence: kopf.BodyEssence) -> str:
    return json.dumps(essence, separators=(",", ":"))


def handled(body: kopf.Body) -> str | None:
    """The diff base for a handler to write in its own status write once `body` is handled, as
    kopf would store it then; None when `body` already records it (kopf stores nothing then)
    or its kind keeps it elsewhere. After the write succeeds, say so with `written`."""
    if not in_status(body):
        return None
    storage, progress = DiffBase(), Progress()
    essence = progress.clear(essence=storage.build(body=body))
    old = storage.fetch(body=body)
    if old is not None and progress.clear(essence=old) == essence:
        return None
    return _encode(essence)


def written(body: kopf.Body, encoded: str) -> None:
    """The handler's status write carried `encoded` (from `handled`): kopf's store of the same
    diff base for this object is then left out of its patch."""
    uid = (body.get("metadata") or {}).get("uid")
    if isinstance(uid, str):
        _written[uid] = encoded


class DiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation storage, but in `status.handledConfiguration` for Credentials and
    Tenants (for Tenants, written by the handler itself: `handled`)."""

    def __init__(self) -> None:
        super().__init__(prefix=common.GROUP, key=KEY)

    def build(self, *, body: kopf.Body,
              extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        fields = list(extra_fields or [])
        essence = super().build(body=_essential(body, fields), extra_fields=fields)
        if in_status(body):
            # The annotation storage marks this prefix as kopf's, so that its progress records
            # never count as a change; no marker is written here, so drop them explicitly.
            metadata = cast(dict[str, Any], essence).get("metadata") or {}
            annotations = metadata.get("annotations") or {}
            for key in [k for k in annotations if k.startswith(f"{self.prefix}/")]:
                del annotations[key]
            self.remove_empty_stanzas(essence)
        return essence

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        if in_status(body):
            status = body.get("status") or {}
            encoded = status.get(STATUS_FIELD)
            if isinstance(encoded, str):
                return cast(kopf.BodyEssence, json.loads(encoded))
            if not _handled_this_generation(body):
                return None  # a new object, or changed since: handled as new, never skipped
        return super().fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch,
              essence: kopf.BodyEssence) -> None:
        if not in_status(body):
            super().store(body=body, patch=patch, essence=essence)
            return
        encoded = _encode(essence)
        uid = (body.get("metadata") or {}).get("uid")
        if isinstance(uid, str) and _written.pop(uid, None) == encoded:
            return  # the handler's own status write carried it already
        patch.status[STATUS_FIELD] = encoded


def _top(field: Any) -> str:
    return field.split(".", 1)[0] if isinstance(field, str) else str(next(iter(field), ""))


def _essential(body: kopf.Body, extra_fields: list[Any]) -> kopf.Body:
    """`body` without what kopf's `build` deep-copies only to drop it: the status and every
    metadata field but labels and annotations (managedFields are most of a written object).
    kopf builds an essence on every event of every object it watches (two per write of a
    Tenant's status or finalizer in a rollout, bench/bench_tenants.py); the whole body was
    copied each time. The essence is the same (`test_diffbase`). Unchanged when a handler's
    field lies in those stanzas (kopf then picks it from the body)."""
    if any(_top(field) in ("metadata", "status") for field in extra_fields):
        return body
    light: dict[str, Any] = {key: value for key, value in body.items()
                             if key not in ("metadata", "status")}
    metadata = body.get("metadata") or {}
    light["metadata"] = {key: metadata[key] for key in ("labels", "annotations")
                         if key in metadata}
    return kopf.Body(cast(kopf.RawBody, light))


class Progress(kopf.AnnotationsProgressStorage):
    """kopf's progress records in annotations, without the `kopf-managed` marker on Credentials
    and Tenants (its only use, telling kopf's diff base to ignore the prefix, `DiffBase` does
    itself)."""

    def __init__(self) -> None:
        super().__init__(prefix=common.GROUP)

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        if not in_status(body):
            super()._store_marker(prefix=prefix, patch=patch, body=body)
