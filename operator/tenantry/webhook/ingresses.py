"""The ingresses route, and the cluster-wide view of which Ingress serves which host.

For each Ingress CREATE or UPDATE in a tenant namespace: find the tenant, find the hosts that
Ingresses outside the tenant serve among those this one names, apply `admission.ingress` (host
claims, catch-alls, snippet annotations, the Tenant's allowedHostnames) and answer as the
workloads route does (`workloads.verdict_for`), with one difference the rules module explains:
the rules that protect other tenants refuse in every podSecurity mode.

Which hosts are served comes from `IngressHosts`, a list + watch cache of every Ingress in the
cluster (namespace/name -> hosts), tenant or not: a host the platform serves from a namespace of
no tenant is as much taken as another tenant's. Each holder's tenant comes from the
`TenantDirectory`. A cache that finds a conflict refuses at once; a cache that finds none is not
trusted (it may be behind, or still listing after a restart), so the answer is confirmed with a
fresh, paginated list from the apiserver before an Ingress with hosts is admitted. A host that is
stored is therefore always refused. What remains is a race: two Ingresses naming the same new
host, created by two tenants within the same moment, can both be admitted, because neither is
stored when the other is judged. Admission cannot close that (it runs before storage); the
window is the time between two admissions, well under a second.

A lookup that fails refuses with 503 (fail closed, try again). An UPDATE that leaves the judged
parts (hosts, default backend, snippet annotations) unchanged is admitted without evaluation, as
the workloads route does, so that existing Ingresses can still be relabelled and finalized.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from kubernetes_asyncio import client as aclient

from tenantry.admission import ingress
from tenantry.admission.violation import items, mapping
from tenantry.kubeapi import KubeApi
from tenantry.webhook import records, tenancy, workloads
from tenantry.webhook.directory import LOOKUP_ERRORS, Informer, TenantLookup
from tenantry.webhook.review import AdmissionRequest, Handler, Verdict

PATH = f"/apis/{ingress.API_VERSION}/ingresses"
LIST_PAGE = 500
"""Ingresses per page of the confirming list (bounds one response, not the whole list)."""


class HostsUnknown(Exception):
    """Which tenants serve the hosts could not be established; the message says why."""


def ingress_key(obj: Mapping[str, Any]) -> str | None:
    """namespace/name: Ingresses of two namespaces may share a name."""
    metadata = mapping(obj.get("metadata"))
    namespace, name = metadata.get("namespace"), metadata.get("name")
    if isinstance(namespace, str) and isinstance(name, str):
        return f"{namespace}/{name}"
    return None


def served_hosts(obj: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The hosts an Ingress serves, normalized; None when it names none (nothing to keep)."""
    return ingress.host_names(obj) or None


@dataclasses.dataclass(frozen=True, slots=True)
class Holder:
    """An Ingress that serves hosts overlapping the ones asked about."""

    namespace: str
    hosts: tuple[str, ...]
    """Its hosts that overlap."""


def holders(served: Mapping[str, tuple[str, ...]], wanted: Sequence[str]) -> list[Holder]:
    """The Ingresses (namespace/name -> hosts) serving a host that overlaps one of `wanted`."""
    found = []
    for key, hosts in served.items():
        hit = tuple(h for h in hosts if any(ingress.overlaps(w, h) for w in wanted))
        if hit:
            found.append(Holder(key.split("/", 1)[0], hit))
    return found


class HostLookup(Protocol):
    """What the handler needs to know about hosts (IngressHosts; tests may pass a table)."""

    async def claimed_outside(self, wanted: Sequence[str], *, namespace: str, tenant: str,
                              tenants: TenantLookup) -> set[str]: ...


