"""The Tenant resource (cluster-scoped): who the tenant is, what it may use, how it is isolated."""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Any

from pydantic import ConfigDict, Field
from pydantic.config import JsonDict

from tenantry.model.common import (
    DNS_SUBDOMAIN_PATTERN,
    Cidr,
    Conditions,
    DnsLabel,
    Quantity,
    SpecModel,
    cel,
    k8s_schema,
)

KIND = "Tenant"
PLURAL = "tenants"
SINGULAR = "tenant"
SHORT_NAMES = ["tn"]

# Pod Security Admission level version the namespaces are pinned to (the control plane's minor).
POD_SECURITY_VERSION = "v1.35"


class Role(StrEnum):
    """The four tiers; each includes everything the one below may do."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


ROLE_RANK: Mapping[Role, int] = {Role.VIEWER: 1, Role.MEMBER: 2, Role.ADMIN: 3, Role.OWNER: 4}
"""A role's place among the tiers: the higher includes everything the lower may do."""


class SubjectKind(StrEnum):
    USER = "User"
    GROUP = "Group"
    SERVICE_ACCOUNT = "ServiceAccount"


# Subjects that mean "everyone" (every user, every workload, or nobody signed in at all). No
# Tenant may make them members: the operator's RoleBindings are exempt from the protection
# policy that refuses the same subjects to tenants (`controller.protection`).
EVERYONE_GROUPS = ("system:authenticated", "system:unauthenticated", "system:serviceaccounts")
EVERYONE_USERS = ("system:anonymous",)
# How the apiserver names a ServiceAccount (user) and the ServiceAccounts of one namespace
# (group). A member spelled so is a ServiceAccount whatever its kind says, and any member who
# may create pods in that namespace can run as it.
SERVICE_ACCOUNT_USER_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNT_GROUP_PREFIX = "system:serviceaccounts:"
WORKLOAD_ROLES = ("member", "viewer")
"""The most a workload's identity may hold in its tenant (a token must not administer it)."""


