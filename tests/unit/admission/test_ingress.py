"""Ingress rules (pure): host claims across tenants, catch-alls, snippet annotations, and the
Tenant's allowedHostnames; and the decision under each podSecurity mode."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from tenantry.admission import check, ingress
from tenantry.model.tenant import EnforcementMode, IngressPolicy, TenantSpec


def an_ingress(*hosts: str, tls: list[list[str]] | None = None,
               annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    backend = {"service": {"name": "web", "port": {"number": 80}}}
    rules = [{"host": h, "http": {"paths": [{"path": "/", "pathType": "Prefix",
                                             "backend": backend}]}} for h in hosts]
    body: dict[str, Any] = {"rules": rules, **spec}
    if tls is not None:
        body["tls"] = [{"hosts": entry, "secretName": "cert"} for entry in tls]
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress",
            "metadata": {"name": "web", "namespace": "b-prod",
                         "annotations": annotations or {}},
            "spec": body}


def found(obj: dict[str, Any], policy: IngressPolicy | None = None,
          claimed: set[str] | None = None) -> set[tuple[str, str]]:
    return {(v.field_path, v.rule_id) for v in ingress.check_ingress(obj, policy,
                                                                     claimed=claimed)}


# -- host claims ---------------------------------------------------------------------------------

def test_a_host_served_elsewhere_is_claimed_in_rules_and_tls() -> None:
    obj = an_ingress("shop.example.com", tls=[["other.example.com", "shop.example.com"]])
    assert found(obj, claimed={"shop.example.com"}) == {
        ("spec.rules[0].host", ingress.HOST_CLAIMED),
        ("spec.tls[0].hosts[1]", ingress.HOST_CLAIMED),
    }


def test_hosts_compare_as_controllers_do_case_and_trailing_dot() -> None:
    # tls hosts are not validated by the apiserver: "Shop.Example.COM." is the same name.
    obj = an_ingress("free.example.com", tls=[["Shop.Example.COM."]])
    assert found(obj, claimed={"shop.example.com"}) == {
        ("spec.tls[0].hosts[0]", ingress.HOST_CLAIMED)}


@pytest.mark.parametrize(("mine", "theirs"), [
    ("x.foo.com", "*.foo.com"),
    ("*.foo.com", "x.foo.com"),
    ("*.foo.com", "*.foo.com"),
])
def test_wildcards_conflict_both_ways(mine: str, theirs: str) -> None:
    assert found(an_ingress(mine), claimed={theirs}) == {
        ("spec.rules[0].host", ingress.HOST_CLAIMED)}


@pytest.mark.parametrize(("mine", "theirs"), [
    ("foo.com", "*.foo.com"),          # a wildcard does not match its own apex
    ("a.b.foo.com", "*.foo.com"),      # ... nor two labels down
    ("*.b.foo.com", "*.foo.com"),      # no name matches both
    ("x.foo.com", "y.foo.com"),
    ("evilfoo.com", "*.foo.com"),
])
def test_hosts_that_no_request_matches_twice_do_not_conflict(mine: str, theirs: str) -> None:
    assert found(an_ingress(mine), claimed={theirs}) == set()


def test_the_message_names_the_host_the_overlap_and_the_rule() -> None:
    [violation] = ingress.check_ingress(an_ingress("x.foo.com"), claimed={"*.foo.com"})
    assert str(violation).startswith('spec.rules[0].host: "x.foo.com" is already served by an '
                                     'Ingress outside this tenant (it overlaps *.foo.com)')
    assert str(violation).endswith("[ingressHostClaimed]")


def test_unknown_claims_are_skipped_offline() -> None:
    assert found(an_ingress("shop.example.com"), claimed=None) == set()


# -- catch-alls and snippets ---------------------------------------------------------------------

def test_rules_without_a_host_and_default_backends_are_catch_alls() -> None:
    obj = an_ingress("", "ok.example.com",
                     defaultBackend={"service": {"name": "web", "port": {"number": 80}}})
    obj["spec"]["rules"].append({"http": {"paths": []}})
    assert found(obj) == {("spec.rules[0].host", ingress.CATCH_ALL),
                          ("spec.rules[2].host", ingress.CATCH_ALL),
                          ("spec.defaultBackend", ingress.CATCH_ALL)}


@pytest.mark.parametrize("key", [
    "nginx.ingress.kubernetes.io/configuration-snippet",
    "nginx.ingress.kubernetes.io/server-snippet",
    "nginx.ingress.kubernetes.io/auth-snippet",
    "nginx.ingress.kubernetes.io/stream-snippet",
    "nginx.ingress.kubernetes.io/modsecurity-snippet",
    "NGINX.ingress.kubernetes.io/Configuration-Snippet",
    "nginx.org/server-snippets",
    "nginx.org/location-snippets",
    "haproxy.org/backend-config-snippet",
    # HAProxy Ingress (jcmoraisjr): raw HAProxy configuration under config-SECTION names.
    "haproxy-ingress.github.io/config-backend",
    "haproxy-ingress.github.io/config-backend-early",
    "ingress.kubernetes.io/config-frontend-late",
    "haproxy-ingress.github.io/config-tcp-service",
    "ingress.kubernetes.io/snippet",
    "snippet",
])
def test_snippet_annotations_are_refused(key: str) -> None:
    obj = an_ingress("ok.example.com", annotations={key: "location / { return 200; }"})
    assert found(obj) == {(f'metadata.annotations["{key}"]', ingress.SNIPPET_ANNOTATION)}


@pytest.mark.parametrize("key", [
    "nginx.ingress.kubernetes.io/rewrite-target",
    "nginx.ingress.kubernetes.io/snippets-enabled-note",
    "example.com/snippet-author",
    "example.com/config-hash",  # config- alone is no snippet
    "cert-manager.io/cluster-issuer",
])
def test_other_annotations_pass(key: str) -> None:
    assert found(an_ingress("ok.example.com", annotations={key: "x"})) == set()


@pytest.mark.parametrize(("key", "value"), [
    ("nginx.ingress.kubernetes.io/auth-tls-secret", "a-prod/client-ca"),
    ("nginx.ingress.kubernetes.io/auth-secret", "kube-system/htpasswd"),
    ("nginx.ingress.kubernetes.io/proxy-ssl-secret", " tenantry-system/upstream "),
    ("nginx.ingress.kubernetes.io/auth-proxy-set-headers", "a-prod/headers"),
    ("nginx.ingress.kubernetes.io/custom-headers", "a-prod/headers"),
    ("nginx.ingress.kubernetes.io/fastcgi-params-configmap", "a-prod/params"),
    ("haproxy.org/auth-secret", "a-prod/users"),
    # HAProxy's upstream TLS: another tenant's CA to trust, or its client certificate to show.
    ("haproxy.org/server-ca", "a-prod/upstream-ca"),
    ("haproxy.org/server-crt", "a-prod/client-cert"),
    ("NGINX.org/Basic-Auth-Secret", "a-prod/users"),
])
def test_annotations_that_name_another_namespaces_objects_are_refused(key: str,
                                                                     value: str) -> None:
    found_here = ingress.check_ingress(an_ingress("ok.example.com", annotations={key: value}))
    assert [(v.field_path, v.rule_id) for v in found_here] == [
        (f'metadata.annotations["{key}"]', ingress.FOREIGN_REFERENCE)]
    assert value.strip().split("/")[0] in found_here[0].message
    assert ingress.decide(found_here, EnforcementMode.AUDIT).allowed is False


@pytest.mark.parametrize(("key", "value"), [
    ("nginx.ingress.kubernetes.io/auth-tls-secret", "b-prod/client-ca"),  # its own namespace
    ("nginx.ingress.kubernetes.io/auth-secret", "htpasswd"),  # plain NAME: its own namespace
    ("nginx.ingress.kubernetes.io/rewrite-target", "/other/path"),
    ("cert-manager.io/cluster-issuer", "letsencrypt/prod"),
])
def test_references_within_the_namespace_and_other_values_pass(key: str, value: str) -> None:
    assert found(an_ingress("ok.example.com", annotations={key: value})) == set()


def test_the_namespace_the_request_names_is_the_ingresses_own() -> None:
    """On create the object may leave metadata.namespace out: the request's namespace counts."""
    obj = an_ingress("ok.example.com", annotations={
        "nginx.ingress.kubernetes.io/auth-tls-secret": "c-prod/ca"})
    del obj["metadata"]["namespace"]
    assert ingress.check_ingress(obj, namespace="c-prod") == []
    # Unknown (offline, no -n): only NAME alone is known to be the Ingress's own.
    [violation] = ingress.check_ingress(obj)
    assert violation.rule_id == ingress.FOREIGN_REFERENCE


