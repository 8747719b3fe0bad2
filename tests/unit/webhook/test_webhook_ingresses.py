"""The ingresses handler and its host view, without a cluster: a conflict in the cache refuses at
once, a clean cache is confirmed by a fresh (paginated) list, the tenant's own namespaces share
hosts, and anything that cannot be established refuses with 503."""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio import client as aclient

from tenantry.admission import ingress
from tenantry.kubeapi import KubeApi
from tenantry.webhook import ingresses, records, review
from tenantry.webhook.directory import TenantOf
from tests.unit.webhook.webhook_unit_helpers import Collected, Tenants, tenant_spec

WEBHOOK = "ingresses.admission.tenantry.dev"


def an_ingress(namespace: str, *hosts: str, name: str = "web",
               annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": namespace,
                         "annotations": annotations or {}},
            "spec": {"rules": [{"host": h} for h in hosts]}}


def request(obj: dict[str, Any], *, old: dict[str, Any] | None = None) -> review.AdmissionRequest:
    gv = {"group": "networking.k8s.io", "version": "v1"}
    body = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {**gv, "kind": "Ingress"},
        "resource": {**gv, "resource": "ingresses"},
        "operation": "UPDATE" if old else "CREATE", "namespace": obj["metadata"]["namespace"],
        "name": obj["metadata"]["name"], "userInfo": {"username": "bob"},
        "object": obj, "oldObject": old}}
    return review.parse_review(json.dumps(body).encode())


class FakeClient:
    """The apiserver's Ingress list, in pages of one; or an error."""

    def __init__(self, listed: list[dict[str, Any]], error: Exception | None = None) -> None:
        self.listed = listed
        self.error = error
        self.calls = 0

    async def call_api(self, path: str, method: str, **kwargs: Any) -> dict[str, Any]:
        self.calls += 1
        if self.error is not None:
            raise self.error
        query = dict(kwargs["query_params"])
        index = int(query.get("continue", 0))
        page = self.listed[index:index + 1]
        more = str(index + 1) if index + 1 < len(self.listed) else ""
        return {"items": page, "metadata": {"continue": more}}


def two_tenants() -> Tenants:
    a, b = tenant_spec(), tenant_spec(ingress={"allowedHostnames": ["*.example.com"]})
    return Tenants({"a-one": TenantOf("a-one", "a", spec=a),
                    "a-two": TenantOf("a-two", "a", spec=a),
                    "b": TenantOf("b", "b", spec=b)})


def view(fake: FakeClient, cached: dict[str, tuple[str, ...]] | None = None
         ) -> ingresses.IngressHosts:
    hosts = ingresses.IngressHosts(KubeApi(fake))  # type: ignore[arg-type]
    hosts.informer.items = dict(cached or {})
    return hosts


async def judge(hosts: ingresses.HostLookup | None, obj: dict[str, Any],
                **kwargs: Any) -> tuple[review.Verdict, list[records.AdmissionRecord]]:
    sink = Collected()
    validate = ingresses.handler(WEBHOOK, two_tenants(), hosts, records.Recorder([sink]))
    return await validate(request(obj, **kwargs)), sink.records


async def test_a_conflict_in_the_cache_refuses_without_listing() -> None:
    fake = FakeClient([])
    verdict, recorded = await judge(view(fake, {"a-one/web": ("*.example.com",)}),
                                    an_ingress("b", "shop.example.com"))
    assert not verdict.allowed and verdict.code == 403
    assert "[ingressHostClaimed]" in verdict.message and "spec.rules[0].host" in verdict.message
    assert fake.calls == 0
    assert [v.rule_id for v in recorded[0].violations] == [ingress.HOST_CLAIMED]


async def test_a_clean_cache_is_confirmed_by_a_paginated_list() -> None:
    fake = FakeClient([an_ingress("a-two", "other.example.com", name="x"),
                       an_ingress("a-one", "shop.example.com", name="y")])
    verdict, _ = await judge(view(fake), an_ingress("b", "shop.example.com"))
    assert not verdict.allowed and "[ingressHostClaimed]" in verdict.message
    assert fake.calls == 2


async def test_the_tenants_own_namespaces_share_hosts() -> None:
    fake = FakeClient([an_ingress("a-one", "shop.example.com", name="web")])
    hosts = view(fake, {"a-one/web": ("shop.example.com",)})
    verdict, _ = await judge(hosts, an_ingress("a-two", "shop.example.com"))
    assert verdict.allowed, verdict


async def test_a_host_in_a_namespace_of_no_tenant_is_taken() -> None:
    verdict, _ = await judge(view(FakeClient([]), {"platform/login": ("login.example.com",)}),
                             an_ingress("b", "login.example.com"))
    assert not verdict.allowed and "[ingressHostClaimed]" in verdict.message


async def test_a_list_that_fails_refuses_with_503() -> None:
    fake = FakeClient([], error=aclient.ApiException(status=403, reason="Forbidden"))
    verdict, recorded = await judge(view(fake), an_ingress("b", "new.example.com"))
    assert not verdict.allowed and verdict.code == 503
    assert "cannot list Ingresses (HTTP 403 Forbidden)" in verdict.message
    assert recorded and not recorded[0].allowed


async def test_without_a_host_view_hosts_are_refused_but_other_rules_still_apply() -> None:
    verdict, _ = await judge(None, an_ingress("b", "new.example.com"))
    assert not verdict.allowed and verdict.code == 503
    snippet = an_ingress("b", annotations={"x.io/server-snippet": "y"})
    snippet["spec"]["rules"] = [{"host": ""}]
    verdict, _ = await judge(None, snippet)
    assert verdict.code == 403 and "[ingressSnippetAnnotation]" in verdict.message
    assert "[ingressCatchAll]" in verdict.message


async def test_updates_that_leave_the_judged_parts_alone_are_not_judged() -> None:
    old = an_ingress("b", "shop.example.com")  # e.g. admitted before the rules existed
    relabelled = {**old, "metadata": {**old["metadata"], "labels": {"tier": "web"}}}
    fake = FakeClient([], error=AssertionError("not asked"))
    verdict, recorded = await judge(view(fake, {"a-one/web": ("shop.example.com",)}),
                                    relabelled, old=old)
    assert verdict.allowed and recorded == []
    moved = an_ingress("b", "shop.example.com", "more.example.com")
    verdict, _ = await judge(view(fake, {"a-one/web": ("shop.example.com",)}), moved, old=old)
    assert not verdict.allowed


def test_the_cache_keeps_ingresses_by_namespace_and_name() -> None:
    assert ingresses.ingress_key(an_ingress("a-one", name="web")) == "a-one/web"
    assert ingresses.served_hosts(an_ingress("a-one")) is None
    assert ingresses.served_hosts(an_ingress("a-one", "B.example.com", "a.example.com")) == (
        "a.example.com", "b.example.com")
