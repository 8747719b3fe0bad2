"""The API's side of an ApiSigningKeys rotation: the only writer of Secret
`tenantry-api-signing-keys`, and the publisher of its public facts (`signingstate`).

Every API replica that follows the mounted keyring runs `KeyringWriter.step` every
`WRITE_SECONDS`: it reads the Secret (the API's Role tenantry-api-signing-keys: get and patch on
that one Secret by name), publishes its facts (versions, kids, which one signs, the Secret's
resourceVersion) in ConfigMap `tenantry-api-signing-state`, and applies the operator's request
found there, if it has not been answered yet. A new key is generated here, in the API process
that will sign with it, written to the Secret, and forgotten; it reaches every replica (this one
too) through the mount, as any change of the Secret does. A promotion is applied only when
every fresh identity Lease already lists the new kid: even a request the operator should not
have made cannot make a key sign that some replica would refuse.

One replica acts per request: the Secret patch carries the resourceVersion the request was
made at as its precondition, so when two replicas act on the same request at once, the
apiserver lets exactly one through and the other gets 409 (answered `Stale`). A request for a
Secret that changed since is `Stale` and changes nothing. No lock is needed and none can be held
by a replica that died. Logs, answers and exceptions name versions, kids and status codes,
never a key or a patch.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
from collections.abc import Mapping
from typing import Any

from tenantry.api import signingstate
from tenantry.api.tokens import rfc7517
from tenantry.kubeapi import ApiError
from tenantry.model import common

log = logging.getLogger("tenantry.api.signing")

WRITE_SECONDS = 2.0
SECRET = rfc7517.SIGNING_KEYRING_SECRET


def ring_of(secret: Mapping[str, Any]) -> rfc7517.SigningKeyring:
    """The keyring in the Secret as the API returns it (`data` base64-encoded); KeyFileError
    naming the member and the rule if it is not a valid signing keyring."""
    data = secret.get("data") or {}
    try:
        files = {str(k): base64.b64decode(str(v), validate=True) for k, v in data.items()}
    except (binascii.Error, ValueError):
        raise rfc7517.KeyFileError("a value of its data is not base64") from None
    return rfc7517.signing_keyring_from_files(files)


def _resource_version(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def configmap(namespace: str, state: str) -> dict[str, Any]:
    """ConfigMap tenantry-api-signing-state as the first replica creates it (no request)."""
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": signingstate.CONFIGMAP, "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "tenantry",
                                    "app.kubernetes.io/component": "api"}},
            "data": {signingstate.STATE_KEY: state}}


class KeyringWriter:
    """Applies the operator's requests to the Secret and publishes what it holds."""

    def __init__(self, kube: Any, namespace: str, replica: str) -> None:
        self._kube = kube
        self._namespace = namespace
        self.replica = replica
        self._problem = ""
        self._logged = ""

    async def _read_secret(self) -> tuple[rfc7517.SigningKeyring | None, str, str]:
        """(keyring, its resourceVersion, problem)."""
        where = f"Secret {self._namespace}/{SECRET}"
        try:
            found = await self._kube.get("v1", "Secret", SECRET, self._namespace)
        except ApiError as error:
            return None, "", (f"reading {where}: {error.status} {error.reason} (the API's "
                              "Role tenantry-api-signing-keys grants get and patch on it)")
        if found is None:
            return None, "", (f"{where} does not exist: create it with `tenantry api keygen "
                              f"--secret --namespace {self._namespace} | kubectl apply -f-` "
                              "and mount it into the API (--signing-keyring)")
        try:
            return ring_of(found), _resource_version(found), ""
        except rfc7517.KeyFileError as error:
            return None, "", f"{where}: {error}"

    def _once(self, level: int, message: str) -> None:
        """Log `message` unless it is the one logged last (a request looked at every round)."""
        if message != self._logged:
            self._logged = message
            log.log(level, "%s", message)

    async def _unready(self, version: str, kid: str) -> str | None:
        """Why `kid` may not sign yet: a fresh identity Lease that does not list it, or none
        fresh at all (the operator's own rule, checked again here, where the keys live)."""
        now = datetime.datetime.now(datetime.UTC)
        fresh, lacking = [], []
        for found in await self._kube.list(
                signingstate.LEASE_API, "Lease", self._namespace,
                label_selector=f"{signingstate.IDENTITY_LABEL}=true"):
            meta, spec = found.get("metadata") or {}, found.get("spec") or {}
            renewed = common.parse_time(spec.get("renewTime"))
            duration = spec.get("leaseDurationSeconds")
            if renewed is None or not isinstance(duration, int) or not 0 < duration <= 3600 \
                    or renewed + datetime.timedelta(seconds=duration) <= now:
                continue
            name = str(spec.get("holderIdentity") or meta.get("name"))
            fresh.append(name)
            kids = str((meta.get("annotations") or {}).get(signingstate.VERIFICATION_KIDS)
                       or "").split(",")
            if kid not in kids:
                lacking.append(name)
        if not fresh:
            return f"promote {version}: no fresh API identity Lease confirms kid {kid}"
        if lacking:
            return (f"promote {version}: replica(s) {', '.join(sorted(lacking))} have not "
                    f"loaded kid {kid} yet")
        return None

    async def apply(self, request: signingstate.Request, ring: rfc7517.SigningKeyring,
                    resource_version: str
                    ) -> tuple[signingstate.Answer, rfc7517.SigningKeyring, str]:
        """Apply `request` to the Secret last read as (`ring`, `resource_version`): the answer,
        and the keyring and resourceVersion after it."""
        facts = signingstate.facts_of(ring, resource_version)
        if request.resource_version != resource_version:
            return signingstate.Answer(request.id, signingstate.STALE, (
                f"the Secret is at resourceVersion {resource_version} now, not "
                f"{request.resource_version}; ask again on the facts published")), \
                ring, resource_version
        why = signingstate.refusal(request, facts)
        if why is None and request.action == "promote":
            why = await self._unready(request.version, facts.kids[request.version])
        if why is not None:
            self._once(logging.WARNING, f"refused signing keyring request {request.id}: {why}")
            return signingstate.Answer(request.id, signingstate.REFUSED, why), \
                ring, resource_version
        key = rfc7517.private_pem(rfc7517.generate()) if request.action == "add" else None
        try:
            written = await self._kube.merge_patch(
                "v1", "Secret", SECRET, signingstate.secret_patch(request, key),
                namespace=self._namespace)
        except ApiError as error:
            if error.status == 409:
                log.info("signing keyring request %s: the Secret changed meanwhile (another "
                         "replica applied it, or it was edited); not applied by %s",
                         request.id, self.replica)
                return signingstate.Answer(request.id, signingstate.STALE, (
                    "the Secret changed while it was applied (409)")), ring, resource_version
            # Never the patch (it may hold a key): status and reason only.
            self._once(logging.WARNING, f"signing keyring request {request.id} failed: "
                                        f"{error.status} {error.reason}")
            return signingstate.Answer(request.id, signingstate.FAILED, (
                f"writing Secret {self._namespace}/{SECRET} failed: {error.status} "
                f"{error.reason}")), ring, resource_version
        finally:
            del key
        try:
            after = ring_of(written)
        except rfc7517.KeyFileError:
            # The patch kept it valid (refusal checked that); anything else is a hand edit
            # in between, seen on the next read.
            after = ring
        log.info("applied signing keyring request %s (replica %s): signing %s, versions %s",
                 request.id, self.replica, after.signing, ", ".join(after.versions))
        return signingstate.Answer(request.id, signingstate.APPLIED,
                                   f"applied by replica {self.replica}", time=_now()), \
            after, _resource_version(written)

    async def step(self) -> None:
        """Read, apply the pending request if any, publish."""
        found = await self._kube.get("v1", "ConfigMap", signingstate.CONFIGMAP, self._namespace)
        before = (found or {}).get("data") or {}
        published: signingstate.Facts | None = None
        try:
            if signingstate.STATE_KEY in before:
                published = signingstate.parse_state(str(before[signingstate.STATE_KEY]))
        except signingstate.StateError:
            published = None
        answer = published.answer if published is not None else None
        ring, resource_version, problem = await self._read_secret()
        if problem != self._problem:
            self._problem = problem
            if problem:
                log.error("signing keyring cannot be published: %s", problem)
        notes = ((found or {}).get("metadata") or {}).get("annotations") or {}
        text = notes.get(signingstate.REQUEST_ANNOTATION)
        if ring is not None and text:
            try:
                request = signingstate.parse_request(str(text))
            except signingstate.StateError as error:
                request = None
                if answer is None or answer.id != "invalid":
                    log.warning("signing keyring request refused: %s", error)
                answer = signingstate.Answer("invalid", signingstate.REFUSED, str(error))
            # Applied once, never again; anything else is looked at again each round (a
            # promotion refused until a replica catches up, a failed write), since the operator
            # asks the same step with the same id until the facts change.
            if request is not None and not (answer is not None and answer.id == request.id
                                            and answer.result == signingstate.APPLIED):
                answer, ring, resource_version = await self.apply(request, ring,
                                                                  resource_version)
        facts = (signingstate.facts_of(ring, resource_version, answer) if ring is not None
                 else signingstate.Facts("", "", {}, answer=answer, problem=problem))
        state = signingstate.encode_state(facts)
        if found is None:
            try:
                await self._kube.create(configmap(self._namespace, state))
            except ApiError as error:
                if error.status != 409:  # another replica made it first
                    raise
            return
        if before.get(signingstate.STATE_KEY) == state:
            return
        try:
            await self._kube.merge_patch(
                "v1", "ConfigMap", signingstate.CONFIGMAP,
                {"metadata": {"resourceVersion": _resource_version(found)},
                 "data": {signingstate.STATE_KEY: state}}, namespace=self._namespace)
        except ApiError as error:
            if error.status != 409:  # 409: changed meanwhile, published again next round
                raise
