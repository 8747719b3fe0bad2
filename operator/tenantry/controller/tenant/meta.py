"""What every child of a Tenant shares: labels, owner reference, identity, name limits.

Children carry two operator-owned labels: the tenant's name (how the operator, the admission
webhook and NetworkPolicies find a tenant's objects) and `managed-by` (how the webhook recognises
objects that only the operator may change). Tenants can never set or change either: admission
refuses it, which is what makes selecting on them safe.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from tenantry.model import common, tenant

# A manifest as it goes to server-side apply: a plain JSON-able dict.
Manifest = dict[str, Any]

MANAGED_BY = "tenantry"

# Prefix of every object name the operator owns inside a tenant namespace; the webhook protects
# objects with this prefix, so tenants cannot pre-create or shadow them.
NAME_PREFIX = "tenantry-"

# Kubernetes name limits: DNS labels (namespaces, label values) and DNS subdomains (most objects).
MAX_LABEL_LENGTH = 63
MAX_NAME_LENGTH = 253


# What the operator last applied to a child, as a digest of the manifest: a resync compares it
# with what the watches saw, and sends no apply that would change nothing (`stamped`).
APPLIED_HASH_ANNOTATION = f"{common.GROUP}/applied-hash"


def applied_hash(manifest: Mapping[str, Any]) -> str:
    """A digest of a manifest as the operator applies it, its own stamp left out (pure)."""
    metadata = dict(manifest.get("metadata") or {})
    annotations = {key: value for key, value in (metadata.get("annotations") or {}).items()
                   if key != APPLIED_HASH_ANNOTATION}
    metadata.pop("annotations", None)
    if annotations:
        metadata["annotations"] = annotations
    canonical = json.dumps({**manifest, "metadata": metadata}, sort_keys=True,
                           separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def stamped(manifest: Mapping[str, Any]) -> Manifest:
    """A copy of `manifest` carrying its `applied_hash` in an annotation (pure)."""
    result = copy.deepcopy(dict(manifest))
    result["metadata"].setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = \
        applied_hash(manifest)
    return result


def tenant_labels(tenant_name: str) -> dict[str, str]:
    """The labels that mark an object as belonging to `tenant_name` and managed by Tenantry."""
    return {common.TENANT_LABEL: tenant_name, common.MANAGED_BY_LABEL: MANAGED_BY}


def managed_labels() -> dict[str, str]:
    """Labels of the shared, cluster-wide objects that belong to no single tenant."""
    return {common.MANAGED_BY_LABEL: MANAGED_BY}


def is_operator_made(obj: Mapping[str, Any], tenant_name: str) -> bool:
    """Whether `obj` (as read from the API) is one the operator applied for `tenant_name`.

    Both operator labels and the reserved name prefix: admission keeps tenants from setting the
    labels and from using the prefix, so a tenant's own object never passes for the operator's
    (and is therefore always checked as the tenant's).
    """
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    return (labels.get(common.TENANT_LABEL) == tenant_name
            and labels.get(common.MANAGED_BY_LABEL) == MANAGED_BY
            and str(metadata.get("name", "")).startswith(NAME_PREFIX))


def owner_reference(tenant_name: str, tenant_uid: str) -> dict[str, Any]:
    """An ownerReference to the Tenant, so the garbage collector removes children with it.

    `controller=True` lets other tooling tell which object manages this one; `blockOwnerDeletion`
    keeps a foreground delete of the Tenant waiting for its children. (Setting it needs `update`
    on `tenants/finalizers` when the OwnerReferencesPermissionEnforcement plugin is on.)
    """
    return {
        "apiVersion": common.API_VERSION,
        "kind": tenant.KIND,
        "name": tenant_name,
        "uid": tenant_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(name: str, *, tenant_name: str, tenant_uid: str | None,
             namespace: str | None = None) -> dict[str, Any]:
    """`metadata` of a tenant child; with `tenant_uid`, owned by the Tenant (garbage-collected)."""
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = tenant_labels(tenant_name)
    if tenant_uid is not None:
        meta["ownerReferences"] = [owner_reference(tenant_name, tenant_uid)]
    return meta


@dataclasses.dataclass(frozen=True, order=True)
class ObjectRef:
    """The identity of an applied object: enough to find it again and to delete it.

    `namespace` is "" for cluster-scoped objects, so that refs sort without None comparisons.
    The API group is kept with its version because the handler needs both to build the call.
    """

    api_version: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"

    def to_dict(self) -> dict[str, str]:
        """A JSON-able form, e.g. to remember what was applied in an annotation or status."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, str]) -> ObjectRef:
        """The inverse of `to_dict`."""
        return cls(api_version=data["api_version"], kind=data["kind"],
                   namespace=data.get("namespace", ""), name=data["name"])


def ref(manifest: Mapping[str, Any]) -> ObjectRef:
    """The identity of a manifest (or of an object read back from the API)."""
    meta = manifest["metadata"]
    return ObjectRef(api_version=manifest["apiVersion"], kind=manifest["kind"],
                     namespace=meta.get("namespace") or "", name=meta["name"])
