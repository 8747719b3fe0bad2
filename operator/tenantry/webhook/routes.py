"""The webhook's routes: one line each, carrying both the HTTP path and the webhook entry.

A `WebhookRoute` is everything one validating webhook needs: the path the server answers on, the
handler, and what the apiserver should send there (rules, namespace selector, match conditions,
failure policy, side effects). `server.make_app` serves the routes; `configuration` turns the
same list into the ValidatingWebhookConfiguration, so a route and its webhook entry can never
drift apart.

Adding a route is one entry in `build_routes`, e.g. the audit ledger's:

    WebhookRoute("resources.audit.tenantry.dev", "/audit/resources", audit.handler(context),
                 rules=(Rule(("tenantry.dev",), ("*",), ("tenants", "credentials"),
                             operations=("CREATE", "UPDATE", "DELETE"), scope="*"),),
                 failure_policy="Ignore", side_effects="NoneOnDryRun")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

from tenantry.ledger import client as ledger_client
from tenantry.webhook import (
    audit,
    configuration,
    credentials,
    ingresses,
    isolation,
    workloads,
)
from tenantry.webhook.directory import TenantDirectory
from tenantry.webhook.records import Recorder
from tenantry.webhook.review import Handler

FailurePolicy = Literal["Fail", "Ignore"]
SideEffects = Literal["None", "NoneOnDryRun"]


@dataclasses.dataclass(frozen=True, slots=True)
class Rule:
    """One admissionregistration/v1 RuleWithOperations."""

    api_groups: tuple[str, ...]
    api_versions: tuple[str, ...]
    resources: tuple[str, ...]
    operations: tuple[str, ...] = ("CREATE", "UPDATE")
    scope: Literal["Namespaced", "Cluster", "*"] = "Namespaced"

    def wire(self) -> dict[str, Any]:
        return {"apiGroups": list(self.api_groups), "apiVersions": list(self.api_versions),
                "resources": list(self.resources), "operations": list(self.operations),
                "scope": self.scope}


@dataclasses.dataclass(frozen=True, slots=True)
class WebhookRoute:
    """A path on the server and the webhook entry that sends requests to it."""

    name: str
    """The webhook's name in the configuration (three or more DNS labels), e.g.
    workloads.admission.tenantry.dev; the apiserver quotes it in refusals."""
    path: str
    """Where the server answers, e.g. /validate/workloads."""
    handler: Handler
    rules: tuple[Rule, ...]
    namespace_selector: Mapping[str, Any] | None = None
    """Which namespaces' objects are sent; None: every namespace."""
    match_conditions: tuple[Mapping[str, str], ...] = ()
    """CEL matchConditions ({"name": ..., "expression": ...}), evaluated by the apiserver."""
    failure_policy: FailurePolicy | None = None
    """Fail or Ignore when the webhook cannot be reached; None: the server-wide setting."""
    side_effects: SideEffects = "None"
    """None, or NoneOnDryRun for handlers that write something (e.g. the audit ledger)."""
    timeout_seconds: int | None = None
    """None: the server-wide setting."""


@dataclasses.dataclass(frozen=True, slots=True)
class HandlerContext:
    """What handlers share: the tenant directory, the decision recorder, the operator namespace."""

    tenants: TenantDirectory
    recorder: Recorder
    operator_namespace: str
    ledger: ledger_client.LedgerClient | None = None
    """Where changes to Tenantry's resources are recorded; None (--no-ledger): not at all."""
    ledger_fail_closed: bool = True
    """Refuse a change that cannot be recorded (the default); False admits it, unrecorded."""
    operator_user: str = ""
    """The operator's user name: its own writes are recorded by the operator, not here."""
    ingress_hosts: ingresses.HostLookup | None = None
    """Which Ingresses serve which hosts, cluster-wide; None: Ingresses with hosts are refused."""


WORKLOADS = "workloads.admission.tenantry.dev"
CREDENTIALS = "credentials.admission.tenantry.dev"

# Pods (and their ephemeral containers) and the eight pod-template kinds, plus Services.
WORKLOAD_RULES = (
    Rule(("",), ("v1",), ("pods", "pods/ephemeralcontainers", "podtemplates",
                          "replicationcontrollers", "services")),
    Rule(("apps",), ("v1",), ("deployments", "statefulsets", "daemonsets", "replicasets")),
    Rule(("batch",), ("v1",), ("jobs", "cronjobs")),
)
CREDENTIAL_RULES = (Rule(("tenantry.dev",), ("v1alpha1",), ("credentials",),
                         operations=("CREATE", "UPDATE", "DELETE")),)
# Deletes only of Credentials a member may not delete (`credentials.check_scope`), and never the
# control plane's (namespace deletion, garbage collection): a webhook that is down then blocks
# no namespace from going away, and nobody's caller-scoped Credential.
CREDENTIAL_DELETES = {
    "name": "deletes-of-credentials-scoped-other-than-caller",
    "expression": "request.operation != 'DELETE' || ("
                  "has(oldObject.spec.scope) && oldObject.spec.scope != 'caller' && "
                  "request.userInfo.username != 'system:kube-controller-manager' && "
                  "!request.userInfo.username.startsWith('system:serviceaccount:kube-system:'))",
}
SPEC_PRESERVING_UPDATE = ("request.operation == 'UPDATE' && has(object.spec) && "
                          "has(oldObject.spec) && object.spec == oldObject.spec")
