"""RotationPolicy target ApiSigningKeys, end to end: the session's operator (its RBAC from
manifests/), two real API replicas (`tenantry api run --signing-keyring`, each with the API's
identity and the Roles of manifests/api/rbac.yaml), PostgreSQL, the admission policies of
manifests/api/identity-leases-only.yaml and signing-state.yaml, and a stand-in kubelet that keeps
each replica's directory in step with Secret tenantry-api-signing-keys (and can hold one replica's
mount back, as a slow kubelet would). The operator never sees a key: it reads the keyring's
facts from ConfigMap tenantry-api-signing-state and asks there; an API replica writes the Secret.

While a client holds an access token signed by the old key and a loop signs in on either
replica and uses each fresh token on both, a trigger rotates the key:

- the new kid is in both replicas' JWKS before any token is signed with it; with replica B's
  mount held back, its Lease lacks the kid and the operator waits (`WaitingForReplicas`, naming
  B), and no replica signs with the new key; a stale Lease of a replica long gone does not count;
- once B has it, the new key signs everywhere; the old token still works on both replicas until
  the overlap (spec.signingKeyOverlap, 6 s here instead of 61 minutes) has passed;
- then the old kid leaves both JWKS and the old token is refused (401) by both;
- not one request of the loop fails; each step was applied to the Secret by exactly one replica.

Negative: a policy outside Tenantry's namespace touches no key; the operator's identity can
neither read nor patch Secret tenantry-api-signing-keys (403), nor any other Secret, nor write a
Lease, nor change the facts the API publishes (only its request annotation); the API's identity
can write only its own identity Leases and its state ConfigMap (never the operator's request
annotation, never another Secret); a token forged with a key that is not in the keyring is
refused by both replicas.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import itertools
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import jwt
import pytest
import yaml
from kubernetes import client

from tenantry import kube
from tenantry.api import signing, signingstate
from tenantry.api.tokens import rfc7517
from tenantry.devcluster.cluster import LocalControlPlane
from tenantry.devcluster.process import ManagedProcess, free_port
from tests import logscan
from tests.conftest import OPERATOR_GROUPS, OPERATOR_USER, REPO_ROOT, Ledger, OperatorProcess
from tests.e2e.api.conftest import ApiDatabase, ApiServer, tenantry
from tests.e2e.api.test_auth_wire import login, me
from tests.helpers import GROUP, VERSION, conditions_of, eventually, forbidden, unique
from tests.unit.rotation import kubelet

pytestmark = pytest.mark.postgres

NAMESPACE = "tenantry-system"
SECRET = rfc7517.SIGNING_KEYRING_SECRET
POLICY = "api-signing-keys"
STATE = signingstate.CONFIGMAP
POLICIES = ("identity-leases-only.yaml", "signing-state.yaml")
OVERLAP = "6s"
API_USER = "system:serviceaccount:tenantry-system:tenantry-api"
_addresses = (f"198.51.100.{n}" for n in itertools.count(101))


class Kubelet(threading.Thread):
    """Keeps one directory per replica in step with the Secret, as the kubelet does a Secret
    volume; a replica in `held` keeps what it had (its kubelet is late)."""

    def __init__(self, plane: LocalControlPlane, directories: dict[str, Path]) -> None:
        super().__init__(daemon=True)
        self.api = kube.api_client(plane.admin_kubeconfig)
        self.directories = directories
        self.held: set[str] = set()
        self.synced: dict[str, str] = {}
        self.stop = threading.Event()

    def sync(self) -> None:
        secret = client.CoreV1Api(self.api).read_namespaced_secret(SECRET, NAMESPACE)
        for name, directory in self.directories.items():
            if name in self.held or self.synced.get(name) == secret.metadata.resource_version:
                continue
            kubelet.write(directory, {k: base64.b64decode(v).decode()
                                      for k, v in (secret.data or {}).items()})
            self.synced[name] = secret.metadata.resource_version

    def run(self) -> None:
        try:
            while not self.stop.wait(0.2):
                with contextlib.suppress(Exception):
                    self.sync()
        finally:
            self.api.close()


class KeyringApiServer(ApiServer):
    """`tenantry api run --signing-keyring DIR --replica NAME` (ApiServer has a key file)."""

    def __init__(self, db: ApiDatabase, directory: Path, replica: str, log_path: Path, *,
                 kubeconfig: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        logscan.watch_log("api", log_path)
        self.spool = log_path.parent / f"spool-{self.port}"
        self.process = ManagedProcess(
            f"tenantry-api-{replica}",
            [sys.executable, "-m", "tenantry", "api", "run", "--dsn-file", str(db.app_dsn_file),
             "--signing-keyring", str(directory), "--replica", replica,
             "--listen", f"127.0.0.1:{self.port}", "--kubeconfig", str(kubeconfig),
             "--ledger-dsn-file", str(db.ledger_dsn_file), "--ledger-spool", str(self.spool),
             "--trusted-proxy", "127.0.0.1/32", "--auth-rate-limit", "100000/min"],
            log_path, cwd=REPO_ROOT)


def _jwks_kids(url: str) -> list[str]:
    return [k["kid"] for k in httpx.get(f"{url}/.well-known/jwks.json", timeout=10)
            .json()["keys"]]


def _epoch(stamp: str) -> float:
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def _kid(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


class Traffic(threading.Thread):
    """A client that keeps signing in on either replica and using each new token on both:
    every failure is kept; every token's kid and when it was issued too."""

    def __init__(self, servers: list[ApiServer], username: str) -> None:
        super().__init__(daemon=True)
        self.servers, self.username = servers, username
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.issued: list[tuple[float, str]] = []
        self.requests = 0

    def run(self) -> None:
        address = next(_addresses)
        clients = [httpx.Client(base_url=s.url, timeout=30, headers={"X-Forwarded-For": address})
                   for s in self.servers]
        try:
            for turn in itertools.count():
                if self.stop.is_set():
                    return
                signer = clients[turn % len(clients)]
                response = login(signer, self.username)
                self.requests += 1
                if response.status_code != 200:
                    self.failures.append(f"login: {response.status_code}")
                    continue
                access = response.json()["access_token"]
                self.issued.append((time.monotonic(), _kid(access)))
                for other in clients:
                    self.requests += 1
                    if (status := me(other, access).status_code) != 200:
                        self.failures.append(f"/v1/me on {other.base_url}: {status}")
        finally:
            for http in clients:
                http.close()


