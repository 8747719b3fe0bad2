"""AdmissionReview v1, in and out (pure).

`parse_review` turns a request body into an `AdmissionRequest`, or raises `MalformedReview` with
a reason the server returns as HTTP 400: a review we cannot read is never guessed at, and never
crashes the handler. `Verdict` is what a handler decides; `review_response` wraps it for the
apiserver.

Only `admission.k8s.io/v1` is accepted: the webhook configuration asks for v1 alone
(`admissionReviewVersions: [v1]`), so anything else did not come from a correctly configured
apiserver.

Reading the body is the largest single step of a review (~30 us of json.loads for a 4 KB pod),
so `load_json` parses with orjson (~10 us) wherever orjson builds exactly the value json.loads
would, and hands everything else to json.loads, whose value (or error) it then is; see there.
`encode_review` likewise writes the answer with orjson, falling back to json.dumps.
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})

# Most warnings a response carries, and longest each one may be: the apiserver passes warnings
# to clients as HTTP headers, and kubectl prints each on its own line.
MAX_WARNINGS = 64
MAX_WARNING_LENGTH = 512

_EMPTY: Mapping[str, Any] = types.MappingProxyType({})


class MalformedReview(ValueError):
    """The body is not an AdmissionReview v1 request we can judge; the message says why."""


# Digits mapped to "0", every other byte to " ": a run of 19 zeros in the image of a body is a
# run of 19 digits in it (translate and a substring search are C loops, ~5 us for 4 KB).
_DIGITS = bytes(0x30 if 0x30 <= byte <= 0x39 else 0x20 for byte in range(256))
_LONG_DIGIT_RUN = b"0" * 19


def load_json(body: bytes) -> Any:
    """`json.loads(body)`: the same value, or the same error, only faster where that is sure.

    On text both accept, orjson and json.loads build the same value except for integers beyond
    64 bits, which orjson turns into floats (json.loads keeps every integer exact). Such an
    integer has at least 19 digits; so a body with no run of 19 digits anywhere (in a string or
    not: a false alarm only costs speed) goes to orjson, and any other body, or one orjson
    refuses (NaN, a lone surrogate escape, a byte order mark, UTF-16, nesting beyond 1024, ...),
    to json.loads, whose value or error the caller then gets as before. Floats both parse
    correctly rounded, so alike. `tests/unit/webhook/test_review_fast_paths.py` checks the
    equality on generated bodies.
    """
    if _LONG_DIGIT_RUN not in body.translate(_DIGITS):
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError:
            pass  # json.loads's verdict (and error message) below
    return json.loads(body)


@dataclasses.dataclass(frozen=True, slots=True)
class GroupVersionKind:
    group: str
    version: str
    kind: str

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def __str__(self) -> str:
        return f"{self.kind}.{self.api_version}"


@dataclasses.dataclass(frozen=True, slots=True)
class GroupVersionResource:
    group: str
    version: str
    resource: str


@dataclasses.dataclass(frozen=True, slots=True)
class UserInfo:
    """Who made the request, as the apiserver authenticated them."""

    username: str = ""
    uid: str = ""
    groups: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class AdmissionRequest:
    """The parts of an AdmissionReview request the handlers use."""

    uid: str
    kind: GroupVersionKind
    """The kind of `object` (for a subresource, the kind sent, e.g. Pod for ephemeralcontainers)."""
    resource: GroupVersionResource
    sub_resource: str
    operation: str
    namespace: str
    name: str
    """metadata.name; for a CREATE with generateName, empty (see `display_name`)."""
    user: UserInfo
    object: Mapping[str, Any] | None
    old_object: Mapping[str, Any] | None
    dry_run: bool

    @property
    def display_name(self) -> str:
        """The object's name, or `generateName*` for names the apiserver has yet to pick."""
        if self.name:
            return self.name
        metadata = (self.object or _EMPTY).get("metadata")
        if isinstance(metadata, Mapping):
            name = metadata.get("name")
            if isinstance(name, str) and name:
                return name
            generate = metadata.get("generateName")
            if isinstance(generate, str) and generate:
                return f"{generate}*"
        return "<unnamed>"

    def typed_object(self) -> Mapping[str, Any] | None:
        """`object` with apiVersion and kind set from the request's kind.

        The apiserver sends both anyway; taking them from `kind` means a body that leaves them
        out, or disagrees, is still judged as what the apiserver says it is.
        """
        if self.object is None:
            return None
        return {**self.object, "apiVersion": self.kind.api_version, "kind": self.kind.kind}

    def typed_old_object(self) -> Mapping[str, Any] | None:
        if self.old_object is None:
            return None
        return {**self.old_object, "apiVersion": self.kind.api_version, "kind": self.kind.kind}


