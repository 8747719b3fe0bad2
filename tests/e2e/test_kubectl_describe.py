"""What a platform engineer sees with `kubectl describe`: the Events the operator posted, for a
cluster-scoped Tenant and for namespaced Credentials and RotationPolicies.

Through the real kubectl (built from the control plane's own Kubernetes version), because
describe finds Events by a field selector of its own (involvedObject name, namespace, kind and
uid): an Event that a `list_namespaced_event` finds can still be invisible to it, as the
Tenant's were when they named namespace "default" for a cluster-scoped object.
"""

from __future__ import annotations

import base64
import re
import secrets
import time

from kubernetes import client

from tests.conftest import UserApi
from tests.e2e.conftest import Kubectl, TenantFactory, owner
from tests.helpers import GROUP, VERSION, eventually, unique

DescribedEvent = tuple[str, str, str]  # type, reason, message


def described_events(output: str) -> list[DescribedEvent]:
    """The rows of the Events table at the end of `kubectl describe`'s output."""
    _, found, table = output.rpartition("\nEvents:")
    assert found, f"no Events section in:\n{output}"
    lines = table.strip("\n").splitlines()
    if lines and lines[0].strip() == "<none>":
        return []
    rows: list[DescribedEvent] = []
    for line in lines[2:]:  # the header, then its underline
        columns = re.split(r"\s{2,}", line.strip(), maxsplit=4)
        if len(columns) == 5:
            type_, reason, _age, _source, message = columns
            rows.append((type_, reason, message))
    return rows


def describe_until(kubectl: Kubectl, *args: str, wanted: set[tuple[str, str]],
                   user: str | None = None) -> tuple[str, list[DescribedEvent]]:
    """`kubectl describe ARGS` until its Events list every (type, reason) in `wanted`."""
    seen: list[str] = []

    def check() -> tuple[str, list[DescribedEvent]] | None:
        output = kubectl("describe", *args, user=user).stdout
        seen[:] = [output]
        events = described_events(output)
        return (output, events) if wanted <= {(t, r) for t, r, _ in events} else None

    try:
        return eventually(check, timeout=30, what=f"kubectl describe {' '.join(args)} "
                                                  f"to list {sorted(wanted)}")
    except AssertionError as error:
        raise AssertionError(f"{error}\n{seen[0] if seen else ''}") from None


def test_describe_tenant_lists_its_events(kubectl: Kubectl, tenants: TenantFactory) -> None:
    name = unique("descten")
    tenants(name, [name], [owner(f"{name}-alice")])

    _, events = describe_until(kubectl, "tenant", name, wanted={("Normal", "NamespaceCreated")})
    created = [m for t, r, m in events if r == "NamespaceCreated"]
    assert any(name in message for message in created), events
    # Once, not once per namespace-scoped copy or per retry.
    assert len(created) == 1, events


def test_every_event_about_a_tenant_is_one_describe_shows(
        kubectl: Kubectl, admin_api: client.ApiClient, tenants: TenantFactory) -> None:
    """No Event about a Tenant names a namespace: kopf's own Events ("Handler ... succeeded")
    did (namespace "default", for a cluster-scoped object), so describe never showed them;
    they are off, and what describe lists is every Event the API holds about the Tenant."""
    name = unique("descall")
    tenants(name, [name, f"{name}-b"], [owner(f"{name}-alice")])
    describe_until(kubectl, "tenant", name, wanted={("Normal", "NamespaceCreated")})

    core = client.CoreV1Api(admin_api)
    # kopf posted its Events in the background, a moment after the handler returned: watch
    # every Tenant's Events (this one's and those of the tests before) for a while.
    deadline = time.monotonic() + 5
    while True:
        held = core.list_event_for_all_namespaces(
            field_selector="involvedObject.kind=Tenant").items
        misplaced = [(e.involved_object.name, e.involved_object.namespace, e.reason,
                      e.message) for e in held if e.involved_object.namespace]
        assert not misplaced, f"Events describe cannot see: {misplaced[:5]}"
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
    mine = sorted((e.type, e.reason) for e in held if e.involved_object.name == name)
    output = kubectl("describe", "tenant", name).stdout
    assert mine == sorted((t, r) for t, r, _ in described_events(output))


