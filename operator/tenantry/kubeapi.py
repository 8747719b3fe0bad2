"""Tenantry's async door to the Kubernetes API: get / list / apply / delete of dicts.

The operator, the webhook and the API pod all use it (so it lives beside them, not in
`controller/`: the components share it, none owns it).

Why kubernetes_asyncio: it is the official client's generated API surface on asyncio, so it runs
on kopf's event loop without thread pools, shares auth and kubeconfig handling with the
`kubernetes` package the CLI and tests use, and lets us send server-side apply patches. Builders
produce plain dicts, so this module addresses objects by (apiVersion, kind) through a fixed table
of the kinds Tenantry manages: no discovery round trips on the hot path.

The environment is read once: kubernetes_asyncio's HTTP session trusts it, so aiohttp looks the
proxy variables up and reads ~/.netrc again on every request, each time in a thread of the
default executor. For a burst of Credentials that was a tenth of the operator's CPU (py-spy,
bench/bench_credentials.py). `from_kubeconfig` resolves the proxy for the apiserver once, as
the variables say (kubeconfig's own `proxy-url` first), and gives the client a session that does
not look again.
"""

from __future__ import annotations

import dataclasses
import urllib.parse
import urllib.request
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client as aclient
from kubernetes_asyncio import config as aconfig

FIELD_MANAGER = "tenantry-operator"


@dataclasses.dataclass(frozen=True)
class Kind:
    api_version: str
    plural: str
    namespaced: bool

    def collection(self, namespace: str | None) -> str:
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        if self.namespaced:
            if not namespace:
                raise ValueError(f"{self.plural} are namespaced: a namespace is required")
            return f"{prefix}/namespaces/{namespace}/{self.plural}"
        return f"{prefix}/{self.plural}"


