"""Ingresses (networking.k8s.io/v1) in a tenant namespace: whose hosts, and no controller config.

An ingress controller is shared by every tenant, so an Ingress reaches past its namespace in two
ways, and both are refused here:

- `ingressHostClaimed`: a host (in `spec.rules[].host` or `spec.tls[].hosts[]`) that an Ingress
  outside the tenant already serves. The controller merges every Ingress of a host, so a second
  tenant naming it would take part of the first one's traffic (or its TLS certificate). First
  come, first served; the tenant's own namespaces may share a host. Hosts overlap as the
  Ingress API matches them: `*.example.com` is one label under example.com, so it overlaps
  `app.example.com` (both ways) but neither `example.com` nor `a.b.example.com`.
- `ingressCatchAll`: a rule without a host, or `spec.defaultBackend`. Either serves every host
  no other Ingress names: other tenants' future hosts, and the controller's default server.
- `ingressSnippetAnnotation`: an annotation whose name (after the prefix) is `snippet` or ends
  with `-snippet` or `-snippets`, any case: ingress-nginx's configuration-, server-, auth-,
  stream- and modsecurity-snippet, NGINX Inc's nginx.org/server-snippets and location-snippets,
  HAProxy's backend-config-snippet, and HAProxy Ingress's config-backend, config-frontend and
  the other config-SECTION keys... They paste text into the controller's own configuration,
  which runs with the controller's identity, for every tenant (CVE-2021-25742: reading every
  Secret the controller can read).
- `ingressForeignReference`: an annotation that names a Secret or ConfigMap of another namespace
  (`NAMESPACE/NAME` in the value of a key ending in `-secret`, `-secrets` or `-configmap`, or
  ingress-nginx's `auth-proxy-set-headers` and `custom-headers`, HAProxy's `server-ca` and
  `server-crt`): auth-tls-secret, auth-secret,
  proxy-ssl-secret... The controller reads them with its own identity, which may read every
  namespace's, so another tenant's client CA, htpasswd file or upstream certificate would serve
  this tenant's Ingress. A plain `NAME` (this namespace) stays allowed.
- `ingressHostNotAllowed`: a host outside the Tenant's `spec.ingress.allowedHostnames`, when the
  Tenant declares them. There `*.example.com` allows every name under example.com at any depth
  (as Gateway API listeners read wildcards), not example.com itself.

The first four harm other tenants, so they are refused in every podSecurity mode and no
exemption lifts them; `ingressHostNotAllowed` is the platform's own restriction on the tenant
and follows the mode (Warn and Audit let a platform try an allow-list before enforcing it).

Which hosts are already served is the caller's to find (the webhook keeps a cluster-wide cache);
this module only compares. `tenantry check` runs without a cluster and skips host claims.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence

from tenantry.admission import podspecs
from tenantry.admission.policy import Decision
from tenantry.admission.violation import Violation, items, mapping
from tenantry.model import tenant

API_VERSION = "networking.k8s.io/v1"
KIND = "Ingress"

HOST_CLAIMED = "ingressHostClaimed"
HOST_NOT_ALLOWED = "ingressHostNotAllowed"
CATCH_ALL = "ingressCatchAll"
SNIPPET_ANNOTATION = "ingressSnippetAnnotation"
FOREIGN_REFERENCE = "ingressForeignReference"

RULES: Mapping[str, str] = {
    HOST_CLAIMED: "no host that an Ingress outside the tenant already serves",
    CATCH_ALL: "every rule names a host, and no spec.defaultBackend",
    SNIPPET_ANNOTATION: "no ingress-controller snippet annotations (*-snippet)",
    FOREIGN_REFERENCE: "annotations name Secrets and ConfigMaps of the Ingress's own namespace",
    HOST_NOT_ALLOWED: "only hosts within the Tenant's spec.ingress.allowedHostnames, if set",
}
RULE_IDS = frozenset(RULES)
ALWAYS_REFUSED = frozenset({HOST_CLAIMED, CATCH_ALL, SNIPPET_ANNOTATION, FOREIGN_REFERENCE})
"""Rules that protect other tenants: refused in every podSecurity mode."""

_SNIPPET_SUFFIXES = ("-snippet", "-snippets")
# HAProxy Ingress (haproxy-ingress.github.io, ingress.kubernetes.io) names its snippets
# config-SECTION: raw HAProxy configuration pasted into that section, like any -snippet.
_SNIPPET_NAMES = frozenset({
    "snippet", "snippets",
    *(f"config-{section}{when}" for section in ("backend", "frontend")
      for when in ("", "-early", "-late")),
    *(f"config-{section}" for section in ("defaults", "global", "peers", "proxy", "sections",
                                          "tcp", "tcp-service")),
})
_REFERENCE_SUFFIXES = ("-secret", "-secrets", "-configmap")
# Named otherwise: ingress-nginx's header ConfigMaps, and HAProxy's (haproxy.org) upstream CA and
# client certificate, `NAMESPACE/NAME` Secrets it resolves in any namespace it watches.
_REFERENCE_NAMES = frozenset({"auth-proxy-set-headers", "custom-headers", "server-ca",
                              "server-crt"})


def is_ingress(obj: podspecs.Obj) -> bool:
    return obj.get("kind") == KIND and obj.get("apiVersion") == API_VERSION


# -- hosts ---------------------------------------------------------------------------------------

def normalize(host: str) -> str:
    """A host as controllers compare it: lowercase, no trailing dot (tls hosts are unchecked by
    the apiserver, so `App.Example.com.` must not slip past `app.example.com`)."""
    return host.strip().lower().rstrip(".")


def _parent(host: str) -> str | None:
    """What follows the first label (`a.example.com` -> `example.com`); None for one label."""
    _, dot, rest = host.partition(".")
    return rest if dot and rest else None


def overlaps(a: str, b: str) -> bool:
    """Whether some request host would match both Ingress hosts (normalized; `*.` = one label)."""
    if a == b:
        return True
    wild_a, wild_b = a.startswith("*."), b.startswith("*.")
    if wild_a and not wild_b:
        return _parent(b) == a[2:]
    if wild_b and not wild_a:
        return _parent(a) == b[2:]
    return False  # two different exact names, or two different wildcards


def allowed_by(host: str, pattern: str) -> bool:
    """Whether an allowedHostnames entry covers every name the Ingress host matches."""
    pattern = normalize(pattern)
    if host == pattern:
        return True
    if not pattern.startswith("*."):
        return False
    under = pattern[1:]  # ".example.com"
    name = host[2:] if host.startswith("*.") else host
    return name.endswith(under)


@dataclasses.dataclass(frozen=True, slots=True)
class Host:
    """One host an Ingress names, where it names it."""

    path: str
    """spec.rules[0].host or spec.tls[0].hosts[1]."""
    host: str
    """Normalized."""


def hosts(ingress: podspecs.Obj) -> list[Host]:
    """Every non-empty host of the rules and the TLS entries, in the order written."""
    spec = mapping(ingress.get("spec"))
    found = []
    for index, rule in enumerate(items(spec.get("rules"))):
        value = mapping(rule).get("host")
        if isinstance(value, str) and normalize(value):
            found.append(Host(f"spec.rules[{index}].host", normalize(value)))
    for index, entry in enumerate(items(spec.get("tls"))):
        for position, value in enumerate(items(mapping(entry).get("hosts"))):
            if isinstance(value, str) and normalize(value):
                found.append(Host(f"spec.tls[{index}].hosts[{position}]", normalize(value)))
    return found


def host_names(ingress: podspecs.Obj) -> tuple[str, ...]:
    """The distinct hosts an Ingress serves, sorted (what a cache of claims keeps)."""
    return tuple(sorted({h.host for h in hosts(ingress)}))


def overlapping(host: str, claimed: Iterable[str]) -> list[str]:
    """The claimed hosts that overlap `host`, sorted."""
    return sorted({c for c in claimed if overlaps(host, c)})


# -- annotations ---------------------------------------------------------------------------------

def is_snippet_annotation(key: str) -> bool:
    """`prefix/name` or `name`, where name is snippet(s), ends with -snippet(s) or is one of
    HAProxy Ingress's config-SECTION snippets, any case."""
    name = key.rsplit("/", 1)[-1].strip().lower()
    return name in _SNIPPET_NAMES or name.endswith(_SNIPPET_SUFFIXES)


