"""The local control plane runs DenyServiceExternalIPs, as real clusters should (CVE-2020-8554):
whoever may create a Service could otherwise capture traffic meant for any IP address."""

from __future__ import annotations

import pytest
from kubernetes import client

from tests.conftest import api_message
from tests.helpers import unique


def test_external_ips_are_refused_even_for_a_cluster_admin(admin_api: client.ApiClient,
                                                           namespace: str) -> None:
    core = client.CoreV1Api(admin_api)
    service = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": unique("mitm"), "namespace": namespace},
               "spec": {"ports": [{"port": 443}], "externalIPs": ["8.8.8.8"]}}
    with pytest.raises(client.ApiException) as refused:
        core.create_namespaced_service(namespace, service)
    assert refused.value.status == 403
    assert "Use of external IPs is denied by admission control" in api_message(refused.value)
    # Without them the same Service is fine: only the field is refused.
    service["spec"] = {"ports": [{"port": 443}]}
    core.create_namespaced_service(namespace, service, dry_run="All")
