"""CEL twin of the isolation rules (`admission.isolation`): a ValidatingAdmissionPolicy.

The isolation rules depend on the Tenant (its namespaces, egress allow-list, allowed priority
classes), so the policy takes Tenants as parameters (`paramKind: Tenant`) and its one binding
selects every Tenant (`paramRef.selector: {}`). The apiserver then evaluates the policy once per
Tenant and ANDs the results; each evaluation judges only when the Tenant is the namespace's own
(`namespaceObject`'s `tenantry.dev/tenant` label names it), so a request is judged by exactly its
tenant. A namespace labelled for a Tenant that does not exist is judged by none (one evaluation
cannot see that no other matched; the webhook refuses such namespaces, fail closed), and with no
Tenant at all nothing is judged (`parameterNotFoundAction: Allow`). The cost grows with the
number of Tenants, and only for the kinds matched here.

Where CEL cannot follow the webhook (it says so in policies/README.md too):

- CEL cannot read namespaces other than the request's, so "the tenant's own namespaces" are the
  names its spec lists (the webhook also checks each carries the tenant's label);
- CEL cannot read PriorityClasses, so the cluster's globalDefault class passes only if the
  Tenant lists it in `allowedPriorityClasses`;
- an ipBlock must lie inside one allow-list cidr entry whose ports cover the rule's (the webhook
  also accepts a block spread over several entries), and a private range inside the block must
  be excepted or approved whole (the webhook also adds up partial excepts and approvals);
- IPv4-mapped IPv6 (::ffff:0:0/96) cannot be parsed by CEL's cidr(); an ipBlock in it fails
  evaluation and is refused (failurePolicy Fail);
- the operator's own writes (user system:serviceaccount:tenantry-system:tenantry-operator, as
  manifests/ installs it) are not judged: with a partial approval its allow-list policy carves
  private space in pieces the CEL check cannot add up.

In each case the CEL twin refuses what the webhook might admit, never the other way round.
"""

from __future__ import annotations

from typing import Any

from tenantry.admission import cel, isolation, networkpolicy

POLICY_NAME = "tenantry-isolation"
BINDING_NAME = "tenantry-isolation"
POLICY_FILE = "isolation-policy.yaml"
BINDINGS_FILE = "isolation-bindings.yaml"

TENANT_LABEL = "tenantry.dev/tenant"
NAME_LABEL = networkpolicy.NAME_LABEL
MESSAGE_PREFIX = "breaks tenant isolation: "
OPERATOR_USER = "system:serviceaccount:tenantry-system:tenantry-operator"
"""The operator's identity as manifests/operator/ installs it (its writes are not judged)."""

lit = cel.lit


def _private_ranges() -> str:
    from tenantry.model import tenant

    return cel.lits(r for r in tenant.PRIVATE_RANGES if r != tenant.IPV4_MAPPED)


def _same_family(a: str, b: str) -> str:
    return f"cidr({a}).ip().family() == cidr({b}).ip().family()"


def _ports_within(ports: str, entry: str) -> str:
    """CEL: the rule's `ports` (empty: all) lie within allow-list `entry`'s (empty: all)."""
    return (f"(size({entry}.?ports.orValue([])) == 0 || (size({ports}) > 0 && {ports}.all(pt, "
            f"type(pt.?port.orValue('')) == int && {entry}.ports.exists(al, "
            f"pt.?protocol.orValue('TCP') == al.?protocol.orValue('TCP') && al.port <= pt.port"
            f" && pt.?endPort.orValue(pt.port) <= al.?endPort.orValue(al.port)))))")


def _pinned_to_tenant(selector: str) -> str:
    return (f"({selector}.?matchLabels[?{lit(TENANT_LABEL)}].orValue('') == variables.tenantName"
            f" || {selector}.?matchExpressions.orValue([]).exists(e, e.key == {lit(TENANT_LABEL)}"
            f" && e.operator == 'In' && size(e.?values.orValue([])) > 0 && "
            f"e.values.all(v, v == variables.tenantName)))")