def test_describe_tenant_lists_drift_corrections(kubectl: Kubectl, admin_api: client.ApiClient,
                                                 tenants: TenantFactory) -> None:
    name = unique("descdrift")
    tenants(name, [name], [owner(f"{name}-alice")])
    client.NetworkingV1Api(admin_api).delete_namespaced_network_policy("tenantry-default-deny",
                                                                       name)

    _, events = describe_until(kubectl, "tenant", name, wanted={("Normal", "DriftCorrected")})
    assert any("tenantry-default-deny" in m for _, r, m in events if r == "DriftCorrected")


def _imported_credential(alice: client.ApiClient, namespace: str, name: str,
                         value: str) -> None:
    client.CoreV1Api(alice).create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name=f"{name}-plain"),
        data={"token": base64.b64encode(value.encode()).decode()}))
    client.CustomObjectsApi(alice).create_namespaced_custom_object(
        GROUP, VERSION, namespace, "credentials", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Credential",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"scope": "platform", "fromSecret": {"name": f"{name}-plain"}}})


def test_describe_credential_lists_its_events_without_the_value(
        kubectl: Kubectl, tenants: TenantFactory, as_user: UserApi) -> None:
    name = unique("desccred")
    tenants(name, [name], [owner(f"{name}-alice")])
    value = f"DESCRIBE-PLAINTEXT-{secrets.token_hex(12)}"
    _imported_credential(as_user(f"{name}-alice"), name, "smtp", value)

    output, events = describe_until(
        kubectl, "credential", "smtp", "-n", name,
        wanted={("Normal", "Encrypted"), ("Normal", "SourceSecretDeleted")})
    assert any("stored in Secret" in m for _, r, m in events if r == "Encrypted"), events
    assert value not in output
    assert base64.b64encode(value.encode()).decode() not in output

    # The tenant's own people see the same through their tier role (events of the namespace)...
    describe_until(kubectl, "credential", "smtp", "-n", name, user=f"{name}-alice",
                   wanted={("Normal", "Encrypted"), ("Normal", "SourceSecretDeleted")})
    # ...and someone of another tenant sees neither the Credential nor its events.
    outsider = kubectl("describe", "credential", "smtp", "-n", name, user=f"{name}-mallory",
                       check=False)
    assert outsider.returncode != 0 and "forbidden" in outsider.stderr.lower()
    assert "Encrypted" not in outsider.stdout


def test_describe_credential_lists_a_problem_as_a_warning(
        kubectl: Kubectl, tenants: TenantFactory, as_user: UserApi) -> None:
    name = unique("desccredw")
    tenants(name, [name], [owner(f"{name}-alice")])
    client.CustomObjectsApi(as_user(f"{name}-alice")).create_namespaced_custom_object(
        GROUP, VERSION, name, "credentials", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "Credential",
            "metadata": {"name": "late", "namespace": name},
            "spec": {"scope": "platform", "fromSecret": {"name": "not-there"}}})

    _, events = describe_until(kubectl, "credential", "late", "-n", name,
                               wanted={("Warning", "SourceSecretMissing")})
    assert any("not-there" in m for _, r, m in events if r == "SourceSecretMissing"), events


def test_describe_rotation_policy_lists_its_events(kubectl: Kubectl, tenants: TenantFactory,
                                                   as_user: UserApi) -> None:
    name = unique("descrot")
    tenants(name, [name], [owner(f"{name}-alice")])
    alice = as_user(f"{name}-alice")
    _imported_credential(alice, name, "token", f"ROTATE-PLAINTEXT-{secrets.token_hex(8)}")
    describe_until(kubectl, "credential", "token", "-n", name,
                   wanted={("Normal", "Encrypted")})
    custom = client.CustomObjectsApi(alice)
    for policy, spec in (("now", {"targets": ["Credentials"], "trigger": "now"}),
                         ("platform", {"targets": ["MasterKey"], "trigger": "now"})):
        custom.create_namespaced_custom_object(GROUP, VERSION, name, "rotationpolicies", {
            "apiVersion": f"{GROUP}/{VERSION}", "kind": "RotationPolicy",
            "metadata": {"name": policy, "namespace": name}, "spec": spec})

    _, events = describe_until(kubectl, "rotationpolicy", "now", "-n", name,
                               wanted={("Normal", "RotationStarted"),
                                       ("Normal", "RotationCompleted")})
    assert any("re-encrypting 1 Credential(s)" in m for _, r, m in events
               if r == "RotationStarted"), events
    describe_until(kubectl, "rotationpolicy", "platform", "-n", name,
                   wanted={("Warning", "TargetNotAllowed")})