# -- allowedHostnames ----------------------------------------------------------------------------

ALLOWED = IngressPolicy(allowed_hostnames=["shop.example.com", "*.apps.example.com"])


@pytest.mark.parametrize("host", ["shop.example.com", "a.apps.example.com",
                                  "a.b.apps.example.com", "*.apps.example.com",
                                  "*.x.apps.example.com"])
def test_hosts_within_the_allow_list_pass(host: str) -> None:
    assert found(an_ingress(host), ALLOWED) == set()


@pytest.mark.parametrize("host", ["apps.example.com", "evilapps.example.com", "example.com",
                                  "*.example.com", "shop.example.com.evil.io"])
def test_hosts_outside_the_allow_list_are_refused(host: str) -> None:
    assert found(an_ingress(host), ALLOWED) == {("spec.rules[0].host", ingress.HOST_NOT_ALLOWED)}


def test_the_allow_list_covers_tls_hosts_and_names_itself() -> None:
    obj = an_ingress("shop.example.com", tls=[["shop.example.com", "pay.example.com"]])
    [violation] = ingress.check_ingress(obj, ALLOWED)
    assert violation.field_path == "spec.tls[0].hosts[1]"
    assert "spec.ingress.allowedHostnames (shop.example.com, *.apps.example.com)" in \
        violation.message