def _name_bounds(selector: str) -> str:
    """CEL: the name lists a selector pins itself to (matchLabels and In expressions)."""
    return (f"(({selector}.?matchLabels[?{lit(NAME_LABEL)}].hasValue() ? "
            f"[[{selector}.matchLabels[{lit(NAME_LABEL)}]]] : []) + "
            f"{selector}.?matchExpressions.orValue([]).filter(e, e.key == {lit(NAME_LABEL)} && "
            f"e.operator == 'In').map(e, e.?values.orValue([])))")


def _outside(selector: str) -> str:
    """CEL: names the selector may match that are not the tenant's (needs it pinned by name)."""
    bounds = _name_bounds(selector)
    return (f"{bounds}[0].filter(n, {bounds}.all(b, n in b) && "
            f"!(n in variables.tenantNamespaces))")


def _namespace_peer_ok(peer: str, *, egress: bool, ports: str) -> str:
    selector = f"{peer}.namespaceSelector"
    bounded = (f"(size({_name_bounds(selector)}) > 0 && ")
    if egress:
        destination = (f"variables.destinations.exists(d, d.ns == n && {_ports_within(ports, 'd')}"
                       f" && d.podLabels.all(k, {peer}.?podSelector.?matchLabels[?k]"
                       f".orValue('') == d.podLabels[k]))")
        return (f"({_pinned_to_tenant(selector)} || {bounded}"
                f"{_outside(selector)}.all(n, {destination})))")
    return f"({_pinned_to_tenant(selector)} || {bounded}size({_outside(selector)}) == 0))"


def _block_ok(block: str, ports: str) -> str:
    """CEL: an egress ipBlock lies inside one allow-list entry, private space carved out."""
    # IPv4-mapped excepts (which the builders write for ::/0) cannot be parsed by cidr(), and no
    # range of the list below lies in them: they are left out of the comparison.
    c = f"{block}.cidr"
    excepts = f"{block}.?except.orValue([]).filter(x, !x.lowerAscii().startsWith('::ffff:'))"
    inside_entry = (f"variables.egressEntries.exists(e, has(e.cidr) && {_same_family('e.cidr', c)}"
                    f" && cidr(e.cidr).containsCIDR({c}) && {_ports_within(ports, 'e')})")
    private_ok = (
        f"{_private_ranges()}.all(pv, !({_same_family('pv', c)}) || "
        f"!(cidr(pv).containsCIDR({c}) || cidr({c}).containsCIDR(pv)) || "
        f"(cidr(pv).containsCIDR({c}) ? variables.approved.exists(a, {_same_family('a', c)} && "
        f"cidr(a).containsCIDR({c})) : ({excepts}.exists(x, {_same_family('x', 'pv')} && "
        f"cidr(x).containsCIDR(pv)) || variables.approved.exists(a, {_same_family('a', 'pv')}"
        f" && cidr(a).containsCIDR(pv)))))")
    return f"({inside_entry} && {private_ok})"


def _peer_ok(peer: str, *, egress: bool, ports: str) -> str:
    block = _block_ok(f"{peer}.ipBlock", ports) if egress else "false"
    return (f"(has({peer}.ipBlock) ? {block} : !has({peer}.namespaceSelector) ? "
            f"has({peer}.podSelector) : {_namespace_peer_ok(peer, egress=egress, ports=ports)})")