def _cel_strings(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{v}'" for v in values) + "]"


class Member(SpecModel):
    """A user, group or ServiceAccount and the tier it gets in every tenant namespace."""

    kind: Annotated[SubjectKind, Field(description="User, Group or ServiceAccount.")]
    name: Annotated[str, Field(min_length=1, max_length=253,
                               description="User or group name, or the ServiceAccount's name.")]
    namespace: Annotated[DnsLabel | None, Field(
        description="The ServiceAccount's namespace; required for ServiceAccounts only.")] = None
    role: Annotated[Role, Field(description="owner, admin, member or viewer.")]


def is_everyone(member: Member) -> bool:
    """Whether `member` names a subject that means everyone (never bound)."""
    if member.kind is SubjectKind.GROUP:
        return member.name in EVERYONE_GROUPS
    return member.kind is SubjectKind.USER and member.name in EVERYONE_USERS


def is_workload(member: Member) -> bool:
    """Whether `member` is one or more ServiceAccounts, whichever way it is spelled."""
    if member.kind is SubjectKind.SERVICE_ACCOUNT:
        return True
    if member.kind is SubjectKind.USER:
        return member.name.startswith(SERVICE_ACCOUNT_USER_PREFIX)
    return member.name.startswith(SERVICE_ACCOUNT_GROUP_PREFIX)


def bound_role(member: Member) -> Role | None:
    """The tier `member` is bound to: its role, at most `member` for a workload's identity, and
    None (not bound at all) for everyone. The schema refuses both (the rules on spec.members),
    but a Tenant stored before them may still hold them: the operator's RoleBindings and the
    webhook read members through this."""
    if is_everyone(member):
        return None
    if is_workload(member) and member.role.value not in WORKLOAD_ROLES:
        return Role.MEMBER
    return member.role


class TenantNamespace(SpecModel):
    """A namespace the tenant owns."""

    name: Annotated[DnsLabel, Field(description="Namespace name.")]
    adopt: Annotated[bool, Field(
        description="Take over this namespace if it already exists and belongs to no tenant. "
                    "Without it, an existing namespace is never taken over.")] = False


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class PortRule(SpecModel):
    port: Annotated[int, Field(ge=1, le=65535)]
    end_port: Annotated[int | None, Field(ge=1, le=65535,
                                          description="Last port of a range starting at port.")]\
        = None
    protocol: Protocol = Protocol.TCP


class EgressRule(SpecModel):
    """One allowed destination: an IP range, or a namespace of the cluster (a named service)."""

    description: Annotated[str | None, Field(max_length=256)] = None
    cidr: Annotated[Cidr | None, Field(
        description="Destination range. Private ranges also need spec.network."
                    "approvedPrivateRanges.")] = None
    namespace: Annotated[DnsLabel | None, Field(
        description="Destination namespace in this cluster (e.g. a shared service).")] = None
    pod_labels: Annotated[dict[str, Annotated[str, Field(max_length=63)]] | None, Field(
        max_length=16,
        description="With namespace: only pods with these labels.")] = None
    ports: Annotated[list[PortRule], Field(
        default_factory=list, max_length=32,
        description="Allowed ports; empty means all ports.")]


# The cluster DNS pods every tenant may query (in spec.network.dnsNamespace), on this port.
DNS_POD_LABELS = {"k8s-app": "kube-dns"}
DNS_PORT = 53

_EGRESS_RULES = [
    cel("has(self.cidr) != has(self.__namespace__)",
        "exactly one of cidr or namespace must be set", reason="FieldValueInvalid"),
    cel("!has(self.podLabels) || has(self.__namespace__)",
        "podLabels needs namespace", reason="FieldValueInvalid", field_path=".podLabels"),
    cel("!has(self.ports) || self.ports.all(p, !has(p.endPort) || p.endPort >= p.port)",
        "endPort must be >= port", reason="FieldValueInvalid", field_path=".ports"),
]


# Ranges a tenant can reach only with explicit approval: RFC 1918, CGNAT, link-local (incl. the
# cloud metadata address 169.254.169.254), loopback, IPv6 ULA, link-local and loopback, and the
# IANA special-purpose ranges that reach private space or the host itself some other way:
# 0.0.0.0/8 ("this network": 0.0.0.0 is the local host on Linux), IETF protocol assignments
# (192.0.0.0/24, DS-Lite), benchmarking (198.18.0.0/15), reserved and broadcast (240.0.0.0/4),
# multicast; and in IPv6 the unspecified and IPv4-compatible block (::/96), IPv4-mapped
# (::ffff:0:0/96), NAT64 (64:ff9b::/96, 64:ff9b:1::/48), discard (100::/64), IETF protocol
# assignments incl. Teredo (2001::/23), 6to4 (2002::/16), site-local (fec0::/10) and multicast.
# Each of these either is private or embeds an IPv4 address a gateway may translate to one.
PRIVATE_RANGES = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16",
    "127.0.0.0/8", "0.0.0.0/8", "192.0.0.0/24", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
    "fc00::/7", "fe80::/10", "::1/128", "::/96", "::ffff:0:0/96", "64:ff9b::/96",
    "64:ff9b:1::/48", "100::/64", "2001::/23", "2002::/16", "fec0::/10", "ff00::/8",
)
# CEL's cidr() refuses IPv4-mapped IPv6 (::ffff:0:0/96), and so does the schema's CIDR type, so
# no spec can name a range in it: the CEL list leaves it out; the builders still carve it out.
IPV4_MAPPED = "::ffff:0:0/96"
_PRIVATE_CEL = "[" + ", ".join(f"'{r}'" for r in PRIVATE_RANGES if r != IPV4_MAPPED) + "]"


def _same_family(a: str, b: str) -> str:
    return f"cidr({a}).ip().family() == cidr({b}).ip().family()"


_NETWORK_RULES: list[Any] = [
    cel(
        "!has(self.egress) || self.egress.all(r, !has(r.cidr) || "
        f"!{_PRIVATE_CEL}.exists(p, {_same_family('p', 'r.cidr')} && "
        "cidr(p).containsCIDR(r.cidr)) || "
        "(has(self.approvedPrivateRanges) && self.approvedPrivateRanges.exists(a, "
        f"{_same_family('a', 'r.cidr')} && cidr(a).containsCIDR(r.cidr))))",
        "egress: a private, link-local or loopback cidr must lie inside one of "
        "approvedPrivateRanges",
        reason="FieldValueForbidden", field_path=".egress",
    ),
]