def test_unset_allows_any_host_and_empty_allows_none() -> None:
    assert found(an_ingress("any.example.org"), IngressPolicy()) == set()
    assert found(an_ingress("any.example.org"), IngressPolicy(allowed_hostnames=[])) == {
        ("spec.rules[0].host", ingress.HOST_NOT_ALLOWED)}


@pytest.mark.parametrize("bad", ["*.*.example.com", "Shop.example.com", "example.com.",
                                 "*", "a_b.example.com", "-a.example.com",
                                 "x" * 64 + ".example.com"])
def test_allowed_hostnames_are_validated(bad: str) -> None:
    spec = {"members": [{"kind": "User", "name": "a", "role": "owner"}],
            "namespaces": [{"name": "a"}], "ingress": {"allowedHostnames": [bad]}}
    with pytest.raises(pydantic.ValidationError):
        TenantSpec.model_validate(spec)


# -- the decision --------------------------------------------------------------------------------

def test_other_kinds_are_not_judged() -> None:
    assert ingress.check_ingress({"apiVersion": "v1", "kind": "Service",
                                  "metadata": {"annotations": {"x/server-snippet": "y"}}}) == []


@pytest.mark.parametrize("mode", list(EnforcementMode))
def test_rules_that_protect_other_tenants_refuse_in_every_mode(mode: EnforcementMode) -> None:
    for obj, claimed in [(an_ingress("shop.example.com"), {"shop.example.com"}),
                         (an_ingress(""), None),
                         (an_ingress("ok.example.com", annotations={"x/server-snippet": "y"}),
                          None)]:
        decision = ingress.decide(ingress.check_ingress(obj, claimed=claimed), mode)
        assert not decision.allowed, (mode, obj)


def test_the_allow_list_follows_the_mode() -> None:
    violations = ingress.check_ingress(an_ingress("other.example.org"), ALLOWED)
    assert not ingress.decide(violations, EnforcementMode.DENY).allowed
    warned = ingress.decide(violations, EnforcementMode.WARN)
    assert warned.allowed and len(warned.warnings) == 1
    assert ingress.decide(violations, EnforcementMode.AUDIT).allowed
    assert ingress.decide([], EnforcementMode.DENY).allowed


# -- tenantry check (offline) --------------------------------------------------------------------

def test_tenantry_check_judges_snippets_catch_alls_and_the_allow_list(tmp_path: Path) -> None:
    tenant = tmp_path / "tenant.yaml"
    tenant.write_text(yaml.safe_dump({
        "apiVersion": "tenantry.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "b"},
        "spec": {"members": [{"kind": "User", "name": "bob", "role": "owner"}],
                 "namespaces": [{"name": "b-prod"}],
                 "ingress": {"allowedHostnames": ["*.b.example.com"]}}}))
    manifests = tmp_path / "ingresses.yaml"
    manifests.write_text(yaml.safe_dump_all([
        an_ingress("web.b.example.com"),
        an_ingress("web.a.example.com",
                   annotations={"nginx.ingress.kubernetes.io/server-snippet": "x"}),
    ]))
    parser = argparse.ArgumentParser(prog="tenantry")
    check.register(parser.add_subparsers(dest="command", required=True))
    out = io.StringIO()
    args = parser.parse_args(["check", str(manifests), "--tenant", str(tenant)])
    assert args.func(args, stdout=out, stderr=io.StringIO()) == check.EXIT_VIOLATIONS
    text = out.getvalue()
    assert "(document 2): Ingress b-prod/web" in text
    assert '  metadata.annotations["nginx.ingress.kubernetes.io/server-snippet"]: must not be ' \
           "set" in text
    assert '  spec.rules[0].host: "web.a.example.com" is not within' in text
    assert text.splitlines()[-1] == "2 objects checked, 1 with violations, 2 violations"
    # Without the Tenant, only what needs no Tenant (and no cluster: host claims are skipped).
    args = parser.parse_args(["check", str(manifests)])
    out = io.StringIO()
    args.func(args, stdout=out, stderr=io.StringIO())
    assert out.getvalue().splitlines()[-1] == "2 objects checked, 1 with violations, 1 violation"
