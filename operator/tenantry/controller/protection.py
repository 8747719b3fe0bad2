"""A ValidatingAdmissionPolicy that keeps tenants' hands off the operator's objects (pure).

RBAC cannot single out some objects of a kind: tenant admins may write NetworkPolicies and
RoleBindings of their own, so they could also edit or delete `tenantry-default-deny` or the
`tenantry:*` RoleBindings. This policy, evaluated in-process by the apiserver (no webhook to be
down), refuses in tenant namespaces:
  - UPDATE or DELETE of an object labelled as Tenantry's (managed-by=tenantry or a tenant label);
  - CREATE or UPDATE that puts those labels on an object, or uses the reserved name prefixes,
    so nobody can forge or pre-empt an operator object;
  - a RoleBinding that grants anything to everyone (system:authenticated, system:unauthenticated,
    system:serviceaccounts, system:anonymous): that would open the tenant to every other tenant
    (and, where anonymous requests are allowed, to the world). Sharing with a named user, group
    or ServiceAccount stays possible.
Exempt: the operator's own identity (learned at start-up), the control plane's controllers (the
namespace controller and garbage collector must delete children), and system:masters (break
glass). Everyone else, tenant owners included, is refused with a message saying why.

A policy the apiserver has just been given is enforced a moment later, once it has loaded and
compiled it. Until then nothing would stop a tenant member from binding everyone or deleting a
fence, so the operator grants no access before it has seen the policy refuse something: a
dry-run create of a LimitRange named `PROBE_NAME` in a tenant namespace (a kind the operator may
write in any namespace from the start), the one write of the operator's that the exemption does
not cover (`probe_object`, `refused_by_policy`). The name carries a fingerprint of this version
of the policy, so that after an upgrade the version still loaded is not taken for this one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from tenantry.model import common, tenant

POLICY_NAME = "tenantry-protect-managed-objects"
ADMISSION_API_VERSION = "admissionregistration.k8s.io/v1"

PROTECTED_RESOURCES = (
    ("networking.k8s.io", "networkpolicies"),
    ("rbac.authorization.k8s.io", "rolebindings"),
    ("rbac.authorization.k8s.io", "roles"),
    ("", "resourcequotas"),
    ("", "limitranges"),
    ("", "secrets"),
)

# Subjects that mean "everyone": a tenant may not bind them in its namespaces (nor may a Tenant
# make them members: one list for both, in the model).
EVERYONE_GROUPS = tenant.EVERYONE_GROUPS
EVERYONE_USERS = tenant.EVERYONE_USERS

# Controllers of the control plane act on tenant namespaces too (namespace deletion, GC).
CONTROL_PLANE_USERS = ("system:kube-controller-manager",)
CONTROL_PLANE_USER_PREFIX = "system:serviceaccount:kube-system:"


# The operator's probe: its name is reserved, so the policy refuses it once it is enforced.
# The name ends in a fingerprint of this version of the policy (`_fingerprint`), and only
# this version's matchCondition leaves that name to the validations: an apiserver still
# enforcing an earlier version (a moment after an upgrade re-applied it) exempts the
# operator's dry run as it exempts all its writes, so the probe is stored, "not enforced".
PROBE_PREFIX = "tenantry-protection-probe-"
_PROBE_PLACEHOLDER = "@PROBE@"


def probe_object(namespace: str) -> dict[str, Any]:
    """What the operator dry-run creates to learn whether the policy is enforced yet (valid,
    so that the apiserver's own validation lets it through to admission)."""
    return {"apiVersion": "v1", "kind": "LimitRange",
            "metadata": {"name": PROBE_NAME, "namespace": namespace},
            "spec": {"limits": [{"type": "Container", "max": {"cpu": "1"}}]}}


def refused_by_policy(status: int, message: str) -> bool:
    """Whether an API refusal came from this policy (the apiserver names it in the message)."""
    return status in (403, 422) and f"ValidatingAdmissionPolicy '{POLICY_NAME}'" in message


def _probe(name: str) -> str:
    # Only a dry run (nothing is stored either way) of a CREATE, where `object` is set.
    return ("request.dryRun == true && request.operation == 'CREATE' && "
            "request.resource.resource == 'limitranges' && "
            f"object.metadata.name == '{name}'")


def _cel_list(values: Sequence[str]) -> str:
    return "[" + ", ".join("'" + v.replace("'", "\\'") + "'" for v in values) + "]"


def _managed(var: str) -> str:
    return (f"has({var}.metadata.labels) && ("
            f"('{common.MANAGED_BY_LABEL}' in {var}.metadata.labels && "
            f"{var}.metadata.labels['{common.MANAGED_BY_LABEL}'] == 'tenantry') || "
            f"'{common.TENANT_LABEL}' in {var}.metadata.labels)")


def _reserved_name(var: str) -> str:
    return (f"{var}.metadata.name.startsWith('tenantry-') || "
            f"{var}.metadata.name.startsWith('tenantry:')")


def protection_policy(exempt_users: Sequence[str]) -> list[dict[str, Any]]:
    """The policy and its binding; `exempt_users` are the operator's identities."""
    return _policy_and_binding(exempt_users, PROBE_NAME)


def _policy_and_binding(exempt_users: Sequence[str], probe_name: str) -> list[dict[str, Any]]:
    exempt = sorted({*exempt_users, *CONTROL_PLANE_USERS})
    labels = {common.MANAGED_BY_LABEL: "tenantry"}
    policy = {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME, "labels": labels},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [{
                    "apiGroups": [group], "apiVersions": ["*"], "resources": [resource],
                    "operations": ["CREATE", "UPDATE", "DELETE"],
                } for group, resource in PROTECTED_RESOURCES],
            },
            "matchConditions": [{
                "name": "not-exempt",
                "expression": (
                    f"({_probe(probe_name)}) || ("
                    f"!(request.userInfo.username in {_cel_list(exempt)}) && "
                    f"!request.userInfo.username.startsWith('{CONTROL_PLANE_USER_PREFIX}') && "
                    "!('system:masters' in request.userInfo.groups))"
                ),
            }],
            "validations": [
                {
                    "expression": (f"request.operation == 'CREATE' || "
                                   f"!({_managed('oldObject')})"),
                    "message": "this object is managed by Tenantry: change the Tenant instead",
                    "reason": "Forbidden",
                },
                {
                    "expression": (f"request.operation == 'DELETE' || "
                                   f"!({_managed('object')} || {_reserved_name('object')})"),
                    "message": (f"the labels {common.MANAGED_BY_LABEL}=tenantry and "
                                f"{common.TENANT_LABEL}, and names starting with 'tenantry-' "
                                "or 'tenantry:', are reserved for the Tenantry operator"),
                    "reason": "Forbidden",
                },
                {
                    "expression": (
                        "request.operation == 'DELETE' || "
                        "request.resource.resource != 'rolebindings' || "
                        "!object.?subjects.orValue([]).exists(s, "
                        f"(s.kind == 'Group' && s.name in {_cel_list(EVERYONE_GROUPS)}) || "
                        f"(s.kind == 'User' && s.name in {_cel_list(EVERYONE_USERS)}))"),
                    "message": ("subjects: a RoleBinding in a tenant namespace must not grant "
                                "access to everyone (" + ", ".join(
                                    (*EVERYONE_GROUPS, *EVERYONE_USERS)) + "): that opens the "
                                "tenant to every other tenant; name the users, groups or "
                                "ServiceAccounts to share with"),
                    "reason": "Forbidden",
                },
            ],
        },
    }
    binding = {
        "apiVersion": ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": POLICY_NAME, "labels": labels},
        "spec": {
            "policyName": POLICY_NAME,
            "validationActions": ["Deny"],
            "matchResources": {"namespaceSelector": {"matchExpressions": [
                {"key": common.TENANT_LABEL, "operator": "Exists"}]}},
        },
    }
    return [policy, binding]


def _fingerprint() -> str:
    """What tells this version of the policy from others: a hash of everything it refuses and
    how (the exempt identities, which differ per install, left out)."""
    policy, binding = _policy_and_binding((), _PROBE_PLACEHOLDER)
    encoded = json.dumps([policy["spec"], binding["spec"]], sort_keys=True)
    return hashlib.sha256(encoded.encode()).hexdigest()[:12]


PROBE_NAME = PROBE_PREFIX + _fingerprint()
"""The probe's name: refused by this version of the policy only."""