KINDS: dict[tuple[str, str], Kind] = {
    (k.api_version, kind): k
    for kind, k in {
        "Namespace": Kind("v1", "namespaces", False),
        "Secret": Kind("v1", "secrets", True),
        "ConfigMap": Kind("v1", "configmaps", True),
        "Event": Kind("v1", "events", True),
        "ServiceAccount": Kind("v1", "serviceaccounts", True),
        "ResourceQuota": Kind("v1", "resourcequotas", True),
        "LimitRange": Kind("v1", "limitranges", True),
        "NetworkPolicy": Kind("networking.k8s.io/v1", "networkpolicies", True),
        "Role": Kind("rbac.authorization.k8s.io/v1", "roles", True),
        "RoleBinding": Kind("rbac.authorization.k8s.io/v1", "rolebindings", True),
        "ClusterRole": Kind("rbac.authorization.k8s.io/v1", "clusterroles", False),
        "ClusterRoleBinding": Kind("rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
        "ValidatingWebhookConfiguration": Kind(
            "admissionregistration.k8s.io/v1", "validatingwebhookconfigurations", False),
        "ValidatingAdmissionPolicy": Kind(
            "admissionregistration.k8s.io/v1", "validatingadmissionpolicies", False),
        "ValidatingAdmissionPolicyBinding": Kind(
            "admissionregistration.k8s.io/v1", "validatingadmissionpolicybindings", False),
        "SelfSubjectReview": Kind("authentication.k8s.io/v1", "selfsubjectreviews", False),
        "TokenReview": Kind("authentication.k8s.io/v1", "tokenreviews", False),
        "Lease": Kind("coordination.k8s.io/v1", "leases", True),
        "PriorityClass": Kind("scheduling.k8s.io/v1", "priorityclasses", False),
        "Tenant": Kind("tenantry.dev/v1alpha1", "tenants", False),
        "Credential": Kind("tenantry.dev/v1alpha1", "credentials", True),
        "RotationPolicy": Kind("tenantry.dev/v1alpha1", "rotationpolicies", True),
    }.items()
}


def kind_of(api_version: str, kind: str) -> Kind:
    try:
        return KINDS[(api_version, kind)]
    except KeyError:
        raise ValueError(f"Tenantry does not manage {kind} ({api_version})") from None


def object_path(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    kind = kind_of(obj["apiVersion"], obj["kind"])
    return f"{kind.collection(meta.get('namespace'))}/{meta['name']}"


class ApiError(Exception):
    """A Kubernetes API call failed; `status` is the HTTP status, `reason` the Status reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def _api_error(error: aclient.ApiException) -> ApiError:
    import json

    try:
        body = json.loads(error.body or "{}")
    except ValueError:
        body = {}
    return ApiError(int(error.status or 0), str(body.get("reason", error.reason or "")),
                    str(body.get("message", error.body or "")))


def environment_proxy(server: str) -> str | None:
    """The proxy $HTTPS_PROXY / $HTTP_PROXY name for `server` (an URL), unless $NO_PROXY
    exempts it: what aiohttp's trust_env would pick for each request."""
    url = urllib.parse.urlsplit(server)
    if not url.hostname or url.scheme not in ("http", "https"):
        return None
    if urllib.request.proxy_bypass(url.hostname):
        return None
    return urllib.request.getproxies().get(url.scheme)


# kubernetes_asyncio's read buffer: watch events of large objects exceed aiohttp's default.
_READ_BUFSIZE = 2**21


def read_environment_once(api: aclient.ApiClient) -> None:
    """Give `api` a session that does not consult the environment per request (see above),
    with the proxy the environment names for its server; before its first request."""
    rest = api.rest_client
    if rest.proxy is None:
        rest.proxy = environment_proxy(api.configuration.host)
    trusting = rest.pool_manager
    rest.pool_manager = aiohttp.ClientSession(connector=trusting.connector, trust_env=False,
                                              read_bufsize=_READ_BUFSIZE)
    trusting.detach()  # the connector now belongs to the new session


class KubeApi:
    """Async CRUD of plain-dict objects over one ApiClient."""

    def __init__(self, api: aclient.ApiClient) -> None:
        self.api = api

    @classmethod
    async def from_kubeconfig(cls, path: str | None = None) -> KubeApi:
        if path:
            api = await aconfig.new_client_from_config(config_file=path)
        else:
            try:
                aconfig.load_incluster_config()
                api = aclient.ApiClient()
            except aconfig.ConfigException:
                api = await aconfig.new_client_from_config()
        read_environment_once(api)
        return cls(api)

    async def close(self) -> None:
        await self.api.close()

    async def _call(self, path: str, method: str, *, query: list[tuple[str, str]] | None = None,
                    body: Any = None, content_type: str = "application/json") -> Any:
        try:
            response = await self.api.call_api(
                path, method,
                query_params=query or [],
                header_params={"Accept": "application/json", "Content-Type": content_type},
                body=body,
                response_types_map={200: "object", 201: "object", 202: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )
        except aclient.ApiException as error:
            raise _api_error(error) from None
        return response

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any] | None:
        path = f"{kind_of(api_version, kind).collection(namespace)}/{name}"
        try:
            return cast(dict[str, Any], await self._call(path, "GET"))
        except ApiError as error:
            if error.status == 404:
                return None
            raise

    async def list(self, api_version: str, kind: str, namespace: str | None = None, *,
                   all_namespaces: bool = False,
                   label_selector: str | None = None) -> list[dict[str, Any]]:
        """Objects of one kind in `namespace`, or everywhere with `all_namespaces`."""
        query = [("labelSelector", label_selector)] if label_selector else []
        resource = kind_of(api_version, kind)
        if all_namespaces and resource.namespaced:
            path = dataclasses.replace(resource, namespaced=False).collection(None)
        else:
            path = resource.collection(namespace)
        listing = await self._call(path, "GET", query=query)
        return cast(list[dict[str, Any]], listing.get("items") or [])

    async def apply(self, obj: dict[str, Any], *, field_manager: str = FIELD_MANAGER,
                    force: bool = True) -> dict[str, Any]:
        """Server-side apply: we own exactly the fields we send, nothing else."""
        query = [("fieldManager", field_manager)]
        if force:
            query.append(("force", "true"))
        return cast(dict[str, Any], await self._call(
            object_path(obj), "PATCH", query=query, body=obj,
            content_type="application/apply-patch+yaml"))

    async def create(self, obj: dict[str, Any], *, field_manager: str | None = None,
                     dry_run: bool = False) -> dict[str, Any]:
        """POST: create-if-absent (409 AlreadyExists otherwise), which makes it a claim.
        `dry_run`: admission judges it, nothing is stored."""
        kind = kind_of(obj["apiVersion"], obj["kind"])
        path = kind.collection(obj.get("metadata", {}).get("namespace"))
        query = [("fieldManager", field_manager)] if field_manager else []
        if dry_run:
            query.append(("dryRun", "All"))
        return cast(dict[str, Any], await self._call(path, "POST", query=query, body=obj))

    async def whoami(self) -> str:
        """The user name the API server sees for this client."""
        review = await self.create({"apiVersion": "authentication.k8s.io/v1",
                                    "kind": "SelfSubjectReview", "metadata": {}})
        return str(review["status"]["userInfo"]["username"])

    async def merge_patch(self, api_version: str, kind: str, name: str, patch: dict[str, Any],
                          namespace: str | None = None,
                          subresource: str | None = None) -> dict[str, Any]:
        path = f"{kind_of(api_version, kind).collection(namespace)}/{name}"
        if subresource:
            path += f"/{subresource}"
        return cast(dict[str, Any], await self._call(
            path, "PATCH", body=patch, content_type="application/merge-patch+json"))

    async def delete(self, api_version: str, kind: str, name: str,
                     namespace: str | None = None, *,
                     preconditions: dict[str, str] | None = None) -> bool:
        """Delete with background propagation; False if it was already gone.

        `preconditions` ({"uid": ..., "resourceVersion": ...}): delete only that version of the
        object, else 409 Conflict."""
        path = f"{kind_of(api_version, kind).collection(namespace)}/{name}"
        body: dict[str, Any] = {"propagationPolicy": "Background"}
        if preconditions:
            body["preconditions"] = preconditions
        try:
            await self._call(path, "DELETE", body=body)
        except ApiError as error:
            if error.status == 404:
                return False
            raise
        return True
