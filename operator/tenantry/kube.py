"""Thin helpers around the official `kubernetes` client for the CLI, dev tooling and tests.

The operator's reconcilers use their own async client; this module is for synchronous, one-shot
work: load a kubeconfig, server-side apply a list of manifests, wait for CRDs to be Established.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import yaml
from kubernetes import client, config
from kubernetes.dynamic import DynamicClient

FIELD_MANAGER = "tenantry"


def api_client(kubeconfig: Path | str | None = None) -> client.ApiClient:
    """An ApiClient for `kubeconfig`, or the usual KUBECONFIG / in-cluster lookup."""
    if kubeconfig is not None:
        return cast(client.ApiClient, config.new_client_from_config(config_file=str(kubeconfig)))
    try:
        config.load_incluster_config()
    except config.ConfigException:
        return cast(client.ApiClient, config.new_client_from_config())
    return client.ApiClient()


def load_manifests(paths: Iterable[Path]) -> list[dict[str, Any]]:
    """Every document of every YAML file (directories: their *.yaml files, sorted)."""
    documents: list[dict[str, Any]] = []
    for path in paths:
        files = sorted(path.glob("*.yaml")) if path.is_dir() else [path]
        for file in files:
            documents.extend(d for d in yaml.safe_load_all(file.read_text()) if d)
    return documents


def apply(api: client.ApiClient, documents: Iterable[dict[str, Any]], *,
          field_manager: str = FIELD_MANAGER, dry_run: bool = False) -> list[Any]:
    """Server-side apply each document; returns the objects as the server has them."""
    dynamic = DynamicClient(api)
    applied = []
    for document in documents:
        resource = dynamic.resources.get(api_version=document["apiVersion"],
                                         kind=document["kind"])
        kwargs: dict[str, Any] = {"field_manager": field_manager, "force_conflicts": True}
        if dry_run:
            kwargs["dry_run"] = "All"
        namespace = document.get("metadata", {}).get("namespace")
        if resource.namespaced:
            kwargs["namespace"] = namespace or "default"
        applied.append(resource.server_side_apply(body=document, **kwargs))
    return applied


def wait_for_crds(api: client.ApiClient, names: Iterable[str], timeout: float = 30.0) -> None:
    """Block until each named CRD is Established and its objects can really be listed.

    Established alone is not enough: for a moment after it, lists still fail with 429
    "storage is (re)initializing", and a controller that starts its watches then may stall.
    """
    extensions = client.ApiextensionsV1Api(api)
    custom = client.CustomObjectsApi(api)
    pending = set(names)
    deadline = time.monotonic() + timeout
    while pending:
        for name in list(pending):
            crd = extensions.read_custom_resource_definition(name)
            conditions = (crd.status.conditions or []) if crd.status else []
            if not any(c.type == "Established" and c.status == "True" for c in conditions):
                continue
            version = crd.spec.versions[0].name
            try:
                custom.list_cluster_custom_object(crd.spec.group, version,
                                                  crd.spec.names.plural, limit=1)
            except client.ApiException as error:
                if error.status != 429:
                    raise
                continue
            pending.discard(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"CRDs not ready after {timeout:.0f}s: {sorted(pending)}")
        time.sleep(0.2)