def _direction(direction: str, peers_key: str, *, egress: bool) -> str:
    rule_id = networkpolicy.EGRESS if egress else networkpolicy.INGRESS
    rules = f"variables.policySpec.?{direction}.orValue([])"
    ports = "r.?ports.orValue([])" if egress else "[]"
    where = "inside the tenant and its egress allow-list" if egress else "inside the tenant"
    empty = (f"{rules}.transformList(i, r, size(r.?{peers_key}.orValue([])) == 0, "
             f"'spec.{direction}[' + string(i) + '].{peers_key}: must list peers {where} "
             f"[{rule_id}]')")
    subpath = ("(has(q.ipBlock) ? '.ipBlock" + (".cidr" if egress else "") + "' : "
               "has(q.namespaceSelector) ? '.namespaceSelector' : '')")
    bad_peers = (f"{rules}.transformList(i, r, size(r.?{peers_key}.orValue([])) > 0, "
                 f"r.{peers_key}.transformList(j, q, !{_peer_ok('q', egress=egress, ports=ports)},"
                 f" 'spec.{direction}[' + string(i) + '].{peers_key}[' + string(j) + ']' + "
                 f"{subpath} + ': must stay {where} [{rule_id}]')).flatten()")
    return f"{empty}\n+ {bad_peers}"


def _network_policy() -> str:
    return (f"!variables.isNetworkPolicy ? [] : (\n{_direction('ingress', 'from', egress=False)}"
            f"\n+ {_direction('egress', 'to', egress=True)})")


def _service() -> str:
    spec = "variables.objectSpec"
    name = f"{spec}.?externalName.orValue('').lowerAscii()"
    label = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
    pattern = rf"^{label}\.{label}\.svc(\.cluster\.local)?\.?$"
    return (f"!variables.isService ? [] : (\n"
            f"(size({spec}.?externalIPs.orValue([])) > 0 ? ['spec.externalIPs: must be empty "
            f"(CVE-2020-8554) [{isolation.SERVICE_EXTERNAL_IPS}]'] : [])\n"
            f"+ ({spec}.?type.orValue('') == 'ExternalName' && !({name}.matches({lit(pattern)}) "
            f"&& {name}.split('.')[1] in variables.tenantNamespaces) ? ['spec.externalName: must "
            f"be NAME.NAMESPACE.svc of one of the tenant\\'s namespaces "
            f"[{isolation.SERVICE_EXTERNAL_NAME}]'] : []))")


def _secret() -> str:
    return (f"variables.isSecret && dyn(object).?type.orValue('') == "
            f"{lit(isolation.SERVICE_ACCOUNT_TOKEN_TYPE)} ? ['type: must not be "
            f"{isolation.SERVICE_ACCOUNT_TOKEN_TYPE} [{isolation.SERVICE_ACCOUNT_TOKEN_SECRET}]']"
            " : []")


def _priority() -> str:
    name = "variables.podSpec.?priorityClassName.orValue('')"
    return (f"!variables.isPod || {name} == '' || {name} in variables.allowedPriorityClasses"
            f" ? [] : [variables.prefix + 'spec.priorityClassName: must be one the Tenant "
            f"allows in spec.allowedPriorityClasses [{isolation.PRIORITY_CLASS}]']")


def variables() -> list[dict[str, str]]:
    destinations = (
        "variables.egressEntries.filter(e, 'namespace' in e).map(e, {'ns': dyn(e['namespace']), "
        "'podLabels': dyn(e.?podLabels.orValue({})), 'ports': dyn(e.?ports.orValue([]))})\n"
        "+ [{'ns': dyn(variables.network.?dnsNamespace.orValue('kube-system')), "
        "'podLabels': dyn({'k8s-app': 'kube-dns'}), "
        "'ports': dyn([{'port': dyn(53), 'protocol': dyn('UDP')}, "
        "{'port': dyn(53), 'protocol': dyn('TCP')}])}]")
    parts: list[tuple[str, str]] = [
        ("tenant", "dyn(params)"),
        ("tenantName", "variables.tenant.metadata.name"),
        ("owner", f"namespaceObject.?metadata.?labels[?{lit(TENANT_LABEL)}].orValue('')"),
        ("mine", "variables.owner == variables.tenantName"),
        ("tenantNamespaces",
         "variables.tenant.spec.namespaces.map(n, n.name) + [namespaceObject.metadata.name]"),
        ("network", "variables.tenant.spec.?network.orValue({})"),
        ("egressEntries", "variables.network.?egress.orValue([])"),
        ("approved", "variables.network.?approvedPrivateRanges.orValue([])"),
        ("destinations", destinations),
        ("allowedPriorityClasses", "variables.tenant.spec.?allowedPriorityClasses.orValue([])"),
        ("isNetworkPolicy", "request.resource.resource == 'networkpolicies'"),
        ("isService", "request.resource.resource == 'services'"),
        ("isSecret", "request.resource.resource == 'secrets'"),
        ("isPod", "!(variables.isNetworkPolicy || variables.isService || variables.isSecret)"),
        ("policySpec", "variables.isNetworkPolicy ? dyn(object).?spec.orValue({}) : {}"),
        ("objectSpec", "dyn(object).?spec.orValue({})"),
        ("template", "variables.isPod ? (\n" + cel.template_of("object") + ") : {}"),
        ("prefix", "variables.isPod ? (\n" + cel.prefix_of_kind() + ") : ''"),
        ("podSpec", f"{cel.opt('variables.template', 'spec')}.orValue({{}})"),
        ("violations", "!variables.mine ? [] : (\n" + "\n+ ".join(
            f"({part})" for part in (_network_policy(), _service(), _secret(), _priority()))
         + ")"),
    ]
    return [{"name": name, "expression": expression} for name, expression in parts]