ISOLATION = "isolation.admission.tenantry.dev"
# Tenant NetworkPolicies, and Secrets of the legacy ServiceAccount token type only (the
# matchCondition spares every other Secret write the round trip).
ISOLATION_RULES = (
    Rule(("networking.k8s.io",), ("v1",), ("networkpolicies",)),
    Rule(("",), ("v1",), ("secrets",)),
)
ISOLATION_CONDITIONS: tuple[Mapping[str, str], ...] = ({
    "name": "network-policies-and-service-account-token-secrets",
    "expression": "request.resource.resource != 'secrets' || "
                  "(has(object.type) && object.type == 'kubernetes.io/service-account-token')",
},)
INGRESSES = "ingresses.admission.tenantry.dev"
INGRESS_RULES = (Rule(("networking.k8s.io",), ("v1",), ("ingresses",)),)
AUDIT = "resources.audit.tenantry.dev"
AUDIT_RULES = (
    Rule(("tenantry.dev",), ("*",), ("tenants",), operations=("CREATE", "UPDATE", "DELETE"),
         scope="Cluster"),
    Rule(("tenantry.dev",), ("*",), ("credentials", "rotationpolicies"),
         operations=("CREATE", "UPDATE", "DELETE")),
)


def credential_conditions(operator_user: str) -> tuple[Mapping[str, str], ...]:
    """The credentials route's matchConditions: everything but the operator's own updates that
    leave the spec as it is (kopf's bookkeeping annotations on every Credential it handles), and
    of deletes only those `CREDENTIAL_DELETES` sends.

    What the route judges is the spec (allowedServiceAccounts) and the Credential's namespace,
    which an update cannot change; an update that keeps the spec keeps the verdict the route gave
    when that spec was admitted. The only difference a review would make is refusing the operator
    its own bookkeeping on a Credential whose namespace its tenant has since given up, where the
    operator must still be able to report the problem. Anybody else's update, and every write of
    the operator that changes the spec or creates a Credential, is still reviewed; the audit
    route (which records the operator's writes through the operator itself) is unaffected.
    """
    if not operator_user:
        return (CREDENTIAL_DELETES,)
    return ({"name": "not-the-operators-own-bookkeeping",
             "expression": f"!(request.userInfo.username == '{operator_user}' && "
                           f"{SPEC_PRESERVING_UPDATE})"}, CREDENTIAL_DELETES)


def _audit_route(context: HandlerContext) -> WebhookRoute:
    conditions: tuple[Mapping[str, str], ...] = ()
    if context.operator_user:
        conditions = ({"name": "not-the-operator",
                       "expression": f"request.userInfo.username != '{context.operator_user}'"},)
    return WebhookRoute(
        AUDIT, "/audit/resources",
        audit.handler(AUDIT, context.tenants, context.ledger,
                      fail_closed=context.ledger_fail_closed),
        rules=AUDIT_RULES, match_conditions=conditions,
        failure_policy="Fail" if context.ledger_fail_closed else "Ignore",
        side_effects="NoneOnDryRun")


def build_routes(context: HandlerContext) -> list[WebhookRoute]:
    """Every route the server serves, in the order of the webhook configuration."""
    excluded = configuration.excluded_namespaces(context.operator_namespace)
    return [
        # Tenant namespaces only: a webhook that is down then blocks tenants' workloads (fail
        # closed), never kube-system, Tenantry itself or anybody else's namespaces.
        WebhookRoute(WORKLOADS, "/validate/workloads",
                     workloads.handler(WORKLOADS, context.tenants, context.recorder),
                     rules=WORKLOAD_RULES,
                     namespace_selector=configuration.tenant_namespaces(excluded)),
        # Every namespace but the system's: a Credential outside a tenant namespace is refused,
        # so it must be seen. A webhook that is down blocks only Credentials, Tenantry's own.
        WebhookRoute(CREDENTIALS, "/validate/credentials",
                     credentials.handler(CREDENTIALS, context.tenants, context.recorder),
                     rules=CREDENTIAL_RULES,
                     match_conditions=credential_conditions(context.operator_user),
                     namespace_selector=configuration.all_but(excluded)),
        # Tenant namespaces only: NetworkPolicies that would widen the tenant's isolation, and
        # never-expiring ServiceAccount token Secrets. Refused in every podSecurity mode.
        WebhookRoute(ISOLATION, "/validate/isolation",
                     isolation.handler(ISOLATION, context.tenants, context.recorder),
                     rules=ISOLATION_RULES, match_conditions=ISOLATION_CONDITIONS,
                     namespace_selector=configuration.tenant_namespaces(excluded)),
        # Tenant namespaces only, like workloads: hosts other tenants serve, snippets.
        WebhookRoute(INGRESSES, "/validate/ingresses",
                     ingresses.handler(INGRESSES, context.tenants, context.ingress_hosts,
                                       context.recorder),
                     rules=INGRESS_RULES,
                     namespace_selector=configuration.tenant_namespaces(excluded)),
        # Every change to Tenantry's own resources, everywhere, is recorded before it happens.
        *([_audit_route(context)] if context.ledger is not None else []),
    ]
