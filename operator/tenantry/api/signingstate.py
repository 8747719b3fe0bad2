"""The ApiSigningKeys protocol between the operator and the API (pure): what the operator may
ask of the signing keyring, and what the API publishes about it. No key ever crosses it.

Why a protocol and not the operator writing Secret `tenantry-api-signing-keys` itself: whoever
reads that Secret can mint access tokens for any user, platform admins included. The API holds
the keys anyway (it signs with them, from its mount), so the API is the only writer and reader;
the operator only ASKS and OBSERVES, through ConfigMap `tenantry-api-signing-state` in
Tenantry's namespace:

- `data.state` (written by API replicas only): the keyring's public facts, as the API read the
  Secret: its resourceVersion, which version signs, version -> kid (RFC 7638 thumbprints), and
  the answer to the last request (`Answer`). Or, when the Secret is unusable, why.
- annotation `tenantry.dev/signing-request` (written by the operator only): one `Request`, "add
  version V" (a new random key, not signing), "promote V" or "retire V", each valid only while
  the Secret is still at the resourceVersion the operator saw in the facts. An API replica
  applies it as a JSON merge patch of the Secret with that resourceVersion as precondition, so
  of two replicas acting on the same request one wins and the other gets 409: the Secret changes
  once per request, never twice. A request against facts already out of date is answered
  `Stale` and changes nothing; the operator asks again on the facts it sees next.

manifests/api/signing-state.yaml holds each side to its part in the apiserver (the operator
may change only the request annotation; the API never that annotation), and the structural
rules below are checked again by the API before it writes (`refusal`, and a promotion only
once every fresh identity Lease lists the kid, `signingwriter`), so a stolen operator token can
at worst ask for a retirement early, never learn, choose or mint a key.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from collections.abc import Mapping
from typing import Any

from tenantry.api.tokens import rfc7517
from tenantry.crypto import keyring

CONFIGMAP = "tenantry-api-signing-state"
# The replicas' identity Leases (`api.signing` keeps them), here so the writer can read them too.
LEASE_API = "coordination.k8s.io/v1"
IDENTITY_LABEL = "tenantry.dev/api-identity"
VERIFICATION_KIDS = "tenantry.dev/verification-kids"
SIGNING_KID = "tenantry.dev/signing-kid"
REQUEST_ANNOTATION = "tenantry.dev/signing-request"
STATE_KEY = "state"
ACTIONS = ("add", "promote", "retire")
APPLIED, STALE, REFUSED, FAILED = "Applied", "Stale", "Refused", "Failed"
_RESOURCE_VERSION = re.compile(r"^[0-9]{1,20}$")
MAX_MESSAGE = 512


class StateError(ValueError):
    """A request or a published state that does not follow the protocol; the message names the
    field and the rule (never a value that could be a key: there is none in either)."""


@dataclasses.dataclass(frozen=True)
class Request:
    """One change of the keyring the operator asks for, valid at one Secret resourceVersion."""

    action: str
    """"add" (a new random key, not signing), "promote" (make it sign) or "retire"."""
    version: str
    resource_version: str

    @property
    def id(self) -> str:
        """Deterministic: asking the same step twice is the same request (idempotent)."""
        return f"{self.action}-{self.version}-{self.resource_version}"


@dataclasses.dataclass(frozen=True)
class Answer:
    """What an API replica made of a request."""

    id: str
    result: str
    """Applied, Stale (the Secret changed since), Refused (breaks a rule) or Failed (I/O)."""
    message: str = ""
    time: str = ""
    """When it was answered (UTC, seconds, `Z`): for Applied, when the Secret changed."""


@dataclasses.dataclass(frozen=True)
class Facts:
    """The keyring as an API replica last read the Secret: public facts only."""

    resource_version: str
    signing: str
    kids: Mapping[str, str]
    """version -> kid, oldest version first."""
    answer: Answer | None = None
    problem: str = ""
    """Why the Secret is unusable (then the other fields are empty)."""


def encode_request(request: Request) -> str:
    return json.dumps({"action": request.action, "version": request.version,
                       "resourceVersion": request.resource_version},
                      sort_keys=True, separators=(",", ":"))


def parse_request(text: str) -> Request:
    """The request in annotation `tenantry.dev/signing-request`; StateError naming the field."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise StateError(f"annotation {REQUEST_ANNOTATION}: not JSON") from None
    if not isinstance(raw, dict):
        raise StateError(f"annotation {REQUEST_ANNOTATION}: must be a JSON object")
    action, version, rv = raw.get("action"), raw.get("version"), raw.get("resourceVersion")
    if action not in ACTIONS:
        raise StateError(f"annotation {REQUEST_ANNOTATION}: action must be one of "
                         f"{', '.join(ACTIONS)}")
    if not isinstance(version, str) or not rfc7517.VERSION_PATTERN.match(version):
        raise StateError(f"annotation {REQUEST_ANNOTATION}: version must be v<number>")
    if not isinstance(rv, str) or not _RESOURCE_VERSION.match(rv):
        raise StateError(f"annotation {REQUEST_ANNOTATION}: resourceVersion must be the "
                         "Secret's resourceVersion (digits)")
    return Request(action=str(action), version=version, resource_version=rv)