def _string(node: Mapping[str, Any], key: str, where: str, *, required: bool = True) -> str:
    value = node.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise MalformedReview(f"{where}.{key} must be a non-empty string")
    return value


def _mapping(node: Mapping[str, Any], key: str, where: str, *,
             required: bool) -> Mapping[str, Any] | None:
    value = node.get(key)
    if value is None:
        if required:
            raise MalformedReview(f"{where}.{key} is required")
        return None
    if not isinstance(value, Mapping):
        raise MalformedReview(f"{where}.{key} must be an object")
    return value


def _group_version(node: Mapping[str, Any], where: str, last: str) -> tuple[str, str, str]:
    group = node.get("group", "")
    if not isinstance(group, str):
        raise MalformedReview(f"{where}.group must be a string")
    return group, _string(node, "version", where), _string(node, last, where)


def _user(node: Mapping[str, Any] | None) -> UserInfo:
    if node is None:
        return UserInfo()
    groups = node.get("groups") or []
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise MalformedReview("request.userInfo.groups must be a list of strings")
    return UserInfo(
        username=_string(node, "username", "request.userInfo", required=False),
        uid=_string(node, "uid", "request.userInfo", required=False),
        groups=tuple(groups),
    )


def parse_review(body: bytes, content_type: str | None = "application/json") -> AdmissionRequest:
    """The request of an AdmissionReview v1 body; MalformedReview says what is wrong."""
    if content_type is not None and content_type.split(";")[0].strip().lower() not in (
            "application/json", ""):
        raise MalformedReview(f"Content-Type must be application/json, not {content_type!r}")
    if not body:
        raise MalformedReview("empty body: expected an AdmissionReview")
    try:
        document = load_json(body)
    except (UnicodeDecodeError, ValueError) as error:
        raise MalformedReview(f"body is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise MalformedReview("body must be a JSON object (an AdmissionReview)")
    api_version, kind = document.get("apiVersion"), document.get("kind")
    if kind != KIND:
        raise MalformedReview(f"kind must be {KIND}, not {kind!r}")
    if api_version != API_VERSION:
        raise MalformedReview(f"apiVersion must be {API_VERSION}, not {api_version!r}")
    request = _mapping(document, "request", "AdmissionReview", required=True)
    assert request is not None
    where = "request"
    uid = _string(request, "uid", where)
    kind_node = _mapping(request, "kind", where, required=True)
    resource_node = _mapping(request, "resource", where, required=True)
    assert kind_node is not None and resource_node is not None
    gvk = GroupVersionKind(*_group_version(kind_node, f"{where}.kind", "kind"))
    gvr = GroupVersionResource(*_group_version(resource_node, f"{where}.resource", "resource"))
    operation = _string(request, "operation", where)
    if operation not in OPERATIONS:
        raise MalformedReview(f"request.operation must be one of {', '.join(sorted(OPERATIONS))}"
                              f", not {operation!r}")
    obj = _mapping(request, "object", where, required=operation in ("CREATE", "UPDATE"))
    old = _mapping(request, "oldObject", where, required=operation == "UPDATE")
    dry_run = request.get("dryRun", False)
    if not isinstance(dry_run, bool):
        raise MalformedReview("request.dryRun must be a boolean")
    return AdmissionRequest(
        uid=uid,
        kind=gvk,
        resource=gvr,
        sub_resource=_string(request, "subResource", where, required=False),
        operation=operation,
        namespace=_string(request, "namespace", where, required=False),
        name=_string(request, "name", where, required=False),
        user=_user(_mapping(request, "userInfo", where, required=False)),
        object=obj,
        old_object=old,
        dry_run=dry_run,
    )


@dataclasses.dataclass(frozen=True, slots=True)
class Verdict:
    """What a handler decides about one request."""

    allowed: bool
    message: str = ""
    """Why it was refused (shown to the user after `admission webhook "..." denied the
    request:`)."""
    code: int = 403
    """HTTP status the apiserver answers a refusal with."""
    warnings: tuple[str, ...] = ()
    """Shown to the client (kubectl prints `Warning: ...`), allowed or not."""
    audit_annotations: Mapping[str, str] = dataclasses.field(default_factory=dict)
    """Added to the apiserver's audit event, prefixed with the webhook's name."""

    @classmethod
    def allow(cls, *, warnings: tuple[str, ...] = (),
              audit_annotations: Mapping[str, str] | None = None) -> Verdict:
        return cls(True, warnings=warnings, audit_annotations=dict(audit_annotations or {}))

    @classmethod
    def deny(cls, message: str, *, code: int = 403, warnings: tuple[str, ...] = (),
             audit_annotations: Mapping[str, str] | None = None) -> Verdict:
        return cls(False, message=message, code=code, warnings=warnings,
                   audit_annotations=dict(audit_annotations or {}))


_STATUS_REASONS = {400: "BadRequest", 403: "Forbidden", 422: "Invalid", 500: "InternalError",
                   503: "ServiceUnavailable"}


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


Handler = Callable[[AdmissionRequest], Awaitable[Verdict]]
"""What a route runs for each review."""


def review_response(uid: str, verdict: Verdict) -> dict[str, Any]:
    """The AdmissionReview the apiserver expects back for request `uid`."""
    response: dict[str, Any] = {"uid": uid, "allowed": verdict.allowed}
    if not verdict.allowed:
        response["status"] = {
            "code": verdict.code,
            "reason": _STATUS_REASONS.get(verdict.code, "Forbidden"),
            "message": verdict.message,
        }
    if verdict.warnings:
        warnings = [_clip(w, MAX_WARNING_LENGTH) for w in verdict.warnings[:MAX_WARNINGS]]
        if len(verdict.warnings) > MAX_WARNINGS:
            warnings.append(f"... and {len(verdict.warnings) - MAX_WARNINGS} more")
        response["warnings"] = warnings
    if verdict.audit_annotations:
        response["auditAnnotations"] = dict(verdict.audit_annotations)
    return {"apiVersion": API_VERSION, "kind": KIND, "response": response}


def encode_review(review: Mapping[str, Any]) -> bytes:
    """An answer (`review_response`) as JSON bytes: orjson's, or json.dumps's for what orjson
    refuses (a lone surrogate a message quotes from the object, an integer beyond 64 bits).

    Both are the same JSON value; orjson writes it without spaces and non-ASCII as UTF-8, where
    json.dumps escapes it (\\uXXXX): the apiserver reads either alike.
    """
    try:
        return orjson.dumps(review)
    except orjson.JSONEncodeError:
        return json.dumps(review).encode()


def bad_request(reason: str) -> dict[str, Any]:
    """The body of an HTTP 400 answer (a metav1.Status, which is what Kubernetes tools read)."""
    return {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": 400,
            "reason": "BadRequest", "message": f"malformed AdmissionReview: {reason}"}