class JwksWatch(threading.Thread):
    """Each replica's JWKS, read again and again: (when the read started, replica, kids)."""

    def __init__(self, servers: dict[str, ApiServer]) -> None:
        super().__init__(daemon=True)
        self.servers = servers
        self.seen: list[tuple[float, str, set[str]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.05):
            for name, server in self.servers.items():
                started = time.monotonic()
                with contextlib.suppress(httpx.HTTPError):
                    self.seen.append((started, name, set(_jwks_kids(server.url))))

    def last_without(self, name: str, kid: str) -> float | None:
        """When the last read of `name`'s JWKS that did not list `kid` started."""
        return max((t for t, n, kids in self.seen if n == name and kid not in kids),
                   default=None)


def _policy(api: client.ApiClient) -> dict[str, Any]:
    return cast(dict[str, Any], client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, NAMESPACE, "rotationpolicies", POLICY))


def _condition(api: client.ApiClient, type_: str, reason: str, *, timeout: float = 60.0,
               containing: str = "") -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = conditions_of(_policy(api)).get(type_, {})
        return found if found.get("reason") == reason and containing in found.get(
            "message", "") else None

    return eventually(check, timeout=timeout, what=f"{type_} reason {reason}")


def _secret(api: client.ApiClient) -> client.V1Secret:
    return client.CoreV1Api(api).read_namespaced_secret(SECRET, NAMESPACE)


def _lease(api: client.ApiClient, replica: str) -> dict[str, Any]:
    found = client.CoordinationV1Api(api).read_namespaced_lease(signing.lease_name(replica),
                                                                NAMESPACE)
    return cast(dict[str, Any], api.sanitize_for_serialization(found))