class Network(SpecModel):
    """Isolation: default deny, DNS, the tenant's own namespaces, then this allow-list.

    A public rule that spans private space (0.0.0.0/0, say) is allowed; the operator carves the
    unapproved private ranges out of it with `except`.
    """

    model_config = ConfigDict(
        **SpecModel.model_config,
        json_schema_extra={"x-kubernetes-validations": _NETWORK_RULES},
    )

    egress: Annotated[list[Annotated[EgressRule, Field(
        json_schema_extra=k8s_schema(**{"x-kubernetes-validations": _EGRESS_RULES}))]], Field(
        default_factory=list, max_length=64,
        description="Egress allow-list. Everything else is denied.")]
    approved_private_ranges: Annotated[list[Cidr], Field(
        default_factory=list, max_length=32,
        description="Private, link-local or loopback ranges this tenant may reach. Every "
                    "private CIDR in egress must lie inside one of these.",
        json_schema_extra=k8s_schema(**{"x-kubernetes-list-type": "set"}))]
    allow_intra_tenant: Annotated[bool, Field(
        description="Allow traffic between the tenant's own namespaces.")] = True
    dns_namespace: Annotated[DnsLabel, Field(description="Namespace of the cluster DNS.")] \
        = "kube-system"


class Quota(SpecModel):
    """ResourceQuota for each tenant namespace."""

    cpu: Annotated[Quantity, Field(description="requests.cpu and limits.cpu")] = "8"
    memory: Annotated[Quantity, Field(description="requests.memory and limits.memory")] = "16Gi"
    ephemeral_storage: Quantity = "20Gi"
    storage: Annotated[Quantity, Field(description="requests.storage across PVCs")] = "100Gi"
    pods: Annotated[int, Field(ge=0, le=100000)] = 50
    services: Annotated[int, Field(ge=0, le=10000)] = 20
    services_load_balancers: Annotated[int, Field(ge=0, le=1000)] = 0
    services_node_ports: Annotated[int, Field(ge=0, le=1000)] = 0
    secrets: Annotated[int, Field(ge=0, le=100000)] = 100
    config_maps: Annotated[int, Field(ge=0, le=100000)] = 100
    persistent_volume_claims: Annotated[int, Field(ge=0, le=10000)] = 20


class Limits(SpecModel):
    """LimitRange defaults for containers that declare nothing."""

    default_cpu: Quantity = "500m"
    default_memory: Quantity = "512Mi"
    default_request_cpu: Quantity = "100m"
    default_request_memory: Quantity = "128Mi"
    max_cpu: Quantity = "4"
    max_memory: Quantity = "8Gi"


class EnforcementMode(StrEnum):
    DENY = "Deny"
    WARN = "Warn"
    AUDIT = "Audit"


class ExemptableRule(StrEnum):
    """Rules an exemption may lift: Tenantry's own, on top of Pod Security.

    Tenant namespaces always carry Pod Security Admission's `enforce=restricted`, which the
    apiserver applies to every Pod whatever Tenantry says; an exemption of a Pod Security rule
    could therefore never admit a Pod, so the schema refuses it rather than pretend.
    """

    READ_ONLY_ROOT_FILESYSTEM = "readOnlyRootFilesystem"
    WRITABLE_MOUNTS = "writableMounts"
    NODE_PORT_SERVICES = "nodePortServices"
    LOAD_BALANCER_SERVICES = "loadBalancerServices"


class Exemption(SpecModel):
    """An explicit, audited hole in Tenantry's own hardening rules. Nothing is exempt by default.

    Pod Security `restricted` itself is never exempt (the apiserver enforces it on every tenant
    namespace); an exemption without `rule` covers every rule in ExemptableRule.
    """

    rule: Annotated[ExemptableRule | None, Field(
        description="Rule id: readOnlyRootFilesystem, writableMounts, nodePortServices or "
                    "loadBalancerServices. Pod Security rules cannot be exempted: every tenant "
                    "namespace enforces Pod Security restricted.")] = None
    image: Annotated[str | None, Field(
        max_length=512,
        description="Image reference or registry/repository prefix, matched at a boundary: "
                    "registry.example.com matches registry.example.com/app:1, never "
                    "registry.example.com.evil.io/app.")] = None
    namespace: Annotated[DnsLabel | None, Field(description="One of the tenant's namespaces.")] \
        = None
    reason: Annotated[str, Field(min_length=1, max_length=512,
                                 description="Why; recorded in the audit ledger.")]