class IngressHosts:
    """Every Ingress's hosts, cluster-wide: a watched cache, confirmed by a list on a miss."""

    def __init__(self, api: KubeApi, *, lookup_timeout: float = 2.0) -> None:
        self._api = api
        self._timeout = lookup_timeout
        self.informer: Informer[tuple[str, ...]] = Informer(
            api.api, PATH, served_hosts, key=ingress_key, what="Ingress hosts")

    async def run(self) -> None:
        """Fill and follow the cache until cancelled (the webhook runs it as one of its tasks)."""
        await self.informer.run()

    async def _live(self) -> dict[str, tuple[str, ...]]:
        """Every Ingress's hosts, read now from the apiserver (a consistent read)."""
        served: dict[str, tuple[str, ...]] = {}
        token = ""
        while True:
            query = [("limit", str(LIST_PAGE))] + ([("continue", token)] if token else [])
            page = await self._api.api.call_api(
                PATH, "GET", query_params=query, header_params={"Accept": "application/json"},
                response_types_map={200: "object"}, auth_settings=["BearerToken"],
                _return_http_data_only=True, _request_timeout=self._timeout)
            for obj in items(page.get("items")):
                key, hosts = ingress_key(obj), served_hosts(obj)
                if key is not None and hosts is not None:
                    served[key] = hosts
            token = str(mapping(page.get("metadata")).get("continue") or "")
            if not token:
                return served

    async def _outside(self, found: Sequence[Holder], *, namespace: str, tenant: str,
                       tenants: TenantLookup) -> set[str]:
        claimed: set[str] = set()
        for holder in found:
            if holder.namespace == namespace:
                continue
            owner = await tenants.tenant_of(holder.namespace)
            if owner.tenant == tenant:
                continue
            if owner.tenant is None and owner.code == 503:
                raise HostsUnknown(owner.problem or "namespace lookup failed")
            claimed.update(holder.hosts)  # another tenant's, no tenant's, or unknown: taken
        return claimed

    async def claimed_outside(self, wanted: Sequence[str], *, namespace: str, tenant: str,
                              tenants: TenantLookup) -> set[str]:
        """The hosts overlapping `wanted` that Ingresses outside `tenant` serve (HostsUnknown
        when that cannot be established)."""
        claimed = await self._outside(holders(self.informer.items, wanted),
                                      namespace=namespace, tenant=tenant, tenants=tenants)
        if claimed:
            return claimed
        try:
            served = await asyncio.wait_for(self._live(), self._timeout)
        except (aclient.ApiException, *LOOKUP_ERRORS) as error:
            reason = "timed out" if isinstance(error, TimeoutError) else type(error).__name__
            if isinstance(error, aclient.ApiException):
                reason = f"HTTP {error.status} {error.reason}"
            raise HostsUnknown(f"cannot list Ingresses ({reason})") from None
        return await self._outside(holders(served, wanted), namespace=namespace, tenant=tenant,
                                   tenants=tenants)


def _judged(obj: Mapping[str, Any]) -> Any:
    spec = mapping(obj.get("spec"))
    annotations = mapping(mapping(obj.get("metadata")).get("annotations"))
    rules = [mapping(rule).get("host") for rule in items(spec.get("rules"))]
    snippets = {k: v for k, v in annotations.items()
                if isinstance(k, str) and ingress.is_snippet_annotation(k)}
    return rules, spec.get("tls"), spec.get("defaultBackend"), snippets


def judged_part_changed(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    """Whether an UPDATE changes what the rules judge; without an old object, everything is."""
    return old is None or bool(_judged(new) != _judged(old))


def handler(webhook: str, tenants: TenantLookup, hosts: HostLookup | None,
            recorder: records.Recorder) -> Handler:
    """The route's handler: AdmissionRequest -> Verdict. Without `hosts`, an Ingress that names
    a host is refused: whose it is cannot be known."""

    async def validate(request: AdmissionRequest) -> Verdict:
        obj = request.typed_object()
        if request.operation not in ("CREATE", "UPDATE") or obj is None:
            return Verdict.allow()
        if request.operation == "UPDATE" and not judged_part_changed(
                obj, request.typed_old_object()):
            return Verdict.allow()
        owner = await tenancy.tenant_or_verdict(webhook, request, tenants, recorder)
        if isinstance(owner, Verdict):
            return owner
        found = owner.found
        assert found.tenant is not None and found.spec is not None
        spec, wanted = found.spec, ingress.host_names(obj)
        claimed: set[str] = set()
        try:
            if wanted and hosts is None:
                raise HostsUnknown("this webhook keeps no view of Ingress hosts")
            if wanted and hosts is not None:
                claimed = await hosts.claimed_outside(
                    wanted, namespace=request.namespace, tenant=found.tenant, tenants=tenants)
        except HostsUnknown as error:
            verdict = Verdict.deny(
                f"tenant {found.tenant!r}: cannot tell whether another tenant serves "
                f"{', '.join(wanted)} ({error}); refusing (fail closed), try again", code=503)
            recorder.record(records.of_request(webhook, request, tenant=found.tenant, mode="",
                                               verdict=verdict))
            return verdict
        violations = ingress.check_ingress(obj, spec.ingress, claimed=claimed,
                                           namespace=request.namespace)
        decision = ingress.decide(violations, spec.pod_security.mode)
        verdict = workloads.verdict_for(found.tenant, decision)
        recorder.record(records.of_request(webhook, request, tenant=found.tenant,
                                           mode=decision.mode.value, verdict=verdict,
                                           decision=decision))
        return verdict

    return validate