@pytest.fixture(scope="module")
def rotation_env(control_plane: LocalControlPlane, admin_api: client.ApiClient,
                 operator: OperatorProcess, api_db: ApiDatabase, api_kubeconfig: Path,
                 tmp_path_factory: pytest.TempPathFactory
                 ) -> Iterator[tuple[Kubelet, dict[str, ApiServer]]]:
    """The Secret (made by `tenantry api keygen --secret`), the API identity's Role and the
    identity-Lease policy from manifests/api, the kubelet, and replicas A and B."""
    made = tenantry("api", "keygen", "--secret")
    assert made.returncode == 0, made.stderr
    kube.apply(admin_api, [yaml.safe_load(made.stdout)])
    documents = [d for d in yaml.safe_load_all((REPO_ROOT / "manifests/api/rbac.yaml")
                                               .read_text())
                 if d["kind"] in ("Role", "RoleBinding")]
    for policy in POLICIES:
        documents += list(yaml.safe_load_all((REPO_ROOT / "manifests/api" / policy)
                                             .read_text()))
    kube.apply(admin_api, documents)
    workdir = tmp_path_factory.mktemp("signing-keys")
    mounts = {name: workdir / f"mount-{name}" for name in ("a", "b")}
    mounter = Kubelet(control_plane, mounts)
    mounter.sync()
    mounter.start()
    servers = {name: KeyringApiServer(api_db, mounts[name], f"replica-{name}",
                                      workdir / f"api-{name}.log", kubeconfig=api_kubeconfig)
               for name in mounts}
    try:
        for server in servers.values():
            server.wait_ready()
        yield mounter, servers
    finally:
        for server in servers.values():
            server.stop()
        mounter.stop.set()
        mounter.join(10)
        custom = client.CustomObjectsApi(admin_api)
        with contextlib.suppress(client.ApiException):
            custom.delete_namespaced_custom_object(GROUP, VERSION, NAMESPACE,
                                                   "rotationpolicies", POLICY)
        with contextlib.suppress(client.ApiException):
            client.CoreV1Api(admin_api).delete_namespaced_secret(SECRET, NAMESPACE)
        with contextlib.suppress(client.ApiException):
            client.CoreV1Api(admin_api).delete_namespaced_config_map(STATE, NAMESPACE)
        admission = client.AdmissionregistrationV1Api(admin_api)
        for name in ("tenantry-api-identity-leases-only",
                     "tenantry-operator-signing-requests-only",
                     "tenantry-api-signing-state-only"):
            with contextlib.suppress(client.ApiException):
                admission.delete_validating_admission_policy_binding(name)
            with contextlib.suppress(client.ApiException):
                admission.delete_validating_admission_policy(name)


