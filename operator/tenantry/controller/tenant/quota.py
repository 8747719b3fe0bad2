"""ResourceQuota and LimitRange of a tenant namespace.

The quota applies to each namespace separately (Kubernetes has no cross-namespace quota): a
tenant with three namespaces may use three times `spec.quota`. The LimitRange gives containers
that declare nothing a request and a limit, which the cpu/memory quota otherwise demands of
every container, and caps what any one container may ask for.
"""

from __future__ import annotations

from tenantry.controller.tenant import meta
from tenantry.model import tenant

QUOTA_NAME = f"{meta.NAME_PREFIX}quota"
LIMITS_NAME = f"{meta.NAME_PREFIX}limits"


def quota_hard(quota: tenant.Quota) -> dict[str, str]:
    """`spec.hard` of the ResourceQuota; counts as strings, as the API returns them."""
    hard = {
        "requests.cpu": quota.cpu,
        "limits.cpu": quota.cpu,
        "requests.memory": quota.memory,
        "limits.memory": quota.memory,
        "requests.ephemeral-storage": quota.ephemeral_storage,
        "limits.ephemeral-storage": quota.ephemeral_storage,
        "requests.storage": quota.storage,
        "pods": str(quota.pods),
        "services": str(quota.services),
        # 0 by default: a LoadBalancer or NodePort opens the tenant to the world or to every
        # node's address, outside any NetworkPolicy's reach on many CNIs.
        "services.loadbalancers": str(quota.services_load_balancers),
        "services.nodeports": str(quota.services_node_ports),
        "secrets": str(quota.secrets),
        "configmaps": str(quota.config_maps),
        "persistentvolumeclaims": str(quota.persistent_volume_claims),
    }
    return dict(sorted(hard.items()))


def resource_quota(tenant_name: str, tenant_uid: str | None, namespace: str,
                   quota: tenant.Quota) -> meta.Manifest:
    """The ResourceQuota `tenantry-quota` of one namespace."""
    return {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": meta.metadata(QUOTA_NAME, tenant_name=tenant_name, tenant_uid=tenant_uid,
                                  namespace=namespace),
        "spec": {"hard": quota_hard(quota)},
    }


def limit_range(tenant_name: str, tenant_uid: str | None, namespace: str,
                limits: tenant.Limits) -> meta.Manifest:
    """The LimitRange `tenantry-limits` of one namespace: container defaults and maxima.

    The apiserver refuses a LimitRange whose defaultRequest > default > max; the model does not
    compare quantities, so such a spec surfaces as an apply error in the Quotas condition.
    """
    return {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": meta.metadata(LIMITS_NAME, tenant_name=tenant_name, tenant_uid=tenant_uid,
                                  namespace=namespace),
        "spec": {"limits": [{
            "type": "Container",
            "default": {"cpu": limits.default_cpu, "memory": limits.default_memory},
            "defaultRequest": {"cpu": limits.default_request_cpu,
                               "memory": limits.default_request_memory},
            "max": {"cpu": limits.max_cpu, "memory": limits.max_memory},
        }]},
    }