class PodSecurity(SpecModel):
    mode: Annotated[EnforcementMode, Field(
        description="Deny refuses non-hardened pods; Warn admits with warnings; Audit admits "
                    "and records.")] = EnforcementMode.DENY
    exemptions: Annotated[list[Annotated[Exemption, Field(json_schema_extra=k8s_schema(**{
        "x-kubernetes-validations": [cel(
            "has(self.rule) || has(self.image) || has(self.__namespace__)",
            "an exemption names at least one of rule, image or namespace",
            reason="FieldValueRequired")],
    }))]], Field(default_factory=list, max_length=32)]


class DeletionPolicy(StrEnum):
    RETAIN = "Retain"
    DELETE = "Delete"


# Lets the apiserver fill nested defaults when the whole object is omitted.
_DEFAULT_EMPTY: JsonDict = {"default": {}}


# An Ingress host: a DNS name, or "*." and a DNS name; lowercase, each label at most 63.
_HOST_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
HOSTNAME_PATTERN = rf"^(\*\.)?{_HOST_LABEL}(\.{_HOST_LABEL})*$"


class IngressPolicy(SpecModel):
    """Which hosts the tenant's Ingresses may serve.

    Whatever this says, a host that an Ingress outside the tenant already serves is refused
    (first come, first served), and so are ingress controllers' snippet annotations.
    """

    allowed_hostnames: Annotated[list[Annotated[str, Field(
        min_length=1, max_length=253, pattern=HOSTNAME_PATTERN)]] | None, Field(
        max_length=64,
        description="Hosts the tenant's Ingresses may serve: exact names (app.example.com) or "
                    "wildcards (*.example.com: every name under example.com, at any depth, "
                    "not example.com itself). Unset (the default): any host no Ingress outside "
                    "the tenant serves. Empty: no host at all.",
        json_schema_extra=k8s_schema(**{"x-kubernetes-list-type": "set"}))] = None