def test_a_new_signing_key_is_published_first_signs_when_every_replica_has_it_and_the_old_one_verifies_until_the_overlap_ends(  # noqa: E501
        rotation_env: tuple[Kubelet, dict[str, ApiServer]], admin_api: client.ApiClient,
        api_db: ApiDatabase, ledger: Ledger, operator: OperatorProcess) -> None:
    mounter, servers = rotation_env
    a, b = servers["a"], servers["b"]
    old_kid = _jwks_kids(a.url)[0]
    assert _jwks_kids(b.url) == [old_kid]
    user = api_db.add_user()
    address = next(_addresses)
    with httpx.Client(base_url=a.url, timeout=30, headers={"X-Forwarded-For": address}) as on_a, \
            httpx.Client(base_url=b.url, timeout=30,
                         headers={"X-Forwarded-For": address}) as on_b:
        held = login(on_a, user).json()["access_token"]
        assert _kid(held) == old_kid
        assert me(on_a, held).status_code == 200 and me(on_b, held).status_code == 200
        # Both replicas report in; a Lease of a replica long gone (never renewed since an hour
        # ago, without any kid) is there too and must not hold the rotation up.
        for replica in ("replica-a", "replica-b"):
            eventually(lambda r=replica: old_kid in _lease(admin_api, r)["metadata"][
                "annotations"][signing.VERIFICATION_KIDS], what=f"{replica}'s Lease")
        an_hour_ago = (datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1))
        kube.apply(admin_api, [signing.lease(NAMESPACE, "replica-gone", signing.Loaded(
            verification=(), signing="none"), an_hour_ago)])

        traffic = Traffic([a, b], user)
        jwks = JwksWatch(servers)
        traffic.start()
        jwks.start()
        mounter.held.add("b")  # B's kubelet is late
        try:
            client.CustomObjectsApi(admin_api).create_namespaced_custom_object(
                GROUP, VERSION, NAMESPACE, "rotationpolicies", {
                    "apiVersion": f"{GROUP}/{VERSION}", "kind": "RotationPolicy",
                    "metadata": {"name": POLICY, "namespace": NAMESPACE},
                    "spec": {"targets": ["ApiSigningKeys"], "trigger": "rotate-1",
                             "signingKeyOverlap": OVERLAP}})
            # A loads the new key at once, B does not: the operator waits for B alone.
            waiting = _condition(admin_api, "Rotating", "WaitingForReplicas",
                                 containing="(1/2 have it)")
            assert "replica-b" in waiting["message"] and "replica-a" not in waiting["message"]
            assert "replica-gone" not in waiting["message"]
            new_kid = cast(str, _policy(admin_api)["status"]["signingKeys"]["rotation"][
                "newKid"])
            # Published on A (its mount follows), still unknown to B; nobody signs with it.
            eventually(lambda: new_kid in _jwks_kids(a.url), what="the new kid in A's JWKS")
            assert new_kid not in _jwks_kids(b.url)
            operator.wait_timer_rounds(NAMESPACE, POLICY)  # looked again: it keeps waiting
            assert conditions_of(_policy(admin_api))["Rotating"]["reason"] == \
                "WaitingForReplicas"
            assert base64.b64decode(_secret(admin_api).data["signing"]) == b"v1"
            assert {kid for _, kid in traffic.issued} == {old_kid}
            assert _kid(login(on_b, user).json()["access_token"]) == old_kid
            assert me(on_a, held).status_code == 200 and me(on_b, held).status_code == 200

            mounter.held.clear()  # B catches up: the new key signs, everywhere
            _condition(admin_api, "Rotating", "Idle", timeout=60)
            demoted = _policy(admin_api)["status"]["signingKeys"]["demoted"]["v1"]
            assert base64.b64decode(_secret(admin_api).data["signing"]) == b"v2"
            eventually(lambda: traffic.issued[-1][1] == new_kid and
                       _kid(login(on_b, user).json()["access_token"]) == new_kid,
                       what="tokens signed with the new key")
            # The old token still works on both within the overlap.
            assert me(on_a, held).status_code == 200 and me(on_b, held).status_code == 200
            assert set(_jwks_kids(a.url)) == set(_jwks_kids(b.url)) == {old_kid, new_kid}

            # It keeps working on both until the old key is removed (not one refusal before).
            checks: list[tuple[float, int, int]] = []

            def retired_yet() -> bool:
                if conditions_of(_policy(admin_api))["Retiring"]["reason"] == "NothingToRetire":
                    return True
                checks.append((time.time(), me(on_a, held).status_code,
                               me(on_b, held).status_code))
                return False

            eventually(retired_yet, timeout=120, what="the old signing key to be retired")
            retired = _policy(admin_api)["status"]["history"][0]
            assert retired["result"] == "Retired" and retired["fromVersion"] == "v1"
            removed_at = _epoch(retired["time"])
            assert removed_at - _epoch(demoted) >= 6  # the overlap, at least
            # Not one refusal while the old key was in the keyring (checks made before the
            # removal was written; the last second is left out, the Secret reaches the replicas'
            # mounts a moment after).
            before = [c for c in checks if c[0] < removed_at - 1]
            assert before, "no check of the old token during the overlap"
            assert all(c[1:] == (200, 200) for c in before), before
            # Then: out of JWKS, its token refused by both replicas.
            eventually(lambda: _jwks_kids(a.url) == [new_kid] == _jwks_kids(b.url),
                       what="the old kid out of both JWKS")
            for http in (on_a, on_b):
                refused = me(http, held)
                assert refused.status_code == 401
                assert 'error="invalid_token"' in refused.headers["www-authenticate"]
            time.sleep(1)
        finally:
            traffic.stop.set()
            jwks.stop.set()
            traffic.join(30)
            jwks.join(10)
            with contextlib.suppress(client.ApiException):
                client.CoordinationV1Api(admin_api).delete_namespaced_lease(
                    signing.lease_name("replica-gone"), NAMESPACE)

    assert traffic.failures == [], traffic.failures[:10]
    assert traffic.requests > 30
    # No token was signed with the new key before both replicas published it: no read of
    # either JWKS that started after the first such token was issued lacked the new kid (B's
    # did lack it, while its mount was held back).
    first_signed = min(t for t, kid in traffic.issued if kid == new_kid)
    for name in ("a", "b"):
        last_without = jwks.last_without(name, new_kid)
        assert last_without is not None and last_without < first_signed, name
    assert any(n == "b" and new_kid in kids for _, n, kids in jwks.seen)
    status = _policy(admin_api)["status"]
    assert status["currentVersions"]["ApiSigningKeys"] == "v2"
    assert [r["result"] for r in status["history"][:2]] == ["Retired", "Succeeded"]
    assert status["signingKeys"]["kids"] == {"v2": new_kid}
    # Every step in the ledger (the platform chain), with versions and kids, never a key.
    # (The operator's entries: with the admission webhook running, the create of the policy
    # itself is on the chain too, as `rotationpolicy.create.requested`.)
    entries = [e for e in ledger.entries("_platform")
               if e["resource_name"] == POLICY and e["action"].startswith("rotation.")]
    assert [e["action"] for e in entries] == [
        "rotation.started", "rotation.signing-key-published", "rotation.signing-key-promoted",
        "rotation.completed", "rotation.signing-key-retired"]
    assert entries[1]["changes"]["kid"] == new_kid and entries[1]["changes"]["version"] == "v2"
    assert entries[-1]["changes"]["kid"] == old_kid
    assert "PRIVATE KEY" not in repr(entries)
    for server in servers.values():  # each replica said what it loaded, never a key
        log = server.log()
        assert f"signing with {new_kid} (version v2)" in log and "PRIVATE KEY" not in log
    # Each step (add v2, promote v2, retire v1) was written to the Secret by one replica only,
    # though both saw every request (the Secret patch's resourceVersion precondition).
    applied = [line.split("applied signing keyring request ", 1)[1].split(" ", 1)[0]
               for server in servers.values() for line in server.log().splitlines()
               if "applied signing keyring request " in line]
    assert sorted(a.rsplit("-", 1)[0] for a in applied) == ["add-v2", "promote-v2",
                                                              "retire-v1"], applied
    assert len(set(applied)) == len(applied) == 3, applied
    events = client.CoreV1Api(admin_api).list_namespaced_event(
        NAMESPACE, field_selector=f"involvedObject.name={POLICY}").items
    reasons = {e.reason for e in events}
    assert {"RotationStarted", "SigningKeyPublished", "SigningKeyPromoted",
            "SigningKeyRetired"} <= reasons
    assert all("PRIVATE KEY" not in (e.message or "") for e in events)


