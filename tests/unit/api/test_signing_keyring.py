"""The API's signing keyring (a mounted Secret: one PEM per version and `signing`), re-read when
the kubelet swaps it, and the identity Lease that reports what a replica holds."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tenantry.api import deps, signing
from tenantry.api.tokens import rfc7517, rfc9068
from tenantry.kubeapi import ApiError
from tests.unit.rotation import kubelet

POLICY = rfc9068.Policy(issuer="tenantry-api", audience="tenantry-api")


def _files(keys: dict[str, Any], signing_version: str) -> dict[str, str]:
    files = {f"{v}.pem": rfc7517.private_pem(k).decode() for v, k in keys.items()}
    files["signing"] = signing_version
    return files


def _issue(keys: rfc7517.KeySet) -> str:
    token, _ = rfc9068.issue(keys, POLICY, subject="u", username="u", session_id="s",
                             now=int(datetime.datetime.now(datetime.UTC).timestamp()))
    return token


def test_every_version_verifies_and_the_named_one_signs(tmp_path: Path) -> None:
    old, new = rfc7517.generate(), rfc7517.generate()
    kubelet.write(tmp_path, _files({"v1": old, "v2": new}, "v1"))
    ring = rfc7517.load_signing_keyring(tmp_path)
    assert ring.versions == ("v1", "v2") and ring.signing == "v1"
    keys = ring.key_set()
    assert keys.kid == rfc7517.thumbprint(old.public_key())
    assert [k["kid"] for k in keys.jwks()["keys"]] == [
        rfc7517.thumbprint(old.public_key()), rfc7517.thumbprint(new.public_key())]
    # A token signed by either verifies with the set; JWKS never holds a private member.
    assert rfc9068.verify(_issue(keys), keys.verification_keys(), POLICY).subject == "u"
    assert all(set(k) == {"kty", "crv", "x", "kid", "use", "alg"} for k in keys.jwks()["keys"])


def test_versions_sort_naturally(tmp_path: Path) -> None:
    keys = {f"v{n}": rfc7517.generate() for n in (2, 10, 1)}
    ring = rfc7517.signing_keyring_from_files(
        {k: v.encode() for k, v in _files(keys, "v10").items()})
    assert ring.versions == ("v1", "v2", "v10")


@pytest.mark.parametrize(("files", "message"), [
    ({"signing": "v1"}, "no key"),
    ({"v1.pem": "KEY", "signing": "v2"}, "member 'signing' must name one of its versions"),
    ({"v1.pem": "KEY"}, "member 'signing' must name one of its versions (v1), not ''"),
    ({"v1.pem": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
      "signing": "v1"}, "member v1.pem: not a readable"),
    ({"v1.pem": "EC", "signing": "v1"}, "must be an Ed25519 key"),
    ({"key.pem": "KEY", "signing": "v1"}, "a key's name must be v<number>.pem"),
])
def test_a_broken_keyring_is_refused_naming_the_member_not_its_content(
        files: dict[str, str], message: str) -> None:
    good = rfc7517.private_pem(rfc7517.generate()).decode()
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode()
    data = {k: (good if v == "KEY" else other if v == "EC" else v) for k, v in files.items()}
    with pytest.raises(rfc7517.KeyFileError) as raised:
        rfc7517.signing_keyring_from_files({k: v.encode() for k, v in data.items()})
    assert message in str(raised.value)
    assert "PRIVATE KEY" not in str(raised.value) and good[40:80] not in str(raised.value)


def test_a_link_that_dangles_during_an_update_is_a_removed_key(tmp_path: Path) -> None:
    kubelet.write(tmp_path, _files({"v1": rfc7517.generate()}, "v1"))
    (tmp_path / "v9.pem").symlink_to("..data/v9.pem")  # dangling, as mid-update
    assert rfc7517.load_signing_keyring(tmp_path).versions == ("v1",)


@dataclasses.dataclass
class FakeKube:
    calls: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    leases: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    failing: bool = False

    async def create(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["metadata"]["name"]
        self.calls.append(("create", name))
        if self.failing:
            raise ApiError(403, "Forbidden", "no")
        if name in self.leases:
            raise ApiError(409, "AlreadyExists", "exists")
        self.leases[name] = body
        return body

    async def merge_patch(self, api_version: str, kind: str, name: str, patch: dict[str, Any],
                          namespace: str | None = None) -> dict[str, Any]:
        self.calls.append(("patch", name))
        if self.failing:
            raise ApiError(403, "Forbidden", "no")
        self.leases[name]["metadata"]["annotations"] = patch["metadata"]["annotations"]
        self.leases[name]["spec"] = patch["spec"]
        return self.leases[name]

    async def delete(self, api_version: str, kind: str, name: str,
                     namespace: str | None = None, *,
                     preconditions: dict[str, str] | None = None) -> bool:
        self.calls.append(("delete", name))
        if preconditions and self.leases[name]["metadata"].get("resourceVersion") != \
                preconditions["resourceVersion"]:
            raise ApiError(409, "Conflict", "changed")
        return self.leases.pop(name, None) is not None

    async def list(self, api_version: str, kind: str, namespace: str | None = None, *,
                   label_selector: str | None = None) -> list[dict[str, Any]]:
        assert label_selector == f"{signing.IDENTITY_LABEL}=true"
        return [lease for lease in self.leases.values()
                if lease["metadata"]["labels"].get(signing.IDENTITY_LABEL) == "true"]


@dataclasses.dataclass
class FakeServices:
    settings: deps.Settings


def test_the_key_watch_swaps_keys_on_change_and_reports_them_in_its_lease(
        tmp_path: Path) -> None:
    old, new = rfc7517.generate(), rfc7517.generate()
    old_kid, new_kid = (rfc7517.thumbprint(k.public_key()) for k in (old, new))
    kubelet.write(tmp_path, _files({"v1": old}, "v1"))
    services = FakeServices(deps.Settings(keys=signing.load(tmp_path).key_set(), policy=POLICY))
    kube = FakeKube()
    watch = signing.KeyWatch(services, tmp_path, kube_api=kube, namespace="tenantry-system",
                             replica="api-0")

    async def scenario() -> None:
        assert watch.refresh() is False  # unchanged
        await watch.renew(0.0)
        lease = kube.leases["tenantry-api-api-0"]
        assert lease["metadata"]["labels"][signing.IDENTITY_LABEL] == "true"
        assert lease["metadata"]["annotations"] == {signing.VERIFICATION_KIDS: old_kid,
                                                    signing.SIGNING_KID: old_kid}
        assert lease["spec"]["holderIdentity"] == "api-0"
        await watch.renew(1.0)  # nothing changed, not due: no request
        assert kube.calls == [("create", "tenantry-api-api-0")]
        old_token = _issue(services.settings.keys)

        # Published: verifies with the new key, still signs with the old; reported at once.
        kubelet.write(tmp_path, _files({"v1": old, "v2": new}, "v1"))
        assert watch.refresh() is True
        assert services.settings.keys.kid == old_kid
        assert set(services.settings.keys.verification_keys()) == {old_kid, new_kid}
        await watch.renew(2.0)
        assert kube.calls[-1] == ("patch", "tenantry-api-api-0")
        assert kube.leases["tenantry-api-api-0"]["metadata"]["annotations"][
            signing.VERIFICATION_KIDS] == ",".join(sorted({old_kid, new_kid}))

        # Promoted: signs with the new key; the old token still verifies.
        kubelet.write(tmp_path, _files({"v1": old, "v2": new}, "v2"))
        assert watch.refresh() is True and services.settings.keys.kid == new_kid
        rfc9068.verify(old_token, services.settings.keys.verification_keys(), POLICY)

        # A broken keyring keeps the last good keys.
        kubelet.write(tmp_path, _files({"v1": old, "v2": new}, "v3"))
        assert watch.refresh() is False and services.settings.keys.kid == new_kid

        # Retired: the old key's token is refused.
        kubelet.write(tmp_path, _files({"v2": new}, "v2"))
        assert watch.refresh() is True
        with pytest.raises(rfc9068.TokenInvalid, match="unknown key id"):
            rfc9068.verify(old_token, services.settings.keys.verification_keys(), POLICY)

        await watch.renew(3.0)
        await watch.close()
        assert kube.calls[-1] == ("delete", "tenantry-api-api-0") and kube.leases == {}

    asyncio.run(scenario())


def test_a_lease_that_cannot_be_written_is_retried_every_renewal_not_every_second(
        tmp_path: Path) -> None:
    kubelet.write(tmp_path, _files({"v1": rfc7517.generate()}, "v1"))
    services = FakeServices(deps.Settings(keys=signing.load(tmp_path).key_set(), policy=POLICY))
    kube = FakeKube(failing=True)
    watch = signing.KeyWatch(services, tmp_path, kube_api=kube, namespace="tenantry-system",
                             replica="api-0")

    async def scenario() -> None:
        for second in range(25):
            await watch.renew(float(second))
        assert len(kube.calls) == 3  # at 0, 10 and 20 s
        kube.failing = False
        await watch.renew(30.0)
        assert "tenantry-api-api-0" in kube.leases
        await watch.close()
        assert kube.leases == {}

    asyncio.run(scenario())


def test_lease_names_are_dns_names() -> None:
    assert signing.lease_name("API_pod/0") == "tenantry-api-api-pod-0"
    assert len(signing.lease_name("x" * 400)) <= 253


def _run(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
         *args: str) -> tuple[int, str]:
    from tenantry import cli

    monkeypatch.setenv("TENANTRY_API_DSN", "postgresql://nobody@127.0.0.1:1/none")
    code = cli.main(["api", "run", "--no-ledger", *args])
    return code, capsys.readouterr().err


def test_api_run_takes_exactly_one_source_of_signing_keys(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "signing.pem"
    rfc7517.write_private_key(rfc7517.generate(), key)
    kubelet.write(tmp_path / "ring", _files({"v1": rfc7517.generate()}, "v1"))
    code, err = _run(capsys, monkeypatch, "--signing-key-file", str(key),
                     "--signing-keyring", str(tmp_path / "ring"))
    assert code == 2 and "exactly one of --signing-key-file FILE and --signing-keyring DIR" in err
    code, err = _run(capsys, monkeypatch)
    assert code == 2 and "exactly one of" in err
    code, err = _run(capsys, monkeypatch, "--signing-keyring", str(tmp_path / "ring"),
                     "--previous-key-file", str(key))
    assert code == 2 and "--previous-key-file goes with --signing-key-file" in err
    kubelet.write(tmp_path / "ring", _files({"v1": rfc7517.generate()}, "v7"))
    code, err = _run(capsys, monkeypatch, "--signing-keyring", str(tmp_path / "ring"))
    assert code == 2 and "member 'signing' must name one of its versions (v1), not 'v7'" in err


def test_keygen_secret_prints_a_keyring_the_api_loads(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import base64

    import yaml

    from tenantry import cli

    assert cli.main(["api", "keygen", "--secret", "--namespace", "tenantry-system"]) == 0
    captured = capsys.readouterr()
    secret = yaml.safe_load(captured.out)
    assert secret["metadata"] == {"name": "tenantry-api-signing-keys",
                                  "namespace": "tenantry-system", "labels": {
                                      "app.kubernetes.io/name": "tenantry",
                                      "app.kubernetes.io/component": "api"}}
    ring = rfc7517.signing_keyring_from_files(
        {k: base64.b64decode(v) for k, v in secret["data"].items()})
    assert ring.signing == "v1" and f"kid {ring.kids['v1']}" in captured.err
    assert "PRIVATE KEY" not in captured.err


def test_leases_of_replicas_gone_for_an_hour_are_deleted_and_no_others(tmp_path: Path) -> None:
    kubelet.write(tmp_path, _files({"v1": rfc7517.generate()}, "v1"))
    services = FakeServices(deps.Settings(keys=signing.load(tmp_path).key_set(), policy=POLICY))
    kube = FakeKube()
    now = datetime.datetime(2026, 12, 1, 9, 0, tzinfo=datetime.UTC)
    held = signing.Loaded(verification=("k",), signing="k")
    for replica, age in (("gone", 61), ("resting", 59), ("me", 120)):
        lease = signing.lease("tenantry-system", replica, held,
                              now - datetime.timedelta(minutes=age))
        lease["metadata"]["resourceVersion"] = "1"
        kube.leases[lease["metadata"]["name"]] = lease
    kube.leases["tenantry-api-resting"]["metadata"]["resourceVersion"] = "1"
    watch = signing.KeyWatch(services, tmp_path, kube_api=kube, namespace="tenantry-system",
                             replica="me")
    assert asyncio.run(watch.collect(now)) == ["tenantry-api-gone"]
    assert sorted(kube.leases) == ["tenantry-api-me", "tenantry-api-resting"]


def test_a_replica_on_a_fixed_key_file_keeps_no_lease(tmp_path: Path) -> None:
    services = FakeServices(deps.Settings(keys=rfc7517.KeySet(signing=rfc7517.generate()),
                                          policy=POLICY))
    kube = FakeKube()
    watch = signing.KeyWatch(services, None, kube_api=kube, namespace="tenantry-system",
                             replica="api-0")

    async def scenario() -> None:
        assert watch.refresh() is False
        await watch.renew(0.0)
        await watch.close()

    asyncio.run(scenario())
    assert kube.calls == []
