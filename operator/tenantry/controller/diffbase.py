"""Where kopf keeps what it last handled of each object (its diff base): for Credentials, in the
status it writes anyway; for every other kind, in an annotation as before. And kopf's progress
records, which stay annotations, without their marker on Credentials.

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

Credentials handled by an earlier operator keep their annotation until it is no longer needed:
`fetch` falls back to it, the next handled change writes the status field, and the annotation
is then ignored (never part of the compared essence, like every `tenantry.dev/` annotation
kopf's own storages write: progress records of retries).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, cast

import kopf

from tenantry.model import common
from tenantry.model import credential as credential_model

KEY = "last-handled-configuration"
STATUS_FIELD = "handledConfiguration"


def in_status(body: kopf.Body) -> bool:
    """Whether `body`'s diff base lives in its status (Credentials)."""
    return body.get("kind") == credential_model.KIND and \
        str(body.get("apiVersion", "")).startswith(f"{common.GROUP}/")


class DiffBase(kopf.AnnotationsDiffBaseStorage):
    """kopf's annotation storage, but in `status.handledConfiguration` for Credentials."""

    def __init__(self) -> None:
        super().__init__(prefix=common.GROUP, key=KEY)

    def build(self, *, body: kopf.Body,
              extra_fields: Iterable[Any] | None = None) -> kopf.BodyEssence:
        essence = super().build(body=body, extra_fields=extra_fields)
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
            encoded = (body.get("status") or {}).get(STATUS_FIELD)
            if isinstance(encoded, str):
                return cast(kopf.BodyEssence, json.loads(encoded))
        return super().fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch,
              essence: kopf.BodyEssence) -> None:
        if not in_status(body):
            super().store(body=body, patch=patch, essence=essence)
            return
        patch.status[STATUS_FIELD] = json.dumps(essence, separators=(",", ":"))


class Progress(kopf.AnnotationsProgressStorage):
    """kopf's progress records in annotations, without the `kopf-managed` marker on Credentials
    (its only use, telling kopf's diff base to ignore the prefix, `DiffBase` does itself)."""

    def __init__(self) -> None:
        super().__init__(prefix=common.GROUP)

    def _store_marker(self, prefix: str, patch: kopf.Patch, body: kopf.Body) -> None:
        if not in_status(body):
            super()._store_marker(prefix=prefix, patch=patch, body=body)