def test_a_token_forged_with_a_key_outside_the_keyring_is_refused(
        rotation_env: tuple[Kubelet, dict[str, ApiServer]], api_db: ApiDatabase) -> None:
    _, servers = rotation_env
    user = api_db.add_user()
    address = next(_addresses)
    with httpx.Client(base_url=servers["a"].url, timeout=30,
                      headers={"X-Forwarded-For": address}) as http:
        real = login(http, user).json()["access_token"]
    claims = jwt.decode(real, options={"verify_signature": False})
    forger = rfc7517.generate()
    own_kid = jwt.encode(claims, forger, algorithm="EdDSA",
                         headers={"typ": "at+jwt", "kid": rfc7517.thumbprint(
                             forger.public_key())})
    borrowed_kid = jwt.encode(claims, forger, algorithm="EdDSA",
                              headers={"typ": "at+jwt", "kid": _kid(real)})
    for server in servers.values():
        with httpx.Client(base_url=server.url, timeout=30,
                          headers={"X-Forwarded-For": address}) as http:
            assert me(http, real).status_code == 200  # the positive control
            for forged in (own_kid, borrowed_kid):
                assert me(http, forged).status_code == 401


def test_a_policy_outside_tenantrys_namespace_touches_no_key(
        rotation_env: tuple[Kubelet, dict[str, ApiServer]], admin_api: client.ApiClient,
        namespace: str, operator: OperatorProcess) -> None:
    before = _secret(admin_api).metadata.resource_version
    name = unique("signing")
    custom = client.CustomObjectsApi(admin_api)
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, "rotationpolicies", {
        "apiVersion": f"{GROUP}/{VERSION}", "kind": "RotationPolicy",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"targets": ["ApiSigningKeys"], "trigger": "now"}})

    def refused() -> dict[str, Any] | None:
        found = cast(dict[str, Any], custom.get_namespaced_custom_object(
            GROUP, VERSION, namespace, "rotationpolicies", name))
        ready = conditions_of(found).get("Ready", {})
        return found if ready.get("reason") == "TargetNotAllowed" else None

    found = eventually(refused, timeout=60, what="TargetNotAllowed")
    assert "only by a RotationPolicy in Tenantry's namespace tenantry-system" in \
        conditions_of(found)["Ready"]["message"]
    operator.wait_timer_rounds(namespace, name)  # looked at again: still nothing
    assert _secret(admin_api).metadata.resource_version == before
    later = cast(dict[str, Any], custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, "rotationpolicies", name))
    assert "signingKeys" not in (later.get("status") or {})
    assert conditions_of(later)["Ready"]["reason"] == "TargetNotAllowed"