def encode_state(facts: Facts) -> str:
    body: dict[str, Any] = {"secretResourceVersion": facts.resource_version,
                            "signing": facts.signing, "kids": dict(facts.kids)}
    if facts.problem:
        body["problem"] = facts.problem[:MAX_MESSAGE]
    if facts.answer is not None:
        body["answer"] = {"id": facts.answer.id, "result": facts.answer.result,
                          "message": facts.answer.message[:MAX_MESSAGE],
                          "time": facts.answer.time}
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def parse_state(text: str) -> Facts:
    """The facts in `data.state`; StateError naming the field and the rule."""
    try:
        raw = json.loads(text)
    except ValueError:
        raise StateError(f"ConfigMap {CONFIGMAP} data.{STATE_KEY}: not JSON") from None
    if not isinstance(raw, dict):
        raise StateError(f"ConfigMap {CONFIGMAP} data.{STATE_KEY}: must be a JSON object")
    answer = None
    if isinstance(found := raw.get("answer"), dict):
        answer = Answer(id=str(found.get("id") or ""), result=str(found.get("result") or ""),
                        message=str(found.get("message") or "")[:MAX_MESSAGE],
                        time=str(found.get("time") or "")[:32])
    problem = str(raw.get("problem") or "")[:MAX_MESSAGE]
    if problem:
        return Facts("", "", {}, answer=answer, problem=problem)
    kids, signing, rv = raw.get("kids"), raw.get("signing"), raw.get("secretResourceVersion")
    if not isinstance(kids, dict) or not kids or not all(
            isinstance(v, str) and rfc7517.VERSION_PATTERN.match(v) and isinstance(k, str)
            and 0 < len(k) <= 64 for v, k in kids.items()):
        raise StateError(f"ConfigMap {CONFIGMAP} data.{STATE_KEY}: kids must map v<number> "
                         "to kids, at least one")
    if signing not in kids:
        raise StateError(f"ConfigMap {CONFIGMAP} data.{STATE_KEY}: signing must name one of "
                         "the versions in kids")
    if not isinstance(rv, str) or not _RESOURCE_VERSION.match(rv):
        raise StateError(f"ConfigMap {CONFIGMAP} data.{STATE_KEY}: secretResourceVersion "
                         "must be digits")
    ordered = dict(sorted(kids.items(), key=lambda item: int(item[0][1:])))
    return Facts(resource_version=rv, signing=str(signing), kids=ordered, answer=answer)


def retired_at(answer: Answer | None) -> dict[str, str]:
    """{version: when} for an Applied retire answer (when the key really left the Secret)."""
    if answer is None or answer.result != APPLIED or not answer.time:
        return {}
    action, _, rest = answer.id.partition("-")
    version = rest.rpartition("-")[0]
    return {version: answer.time} if action == "retire" and version else {}


def facts_of(ring: rfc7517.SigningKeyring, resource_version: str,
             answer: Answer | None = None) -> Facts:
    """The public facts of a keyring read from the Secret at `resource_version`."""
    return Facts(resource_version=resource_version, signing=ring.signing, kids=dict(ring.kids),
                 answer=answer)


def refusal(request: Request, facts: Facts) -> str | None:
    """Why the API refuses `request` on a keyring with these facts (or None): the rules a
    rotation step always follows, checked again where the key lives."""
    versions = tuple(facts.kids)
    if request.action == "add":
        expected = keyring.version_after(versions)
        if request.version != expected:
            return (f"add {request.version}: a new version must be the next one "
                    f"({expected})")
    elif request.version not in facts.kids:
        return f"{request.action} {request.version}: no such version in the keyring"
    elif request.action == "retire" and request.version == facts.signing:
        return f"retire {request.version}: it signs; promote another version first"
    return None


def secret_patch(request: Request, key_pem: bytes | None = None) -> dict[str, Any]:
    """The JSON merge patch of the Secret for `request` (`key_pem`: the new PEM for "add"),
    with the request's resourceVersion as precondition."""
    def encoded(data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    value: str | None
    if request.action == "add":
        if key_pem is None:
            raise ValueError("adding a version needs its key")
        field, value = request.version + rfc7517.KEY_SUFFIX, encoded(key_pem)
    elif request.action == "promote":
        field, value = rfc7517.SIGNING_FILE, encoded(request.version.encode("ascii"))
    elif request.action == "retire":
        field, value = request.version + rfc7517.KEY_SUFFIX, None
    else:
        raise ValueError(f"unknown signing keyring request {request.action!r}")
    return {"metadata": {"resourceVersion": request.resource_version}, "data": {field: value}}