def is_reference_annotation(key: str) -> bool:
    """Whether an annotation's value names a Secret or ConfigMap (`NAME` or `NAMESPACE/NAME`)."""
    name = key.rsplit("/", 1)[-1].strip().lower()
    return name in _REFERENCE_NAMES or name.endswith(_REFERENCE_SUFFIXES)


def referenced_namespace(value: str) -> str | None:
    """The namespace a `NAMESPACE/NAME` reference names; None for a plain `NAME`."""
    namespace, slash, _ = value.strip().partition("/")
    return namespace.strip() if slash else None


def _annotation_path(key: str) -> str:
    return f"metadata.annotations[{json.dumps(key)}]"


# -- the rules -----------------------------------------------------------------------------------

def _claimed(found: Sequence[Host], claimed: Collection[str]) -> Iterator[Violation]:
    for ref in found:
        others = overlapping(ref.host, claimed)
        if not others:
            continue
        via = "" if others == [ref.host] else f" (it overlaps {', '.join(others)})"
        yield Violation(
            HOST_CLAIMED, ref.path,
            f"{json.dumps(ref.host)} is already served by an Ingress outside this tenant"
            f"{via}; choose another host (refused in every podSecurity mode)",
            "a host no Ingress outside the tenant serves")


def _catch_all(spec: podspecs.Obj) -> Iterator[Violation]:
    for index, rule in enumerate(items(spec.get("rules"))):
        value = mapping(rule).get("host")
        if not isinstance(value, str) or not normalize(value):
            yield Violation(
                CATCH_ALL, f"spec.rules[{index}].host",
                "must be set: a rule without a host serves every host no other Ingress names, "
                "other tenants' included (refused in every podSecurity mode)", "a host name")
    if spec.get("defaultBackend") is not None:
        yield Violation(
            CATCH_ALL, "spec.defaultBackend",
            "must not be set: a default backend serves every host no other Ingress names, "
            "other tenants' included; use rules with a host (refused in every podSecurity "
            "mode)", "unset")