def _status(call: Any) -> int:
    try:
        call()
    except client.ApiException as error:
        return int(error.status)
    return 200


def test_the_operator_can_neither_read_nor_write_the_signing_keys_and_only_asks(
        rotation_env: tuple[Kubelet, dict[str, ApiServer]], control_plane: LocalControlPlane,
        admin_api: client.ApiClient) -> None:
    core = client.CoreV1Api(admin_api)
    other = unique("not-the-keyring")
    core.create_namespaced_secret(NAMESPACE, client.V1Secret(
        metadata=client.V1ObjectMeta(name=other), string_data={"k": "v"}))
    eventually(lambda: signingstate.STATE_KEY in (
        core.read_namespaced_config_map(STATE, NAMESPACE).data or {}), what="the state")
    as_operator = kube.api_client(control_plane.kubeconfig_for(OPERATOR_USER, OPERATOR_GROUPS))
    try:
        ops = client.CoreV1Api(as_operator)
        leases = client.CoordinationV1Api(as_operator)
        # What it may: read the published facts and the Leases (the positive controls).
        assert signingstate.STATE_KEY in ops.read_namespaced_config_map(STATE, NAMESPACE).data
        assert leases.list_namespaced_lease(NAMESPACE).items is not None
        # The signing keys: no verb at all, RBAC refuses (403), not merely admission.
        patch = {"metadata": {"labels": {"touched": "yes"}}}
        steal = {"data": {"v9.pem": base64.b64encode(b"attacker key").decode()}}
        assert _status(lambda: ops.read_namespaced_secret(SECRET, NAMESPACE)) == 403
        assert _status(lambda: ops.patch_namespaced_secret(SECRET, NAMESPACE, steal)) == 403
        assert _status(lambda: ops.patch_namespaced_secret(SECRET, NAMESPACE, patch)) == 403
        assert _status(lambda: ops.delete_namespaced_secret(SECRET, NAMESPACE)) == 403
        assert _status(lambda: ops.list_namespaced_secret(NAMESPACE)) == 403
        assert forbidden(lambda: ops.patch_namespaced_secret(other, NAMESPACE, patch))
        assert forbidden(lambda: ops.read_namespaced_secret(other, NAMESPACE))
        assert forbidden(lambda: ops.create_namespaced_secret(NAMESPACE, client.V1Secret(
            metadata=client.V1ObjectMeta(name=SECRET + "-2"), string_data={"k": "v"})))
        assert forbidden(lambda: leases.patch_namespaced_lease(
            signing.lease_name("replica-a"), NAMESPACE, patch))
        # The facts are the API's: the operator may not feign them (nor label, delete or
        # annotate anything but its request).
        state = core.read_namespaced_config_map(STATE, NAMESPACE)
        feigned = {"data": {signingstate.STATE_KEY: "{}"}}
        assert forbidden(lambda: ops.patch_namespaced_config_map(STATE, NAMESPACE, feigned))
        assert forbidden(lambda: ops.patch_namespaced_config_map(STATE, NAMESPACE, patch))
        assert forbidden(lambda: ops.patch_namespaced_config_map(
            STATE, NAMESPACE, {"metadata": {"annotations": {"other": "x"}}}))
        assert forbidden(lambda: ops.patch_namespaced_config_map(
            STATE, NAMESPACE, {"metadata": {"annotations": {
                signingstate.REQUEST_ANNOTATION: "x" * 300}}}))
        assert forbidden(lambda: ops.delete_namespaced_config_map(STATE, NAMESPACE))
        assert core.read_namespaced_config_map(STATE, NAMESPACE).data == state.data
    finally:
        as_operator.close()
        core.delete_namespaced_secret(other, NAMESPACE)


