"""The API as the only writer of its signing keyring (`api.signingwriter`, protocol
`api.signingstate`): it publishes the keyring's public facts, applies the operator's request
once (of two replicas acting at once, one), refuses what breaks a rotation's rules, and never
lets a key out; the operator's side reads the facts it publishes (`apisigning.facts`)."""

from __future__ import annotations

import asyncio
import base64
import copy
import dataclasses
import datetime
import json
import logging
from typing import Any

import pytest

from tenantry.api import signing, signingstate, signingwriter
from tenantry.api.tokens import rfc7517
from tenantry.controller.rotation import apisigning
from tenantry.kubeapi import ApiError

NAMESPACE = "tenantry-system"


@dataclasses.dataclass
class FakeApiserver:
    """Secret and ConfigMap with resourceVersions and merge-patch preconditions; every call
    yields to the loop once, so two replicas' steps interleave as they would."""

    objects: dict[tuple[str, str], dict[str, Any]] = dataclasses.field(default_factory=dict)
    version: int = 10
    secret_forbidden: bool = False
    secret_writes: int = 0
    leases: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    async def list(self, api_version: str, kind: str, namespace: str | None = None, *,
                   label_selector: str | None = None) -> list[dict[str, Any]]:
        await asyncio.sleep(0)
        assert (kind, label_selector) == ("Lease", f"{signingstate.IDENTITY_LABEL}=true")
        return copy.deepcopy(self.leases)

    def replicas_load(self, *, stale: str = "") -> None:
        """Every replica (a, b) has loaded the keyring as it is now; `stale`: one more, gone."""
        kids = tuple(sorted(self.ring().kids.values()))
        now = datetime.datetime.now(datetime.UTC)
        self.leases = [signing.lease(NAMESPACE, name, signing.Loaded(kids, kids[0]), now)
                       for name in ("a", "b")]
        if stale:
            self.leases.append(signing.lease(NAMESPACE, stale, signing.Loaded((), "x"),
                                             now - datetime.timedelta(minutes=5)))

    def _stamp(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return obj

    async def get(self, api_version: str, kind: str, name: str,
                  namespace: str | None = None) -> dict[str, Any] | None:
        await asyncio.sleep(0)
        if kind == "Secret" and self.secret_forbidden:
            raise ApiError(403, "Forbidden", "no")
        found = self.objects.get((kind, name))
        return copy.deepcopy(found) if found is not None else None

    async def create(self, obj: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(0)
        key = (obj["kind"], obj["metadata"]["name"])
        if key in self.objects:
            raise ApiError(409, "AlreadyExists", "exists")
        self.objects[key] = self._stamp(copy.deepcopy(obj))
        return copy.deepcopy(self.objects[key])

    async def merge_patch(self, api_version: str, kind: str, name: str, patch: dict[str, Any],
                          namespace: str | None = None) -> dict[str, Any]:
        await asyncio.sleep(0)
        current = self.objects[(kind, name)]
        wanted = (patch.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "the object has been modified")
        for field in ("data",):
            for k, v in (patch.get(field) or {}).items():
                if v is None:
                    current.setdefault(field, {}).pop(k, None)
                else:
                    current.setdefault(field, {})[k] = v
        for k, v in ((patch.get("metadata") or {}).get("annotations") or {}).items():
            current["metadata"].setdefault("annotations", {})[k] = v
        if kind == "Secret":
            self.secret_writes += 1
        self._stamp(current)
        return copy.deepcopy(current)

    # What a test reads back.
    def ring(self) -> rfc7517.SigningKeyring:
        return signingwriter.ring_of(self.objects[("Secret", signingwriter.SECRET)])

    def configmap(self) -> dict[str, Any]:
        return self.objects[("ConfigMap", signingstate.CONFIGMAP)]

    def state(self) -> signingstate.Facts:
        return signingstate.parse_state(self.configmap()["data"][signingstate.STATE_KEY])

    def ask(self, action: str, version: str, resource_version: str | None = None) -> str:
        """What the operator does: annotate the request (at the facts' resourceVersion)."""
        request = signingstate.Request(action, version,
                                       resource_version or self.state().resource_version)
        self.configmap()["metadata"].setdefault("annotations", {})[
            signingstate.REQUEST_ANNOTATION] = signingstate.encode_request(request)
        return request.id


def _apiserver() -> FakeApiserver:
    fake = FakeApiserver()
    fake.objects[("Secret", signingwriter.SECRET)] = fake._stamp(
        rfc7517.signing_keyring_secret(NAMESPACE, rfc7517.generate()))
    return fake


def _writer(fake: FakeApiserver, replica: str = "a") -> signingwriter.KeyringWriter:
    return signingwriter.KeyringWriter(fake, NAMESPACE, replica)


def _pems(fake: FakeApiserver) -> list[str]:
    data = fake.objects[("Secret", signingwriter.SECRET)]["data"]
    return [v for k, v in data.items() if k.endswith(".pem")] + [
        base64.b64decode(v).decode() for k, v in data.items() if k.endswith(".pem")]


def test_the_api_publishes_the_keyring_facts_and_the_operator_reads_them() -> None:
    fake = _apiserver()
    asyncio.run(_writer(fake).step())
    ring = fake.ring()
    state = fake.state()
    assert state.signing == "v1" and dict(state.kids) == dict(ring.kids)
    assert state.resource_version == fake.objects[("Secret", signingwriter.SECRET)][
        "metadata"]["resourceVersion"]
    seen, problem = apisigning.facts(fake.configmap(), NAMESPACE)
    assert problem == "" and seen is not None
    assert (seen.signing, dict(seen.kids), seen.resource_version) == (
        "v1", dict(ring.kids), state.resource_version)
    text = json.dumps(fake.configmap())
    assert "PRIVATE KEY" not in text and not any(p in text for p in _pems(fake))


def test_a_request_is_applied_once_and_its_result_published() -> None:
    fake = _apiserver()
    writer = _writer(fake)
    asyncio.run(writer.step())
    request = fake.ask("add", "v2")
    asyncio.run(writer.step())
    assert fake.ring().versions == ("v1", "v2") and fake.ring().signing == "v1"
    state = fake.state()
    assert state.answer is not None and state.answer.time.endswith("Z")
    assert state.answer == signingstate.Answer(request, signingstate.APPLIED,
                                               "applied by replica a", state.answer.time)
    assert set(state.kids) == {"v1", "v2"}
    writes = fake.secret_writes
    for _ in range(3):  # answered: not applied again
        asyncio.run(writer.step())
    assert fake.secret_writes == writes
    fake.replicas_load()
    fake.ask("promote", "v2")
    asyncio.run(writer.step())
    assert fake.ring().signing == "v2" and fake.state().signing == "v2"
    fake.ask("retire", "v1")
    asyncio.run(writer.step())
    assert fake.ring().versions == ("v2",) and set(fake.state().kids) == {"v2"}
    # The operator learns when the key really left the Secret (its Retired record's time).
    seen, _ = apisigning.facts(fake.configmap(), NAMESPACE)
    assert seen is not None and set(seen.retired) == {"v1"}
    assert fake.state().answer is not None and seen.retired["v1"] == fake.state().answer.time


def test_of_two_replicas_acting_on_one_request_at_once_one_writes_the_secret(
        caplog: pytest.LogCaptureFixture) -> None:
    fake = _apiserver()
    a, b = _writer(fake, "a"), _writer(fake, "b")
    asyncio.run(a.step())
    before = fake.secret_writes
    request = fake.ask("add", "v2")

    async def both() -> None:
        await asyncio.gather(a.step(), b.step())

    with caplog.at_level(logging.INFO, logger="tenantry.api.signing"):
        asyncio.run(both())
        asyncio.run(both())
    assert fake.secret_writes == before + 1
    assert fake.ring().versions == ("v1", "v2")
    applied = [r for r in caplog.records
               if r.getMessage().startswith(f"applied signing keyring request {request}")]
    assert len(applied) == 1
    assert fake.state().answer is not None and fake.state().answer.id == request
    assert set(fake.state().kids) == {"v1", "v2"}
    assert "PRIVATE KEY" not in caplog.text and not any(p in caplog.text for p in _pems(fake))


def test_a_request_made_on_facts_out_of_date_changes_nothing() -> None:
    fake = _apiserver()
    writer = _writer(fake)
    asyncio.run(writer.step())
    stale = str(int(fake.state().resource_version) - 1)
    request = fake.ask("add", "v2", stale)
    before = fake.secret_writes
    asyncio.run(writer.step())
    assert fake.secret_writes == before and fake.ring().versions == ("v1",)
    answer = fake.state().answer
    assert answer is not None and (answer.id, answer.result) == (request, signingstate.STALE)


@pytest.mark.parametrize(("action", "version", "why"), [
    ("retire", "v1", "retire v1: it signs; promote another version first"),
    ("promote", "v7", "promote v7: no such version in the keyring"),
    ("retire", "v7", "retire v7: no such version in the keyring"),
    ("add", "v1", "add v1: a new version must be the next one (v2)"),
    ("add", "v9", "add v9: a new version must be the next one (v2)"),
])
def test_a_request_that_breaks_a_rotation_rule_is_refused_where_the_keys_live(
        action: str, version: str, why: str) -> None:
    fake = _apiserver()
    writer = _writer(fake)
    asyncio.run(writer.step())
    before, kids = fake.secret_writes, dict(fake.ring().kids)
    request = fake.ask(action, version)
    asyncio.run(writer.step())
    assert fake.secret_writes == before and dict(fake.ring().kids) == kids
    assert fake.state().answer == signingstate.Answer(request, signingstate.REFUSED, why)


@pytest.mark.parametrize(("text", "why"), [
    ("not json", "not JSON"),
    ('{"action": "replace", "version": "v2", "resourceVersion": "1"}', "action must be one"),
    ('{"action": "add", "version": "../x", "resourceVersion": "1"}', "version must be v<n"),
    ('{"action": "add", "version": "v2", "resourceVersion": "x"}', "resourceVersion must"),
])
def test_a_malformed_request_is_refused_naming_the_field(text: str, why: str) -> None:
    fake = _apiserver()
    writer = _writer(fake)
    asyncio.run(writer.step())
    fake.configmap()["metadata"]["annotations"] = {signingstate.REQUEST_ANNOTATION: text}
    before = fake.secret_writes
    asyncio.run(writer.step())
    assert fake.secret_writes == before
    answer = fake.state().answer
    assert answer is not None and answer.result == signingstate.REFUSED and why in answer.message
    assert signingstate.REQUEST_ANNOTATION in answer.message


def test_an_unreadable_secret_is_published_as_a_problem_the_operator_reports() -> None:
    fake = _apiserver()
    fake.secret_forbidden = True
    asyncio.run(_writer(fake).step())
    seen, problem = apisigning.facts(fake.configmap(), NAMESPACE)
    assert seen is None
    assert problem.startswith("the API reports: reading Secret "
                              "tenantry-system/tenantry-api-signing-keys: 403 Forbidden")
    assert "Role tenantry-api-signing-keys" in problem


def test_the_operator_reports_a_missing_or_unreadable_state() -> None:
    seen, problem = apisigning.facts(None, NAMESPACE)
    assert seen is None and "ConfigMap tenantry-system/tenantry-api-signing-state does not " \
        "exist" in problem
    for state, why in (("{", "not JSON"), ('{"kids": {}, "signing": "v1"}', "kids must map"),
                       ('{"kids": {"v1": "k"}, "signing": "v2", '
                        '"secretResourceVersion": "1"}', "signing must name one of")):
        seen, problem = apisigning.facts({"data": {signingstate.STATE_KEY: state}}, NAMESPACE)
        assert seen is None and why in problem and "data.state" in problem


def test_a_promotion_is_refused_until_every_fresh_replica_has_loaded_the_kid() -> None:
    # Even a request the operator should not have made (a stolen operator token asking early)
    # cannot make a key sign that a replica would refuse.
    fake = _apiserver()
    writer = _writer(fake)
    asyncio.run(writer.step())
    fake.ask("add", "v2")
    asyncio.run(writer.step())
    fake.replicas_load()
    kid = fake.ring().kids["v2"]
    fake.leases[1]["metadata"]["annotations"][signingstate.VERIFICATION_KIDS] = \
        fake.ring().kids["v1"]  # b has not loaded v2
    request = fake.ask("promote", "v2")
    asyncio.run(writer.step())
    assert fake.ring().signing == "v1"
    assert fake.state().answer == signingstate.Answer(
        request, signingstate.REFUSED, f"promote v2: replica(s) b have not loaded kid {kid} yet")
    fake.leases = []
    request = fake.ask("promote", "v2")
    asyncio.run(writer.step())
    assert fake.ring().signing == "v1" and fake.state().answer == signingstate.Answer(
        request, signingstate.REFUSED,
        f"promote v2: no fresh API identity Lease confirms kid {kid}")
    fake.replicas_load(stale="gone")  # a replica gone does not hold it up
    fake.ask("promote", "v2")
    asyncio.run(writer.step())
    assert fake.ring().signing == "v2"