def _snippets(metadata: podspecs.Obj) -> Iterator[Violation]:
    for key in mapping(metadata.get("annotations")):
        if isinstance(key, str) and is_snippet_annotation(key):
            yield Violation(
                SNIPPET_ANNOTATION, _annotation_path(key),
                "must not be set: snippet annotations write into the shared ingress "
                "controller's configuration, for every tenant (refused in every podSecurity "
                "mode)", "unset")


def _foreign_references(metadata: podspecs.Obj, namespace: str | None) -> Iterator[Violation]:
    for key, value in mapping(metadata.get("annotations")).items():
        if not (isinstance(key, str) and isinstance(value, str) and is_reference_annotation(key)):
            continue
        other = referenced_namespace(value)
        if other is None or other == namespace:
            continue
        own = namespace or "its own namespace"
        yield Violation(
            FOREIGN_REFERENCE, _annotation_path(key),
            f"names {json.dumps(value.strip())}, in namespace {json.dumps(other)}: the shared "
            f"ingress controller would read another namespace's object for this Ingress; name "
            f"one of {own} (NAME alone) (refused in every podSecurity mode)",
            f"NAME or {namespace}/NAME" if namespace else "NAME")


def _not_allowed(found: Sequence[Host], allowed: Sequence[str]) -> Iterator[Violation]:
    listed = ", ".join(allowed) if allowed else "none"
    for ref in found:
        if not any(allowed_by(ref.host, pattern) for pattern in allowed):
            yield Violation(
                HOST_NOT_ALLOWED, ref.path,
                f"{json.dumps(ref.host)} is not within the tenant's "
                f"spec.ingress.allowedHostnames ({listed})",
                f"a host within {listed}")


def check_ingress(ingress: podspecs.Obj, policy: tenant.IngressPolicy | None = None, *,
                  claimed: Collection[str] | None = None,
                  namespace: str | None = None) -> list[Violation]:
    """Every violation of a networking.k8s.io/v1 Ingress; [] for other objects.

    `claimed`: hosts (normalized) that Ingresses outside the tenant serve; None when unknown
    (offline), which skips `ingressHostClaimed`. `policy`: the Tenant's spec.ingress.
    `namespace`: where the Ingress is (else its metadata.namespace): annotations may name
    objects of that namespace only.
    """
    if not is_ingress(ingress):
        return []
    found = hosts(ingress)
    violations: list[Violation] = []
    if claimed:
        violations += _claimed(found, claimed)
    violations += _catch_all(mapping(ingress.get("spec")))
    metadata = mapping(ingress.get("metadata"))
    violations += _snippets(metadata)
    if namespace is None:
        own = metadata.get("namespace")
        namespace = own if isinstance(own, str) and own else None
    violations += _foreign_references(metadata, namespace)
    allowed = policy.allowed_hostnames if policy is not None else None
    if allowed is not None:
        violations += _not_allowed(found, allowed)
    return violations


def decide(violations: Sequence[Violation],
           mode: tenant.EnforcementMode = tenant.EnforcementMode.DENY) -> Decision:
    """The decision under the tenant's podSecurity mode: rules in ALWAYS_REFUSED refuse in every
    mode; the others as the mode says. Nothing here is exempt (the allow-list is the place to
    widen)."""
    always = any(v.rule_id in ALWAYS_REFUSED for v in violations)
    allowed = not always and (mode is not tenant.EnforcementMode.DENY or not violations)
    warnings: tuple[str, ...] = ()
    if mode is tenant.EnforcementMode.WARN:
        warnings = tuple(f"{v.field_path}: {v.message}" for v in violations)
    return Decision(allowed=allowed, mode=mode, violations=tuple(violations), exempted=(),
                    warnings=warnings)