def test_the_api_identity_writes_only_its_own_identity_leases_and_signing_state(
        rotation_env: tuple[Kubelet, dict[str, ApiServer]], control_plane: LocalControlPlane,
        admin_api: client.ApiClient, api_kubeconfig: Path) -> None:
    admin_leases = client.CoordinationV1Api(admin_api)
    created = False
    with contextlib.suppress(client.ApiException):
        admin_leases.create_namespaced_lease(NAMESPACE, client.V1Lease(
            metadata=client.V1ObjectMeta(name="tenantry-operator"),
            spec=client.V1LeaseSpec(holder_identity="the-operator")))
        created = True
    as_api = kube.api_client(api_kubeconfig)
    try:
        leases = client.CoordinationV1Api(as_api)
        # Its own Lease: yes (the positive control).
        leases.patch_namespaced_lease(signing.lease_name("replica-a"), NAMESPACE,
                                      {"metadata": {"annotations": {"probe": "1"}}})

        def take_over() -> object:
            return leases.patch_namespaced_lease("tenantry-operator", NAMESPACE,
                                                 {"spec": {"holderIdentity": "the-api"}})

        assert forbidden(take_over)
        assert forbidden(lambda: leases.delete_namespaced_lease("tenantry-operator", NAMESPACE))
        assert forbidden(lambda: leases.create_namespaced_lease(NAMESPACE, client.V1Lease(
            metadata=client.V1ObjectMeta(name="tenantry-operator-2"))))
        assert forbidden(lambda: leases.create_namespaced_lease(NAMESPACE, client.V1Lease(
            metadata=client.V1ObjectMeta(name="tenantry-api-unlabelled"))))
        assert forbidden(lambda: leases.patch_namespaced_lease(
            signing.lease_name("replica-a"), NAMESPACE,
            {"metadata": {"labels": {signing.IDENTITY_LABEL: "false"}}}))
        # The keyring Secret it reads and patches (its own keys); any other Secret, no; nor may
        # it delete or re-create the keyring, write the operator's request, or another
        # ConfigMap.
        core = client.CoreV1Api(as_api)
        assert core.read_namespaced_secret(SECRET, NAMESPACE).metadata.name == SECRET
        other = unique("not-the-keyring")
        client.CoreV1Api(admin_api).create_namespaced_secret(NAMESPACE, client.V1Secret(
            metadata=client.V1ObjectMeta(name=other), string_data={"k": "v"}))
        try:
            assert _status(lambda: core.read_namespaced_secret(other, NAMESPACE)) == 403
        finally:
            client.CoreV1Api(admin_api).delete_namespaced_secret(other, NAMESPACE)
        assert _status(lambda: core.delete_namespaced_secret(SECRET, NAMESPACE)) == 403
        assert _status(lambda: core.list_namespaced_secret(NAMESPACE)) == 403
        assert forbidden(lambda: core.patch_namespaced_config_map(STATE, NAMESPACE, {
            "metadata": {"annotations": {signingstate.REQUEST_ANNOTATION: "{}"}}}))
        assert forbidden(lambda: core.delete_namespaced_config_map(STATE, NAMESPACE))
        assert forbidden(lambda: core.create_namespaced_config_map(NAMESPACE, client.V1ConfigMap(
            metadata=client.V1ObjectMeta(name="tenantry-operator-config"), data={"k": "v"})))
        core.patch_namespaced_config_map(STATE, NAMESPACE, {  # its own facts: yes
            "metadata": {"labels": {"probe": "1"}}})
        # Another replica's identity Lease, long stale, it may delete (what `collect` does).
        an_hour_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=2)
        kube.apply(admin_api, [signing.lease(NAMESPACE, "killed", signing.Loaded((), "x"),
                                             an_hour_ago)])
        assert signing.lease_name("killed") in {
            lease.metadata.name for lease in leases.list_namespaced_lease(
                NAMESPACE, label_selector=f"{signing.IDENTITY_LABEL}=true").items}
        leases.delete_namespaced_lease(signing.lease_name("killed"), NAMESPACE)
        holder = admin_leases.read_namespaced_lease("tenantry-operator", NAMESPACE)
        assert holder.spec.holder_identity != "the-api"
    finally:
        as_api.close()
        if created:
            admin_leases.delete_namespaced_lease("tenantry-operator", NAMESPACE)
