"""Services that open the nodes to the outside, refused when the tenant's quota allows none.

The ResourceQuota the operator writes would refuse them too, but with a quota error that names no
rule; refusing at admission says why, and `tenantry check` catches it before a deploy.

- `nodePortServices`: `type: NodePort` when quota.servicesNodePorts is 0. A LoadBalancer service
  also takes node ports (and counts against `services.nodeports`) unless it sets
  `allocateLoadBalancerNodePorts: false`, so that is required of it too.
- `loadBalancerServices`: `type: LoadBalancer` when quota.servicesLoadBalancers is 0.

Non-zero quotas are left to the ResourceQuota, which counts across the namespace.
"""

from __future__ import annotations

from collections.abc import Mapping

from tenantry.admission import podspecs
from tenantry.admission.violation import Violation, mapping, show
from tenantry.model import tenant

NODE_PORT_SERVICES = "nodePortServices"
LOAD_BALANCER_SERVICES = "loadBalancerServices"

RULES: Mapping[str, str] = {
    NODE_PORT_SERVICES: "no NodePort services (nor node ports for LoadBalancers) when the "
                        "tenant's quota.servicesNodePorts is 0",
    LOAD_BALANCER_SERVICES: "no LoadBalancer services when the tenant's "
                            "quota.servicesLoadBalancers is 0",
}
RULE_IDS = frozenset(RULES)


def is_service(obj: podspecs.Obj) -> bool:
    return obj.get("kind") == "Service" and obj.get("apiVersion") == "v1"


def check_service(service: podspecs.Obj, quota: tenant.Quota) -> list[Violation]:
    """Every violation of a core/v1 Service under the tenant's quota; [] for other objects."""
    if not is_service(service):
        return []
    spec = mapping(service.get("spec"))
    kind = spec.get("type")
    found = []
    if kind == "NodePort" and quota.services_node_ports == 0:
        found.append(Violation(
            NODE_PORT_SERVICES, "spec.type",
            'must not be "NodePort": the tenant allows no node ports '
            "(quota.servicesNodePorts is 0); use ClusterIP", "ClusterIP"))
    if kind == "LoadBalancer":
        if quota.services_load_balancers == 0:
            found.append(Violation(
                LOAD_BALANCER_SERVICES, "spec.type",
                'must not be "LoadBalancer": the tenant allows no load balancers '
                "(quota.servicesLoadBalancers is 0); use ClusterIP", "ClusterIP"))
        allocate = spec.get("allocateLoadBalancerNodePorts")
        if quota.services_node_ports == 0 and allocate is not False:
            found.append(Violation(
                NODE_PORT_SERVICES, "spec.allocateLoadBalancerNodePorts",
                f"must be false (is {show(allocate)}): the tenant allows no node ports "
                "(quota.servicesNodePorts is 0)", "false"))
    return found