class TenantSpec(SpecModel):
    display_name: Annotated[str | None, Field(max_length=256)] = None
    members: Annotated[list[Member], Field(
        min_length=1, max_length=256,
        description="Who gets which tier in every tenant namespace.",
        json_schema_extra=k8s_schema(**{"x-kubernetes-validations": [
            cel("self.exists(m, m.role == 'owner')",
                "at least one member must have role owner", reason="FieldValueRequired"),
            cel("self.all(m, m.kind == 'ServiceAccount' ? has(m.__namespace__) "
                ": !has(m.__namespace__))",
                "namespace is required for ServiceAccount members and forbidden for others",
                reason="FieldValueInvalid"),
            cel("self.all(m, m.kind != 'ServiceAccount' || "
                "m.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*"
                "[a-z0-9])?)*$'))",
                "a ServiceAccount member's name must be a DNS subdomain",
                reason="FieldValueInvalid"),
            cel("self.all(m, m.kind != 'ServiceAccount' || m.role in ['member', 'viewer'])",
                "a ServiceAccount member may have role member or viewer, never owner or admin: "
                "a workload's token must not administer its own tenant",
                reason="FieldValueForbidden"),
            # The same accounts under the names the apiserver authenticates them as: RBAC
            # matches a User subject `system:serviceaccount:NS:NAME` to that ServiceAccount and
            # a Group `system:serviceaccounts:NS` to all of that namespace's.
            cel("self.all(m, m.role in " + _cel_strings(WORKLOAD_ROLES) + " || !("
                f"(m.kind == 'User' && m.name.startsWith('{SERVICE_ACCOUNT_USER_PREFIX}')) || "
                f"(m.kind == 'Group' && m.name.startsWith('{SERVICE_ACCOUNT_GROUP_PREFIX}'))))",
                "a ServiceAccount member may have role member or viewer, never owner or admin, "
                f"also when named as the User {SERVICE_ACCOUNT_USER_PREFIX}NAMESPACE:NAME or the "
                f"Group {SERVICE_ACCOUNT_GROUP_PREFIX}NAMESPACE: any member can run a pod as "
                "such an account", reason="FieldValueForbidden"),
            cel("self.all(m, !(m.kind == 'Group' && m.name in " + _cel_strings(EVERYONE_GROUPS)
                + ") && !(m.kind == 'User' && m.name in " + _cel_strings(EVERYONE_USERS) + "))",
                "members must not grant access to everyone (" + ", ".join(
                    (*EVERYONE_GROUPS, *EVERYONE_USERS)) + "): that opens the tenant to every "
                "other tenant and workload; name the users, groups or ServiceAccounts",
                reason="FieldValueForbidden"),
        ]}))]
    namespaces: Annotated[list[TenantNamespace], Field(
        min_length=1, max_length=64,
        description="Namespaces of this tenant.",
        json_schema_extra=k8s_schema(**{
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        }))]
    network: Network = Field(default_factory=Network, json_schema_extra=_DEFAULT_EMPTY)
    quota: Quota = Field(default_factory=Quota, json_schema_extra=_DEFAULT_EMPTY)
    limits: Limits = Field(default_factory=Limits, json_schema_extra=_DEFAULT_EMPTY)
    pod_security: PodSecurity = Field(default_factory=PodSecurity, json_schema_extra=_DEFAULT_EMPTY)
    allowed_priority_classes: Annotated[list[Annotated[str, Field(
        min_length=1, max_length=253, pattern=DNS_SUBDOMAIN_PATTERN)]], Field(
        default_factory=list, max_length=16,
        description="PriorityClasses the tenant's pods may name, besides the cluster's "
                    "globalDefault one. Empty (the default): only the cluster default. "
                    "system-* classes are reserved for the cluster's own components.",
        json_schema_extra=k8s_schema(**{
            "x-kubernetes-list-type": "set",
            "x-kubernetes-validations": [cel(
                "self.all(c, !c.startsWith('system-'))",
                "system-node-critical, system-cluster-critical and other system-* priority "
                "classes are reserved for the cluster's own components",
                reason="FieldValueForbidden")],
        }))]
    ingress: IngressPolicy = Field(default_factory=IngressPolicy, json_schema_extra=_DEFAULT_EMPTY)
    deletion_policy: Annotated[DeletionPolicy, Field(
        description="What happens to the namespaces when the Tenant is deleted. Retain keeps "
                    "them (and their data) but removes tenant ownership.")] \
        = DeletionPolicy.RETAIN


class NamespaceStatus(SpecModel):
    name: DnsLabel
    ready: bool
    reason: Annotated[str, Field(max_length=128)] = ""
    message: Annotated[str, Field(max_length=1024)] = ""


class TenantStatus(SpecModel):
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    conditions: Conditions
    namespaces: Annotated[list[NamespaceStatus], Field(
        default_factory=list, max_length=64,
        json_schema_extra=k8s_schema(**{
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
        }))]
    namespace_count: Annotated[int | None, Field(ge=0)] = None
    member_count: Annotated[int | None, Field(ge=0)] = None
    handled_configuration: Annotated[str | None, Field(description=(
        "The operator's bookkeeping: the spec, labels and annotations it last handled (JSON), "
        "kept with the status it wrote for them rather than in an annotation of its own."))] \
        = None


# Rules on the whole object (metadata is only reachable from the root).
ROOT_VALIDATIONS = [
    cel("self.metadata.name.size() <= 63",
        "metadata.name: a Tenant name is used as a label value and must be at most 63 characters",
        reason="FieldValueInvalid"),
]

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Ready", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Reason", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].reason'},
    {"name": "Namespaces", "type": "integer", "jsonPath": ".status.namespaceCount"},
    {"name": "Members", "type": "integer", "jsonPath": ".status.memberCount"},
    {"name": "Pod-Security", "type": "string", "jsonPath": ".spec.podSecurity.mode"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
