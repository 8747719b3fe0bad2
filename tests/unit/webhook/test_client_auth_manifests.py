"""What we ship requires the apiserver's client certificate, and fences tenantry-system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tenantry.devcluster import cluster

ROOT = Path(__file__).resolve().parents[3] / "manifests"


def _load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _webhook_pod() -> dict[str, Any]:
    deployment = next(d for d in _load(ROOT / "webhook" / "deployment.yaml")
                      if d["kind"] == "Deployment")
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


def _option(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_the_webhook_requires_the_apiservers_certificate_from_the_configmap() -> None:
    pod = _webhook_pod()
    container = pod["containers"][0]
    args = container["args"]
    assert "--insecure-no-client-auth" not in args
    assert _option(args, "--client-cn") == cluster.WEBHOOK_CLIENT_CN
    ca_file = Path(_option(args, "--client-ca-file"))
    mount = next(m for m in container["volumeMounts"] if Path(m["mountPath"]) == ca_file.parent)
    assert mount["readOnly"] is True and "subPath" not in mount  # subPath would stop updates
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["configMap"]["name"] == "tenantry-webhook-client-ca"
    assert volume["configMap"]["items"] == [{"key": "ca.crt", "path": ca_file.name}]


def test_tenantry_system_denies_ingress_but_the_webhook_and_health_ports() -> None:
    assert "network/tenantry-system.yaml" in yaml.safe_load(
        (ROOT / "kustomization.yaml").read_text())["resources"]
    policies = _load(ROOT / "network" / "tenantry-system.yaml")
    assert all(p["kind"] == "NetworkPolicy" and p["metadata"]["namespace"] == "tenantry-system"
               for p in policies)
    deny = [p for p in policies if p["spec"]["podSelector"] == {}]
    assert len(deny) == 1 and deny[0]["spec"]["policyTypes"] == ["Ingress"]
    assert "ingress" not in deny[0]["spec"]
    allowed = {}
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("ports"), f"{policy['metadata']['name']} opens every port"
            component = policy["spec"]["podSelector"]["matchLabels"][
                "app.kubernetes.io/component"]
            allowed[component] = sorted(port["port"] for port in rule["ports"])
    container = _webhook_pod()["containers"][0]
    assert allowed == {"webhook": [container["ports"][0]["containerPort"]], "operator": [8080]}