def policy() -> dict[str, Any]:
    """The ValidatingAdmissionPolicy (parameterised by Tenants)."""
    from tenantry.model import common, tenant

    groups: dict[str, list[str]] = {"": ["services", "secrets"],
                                    "networking.k8s.io": ["networkpolicies"]}
    for (group, _), plural in cel.RESOURCES.items():
        groups.setdefault(group, []).append(plural)
    message = (f"{lit(MESSAGE_PREFIX)} + (size(variables.violations) <= {cel.MESSAGE_ITEMS} ? "
               f"variables.violations.join('; ') : variables.violations.slice(0, "
               f"{cel.MESSAGE_ITEMS}).join('; ') + '; and more')")
    return {
        "apiVersion": cel.ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": POLICY_NAME, "labels": cel._labels()},
        "spec": {
            "failurePolicy": "Fail",
            "paramKind": {"apiVersion": common.API_VERSION, "kind": tenant.KIND},
            "matchConstraints": {
                "namespaceSelector": {"matchExpressions": [
                    {"key": common.TENANT_LABEL, "operator": "Exists"},
                    {"key": NAME_LABEL, "operator": "NotIn",
                     "values": list(cel.EXCLUDED_NAMESPACES)},
                ]},
                "resourceRules": [
                    {"apiGroups": [group], "apiVersions": ["v1"],
                     "operations": ["CREATE", "UPDATE"], "resources": resources}
                    for group, resources in groups.items()
                ],
            },
            # Only legacy token Secrets are judged: every other Secret write skips the policy.
            # The operator's own writes (its NetworkPolicies are the allow-list itself, and
            # carve partial approvals in ways the CEL check is too coarse to follow) are not.
            "matchConditions": [{
                "name": "service-account-token-secrets-only",
                "expression": "request.resource.resource != 'secrets' || "
                              f"dyn(object).?type.orValue('') == "
                              f"{lit(isolation.SERVICE_ACCOUNT_TOKEN_TYPE)}",
            }, {
                "name": "not-the-operator",
                "expression": f"request.userInfo.username != {lit(OPERATOR_USER)}",
            }],
            "variables": variables(),
            "validations": [{
                "expression": "size(variables.violations) == 0",
                "messageExpression": message,
                "message": "breaks tenant isolation",
                "reason": "Forbidden",
            }],
        },
    }


def bindings() -> list[dict[str, Any]]:
    """One binding over every Tenant; each evaluation judges its own tenant's namespaces."""
    return [{
        "apiVersion": cel.ADMISSION_API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": BINDING_NAME, "labels": cel._labels()},
        "spec": {
            "policyName": POLICY_NAME,
            "validationActions": ["Deny"],
            "paramRef": {"selector": {}, "parameterNotFoundAction": "Allow"},
        },
    }]
