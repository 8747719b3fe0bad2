"""The canonical encoding of a ledger entry and its hash: pure Python, no database.

PostgreSQL computes every entry's hash when the entry is inserted (see `schema`), because only the
server knows the entry's sequence number and event time at that moment. This module is the
reference definition of the same computation, so that anyone holding an export can recompute
every hash with nothing but Python, `rfc8785` and `hashlib`. A test keeps the two in agreement.

Canonical encoding, format version 1
------------------------------------
``hash = lowercase hex of SHA-256(JCS(document))``, where JCS is the JSON Canonicalization
Scheme of RFC 8785 (keys sorted by UTF-16 code units, no whitespace, ECMAScript number and string
serialisation, UTF-8 output) and ``document`` is a JSON object with exactly these members::

    v                   1 (the format version, an integer)
    chain               string: the tenant's name, or "_platform" for platform events
    seq                 integer >= 1: the entry's position in its chain, gapless
    event_time          string: server time of the insert in UTC, exactly
                        "YYYY-MM-DDTHH:MM:SS.ffffffZ" (always six fraction digits, always "Z")
    tenant              string, or null for platform events
    actor               string: who acted (user name, service account, component)
    actor_kind          "user" | "serviceaccount" | "system"
    identity            object: the credential used (token id, API key prefix, Kubernetes
                        username and groups, ...)
    action              string
    resource_kind       string
    resource_namespace  string or null
    resource_name       string or null
    changes             object: summary of what changed (secrets redacted before insert)
    source_ip           string (PostgreSQL's `host(inet)` text form) or null
    request_id          string or null
    component           string: the Tenantry component that wrote the entry
    prev_hash           string: the `hash` of entry seq-1 of the same chain; for seq 1, 64 "0"s

Numbers inside `identity` and `changes` follow I-JSON, as RFC 8785 assumes: every JSON number is
an IEEE-754 double. An integer of magnitude at most 2**53-1 serialises as that integer; any other
number serialises as the double nearest to it, in ECMAScript Number-to-String form ("1e+21",
"0.1", "100000000000000000000"). `parse_json` reads stored JSON with exactly this meaning.

Strings may contain any Unicode scalar value except U+0000 (which PostgreSQL cannot store).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import rfc8785

FORMAT_VERSION = 1
PLATFORM_CHAIN = "_platform"
GENESIS_HASH = "0" * 64
MAX_SAFE_INTEGER = 2**53 - 1

JsonObject = dict[str, Any]

#: The members of the hashed document besides `v`, in the order exports list them.
ENTRY_FIELDS: tuple[str, ...] = (
    "chain", "seq", "event_time", "tenant", "actor", "actor_kind", "identity", "action",
    "resource_kind", "resource_namespace", "resource_name", "changes", "source_ip",
    "request_id", "component", "prev_hash",
)


class HashingError(ValueError):
    """A value cannot be encoded canonically (e.g. NaN, a lone surrogate, a NUL character)."""


def chain_for(tenant: str | None) -> str:
    """The chain an event of `tenant` belongs to: the tenant's own, or the platform chain."""
    return PLATFORM_CHAIN if tenant is None else tenant


def format_event_time(value: datetime.datetime) -> str:
    """The exact text form of an event time used in the hash: UTC, microseconds, "Z"."""
    if value.tzinfo is None:
        raise HashingError("event time must be timezone-aware")
    utc = value.astimezone(datetime.UTC)
    # Explicit fields rather than strftime: %Y is not zero-padded on every platform.
    return (f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}:{utc.minute:02d}:"
            f"{utc.second:02d}.{utc.microsecond:06d}Z")


def parse_event_time(text: str) -> datetime.datetime:
    """The inverse of `format_event_time` (for loading exports back into a database)."""
    parsed = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return parsed.replace(tzinfo=datetime.UTC)


def _parse_int(text: str) -> int | float:
    # I-JSON: an integer beyond the double's exact range means the double nearest to it.
    value = int(text)
    return value if abs(value) <= MAX_SAFE_INTEGER else float(text)


def _refuse_constant(name: str) -> Any:
    raise HashingError(f"{name} is not JSON")


def parse_json(text: str) -> Any:
    """Parse JSON (e.g. PostgreSQL's jsonb text) with the number semantics of the hash."""
    return json.loads(text, parse_int=_parse_int, parse_constant=_refuse_constant)


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON of `value`, or HashingError if it has no canonical form."""
    try:
        encoded = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as error:
        raise HashingError(str(error)) from error
    if _contains_nul(value):
        raise HashingError("strings must not contain U+0000 (PostgreSQL cannot store it)")
    return encoded


def _contains_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, Mapping):
        return any(_contains_nul(k) or _contains_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_contains_nul(item) for item in value)
    return False


@dataclasses.dataclass(frozen=True)
class LedgerRow:
    """One stored ledger entry, as read from the database or from an export line."""

    chain: str
    seq: int
    event_time: str
    tenant: str | None
    actor: str
    actor_kind: str
    identity: JsonObject
    action: str
    resource_kind: str
    resource_namespace: str | None
    resource_name: str | None
    changes: JsonObject
    source_ip: str | None
    request_id: str | None
    component: str
    prev_hash: str
    hash: str

    def document(self) -> JsonObject:
        """The JSON object whose canonical form is hashed (see the module docstring)."""
        doc: JsonObject = {name: getattr(self, name) for name in ENTRY_FIELDS}
        doc["v"] = FORMAT_VERSION
        return doc

    def compute_hash(self) -> str:
        """Recompute this entry's hash from its content (never trusts `self.hash`)."""
        return entry_hash(self.document())

    def to_json(self) -> JsonObject:
        """The export form: every hashed member plus `hash`."""
        out = {name: getattr(self, name) for name in ENTRY_FIELDS}
        out["hash"] = self.hash
        return out

    def to_json_line(self) -> str:
        """One canonical JSON line (no trailing newline) for a JSON-lines export."""
        return canonical_json(self.to_json()).decode()

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LedgerRow:
        """Read an export object; raises HashingError when a member is missing or mistyped."""
        expected = {*ENTRY_FIELDS, "hash"}
        missing = expected - data.keys()
        extra = data.keys() - expected
        if missing or extra:
            raise HashingError(f"ledger row has missing {sorted(missing)} / unknown "
                               f"{sorted(extra)} members")
        row = cls(**{name: data[name] for name in expected})
        row._check_types()
        return row

    @classmethod
    def from_json_line(cls, line: str) -> LedgerRow:
        data = parse_json(line)
        if not isinstance(data, dict):
            raise HashingError("a ledger row line must be a JSON object")
        return cls.from_json(data)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> LedgerRow:
        """From a database record: `event_time` a datetime, jsonb columns as JSON text."""
        data = dict(record)
        data["event_time"] = format_event_time(data["event_time"])
        for name in ("identity", "changes"):
            if isinstance(data[name], str):
                data[name] = parse_json(data[name])
        return cls(**{name: data[name] for name in (*ENTRY_FIELDS, "hash")})

    def _check_types(self) -> None:
        # An export is untrusted input: a wrong type must become a clear verification failure,
        # not an exception from deep inside the verifier.
        required_str = ("chain", "event_time", "actor", "actor_kind", "action", "resource_kind",
                        "component", "prev_hash", "hash")
        optional_str = ("tenant", "resource_namespace", "resource_name", "source_ip",
                        "request_id")
        for name in required_str:
            if not isinstance(getattr(self, name), str):
                raise HashingError(f"ledger row member {name!r} must be a string")
        for name in optional_str:
            if not isinstance(getattr(self, name), str | None):
                raise HashingError(f"ledger row member {name!r} must be a string or null")
        if not isinstance(self.seq, int) or isinstance(self.seq, bool):
            raise HashingError("ledger row member 'seq' must be an integer")
        for name in ("identity", "changes"):
            if not isinstance(getattr(self, name), dict):
                raise HashingError(f"ledger row member {name!r} must be an object")


def entry_hash(document: Mapping[str, Any]) -> str:
    """SHA-256 (lowercase hex) of the canonical JSON of an entry document."""
    return hashlib.sha256(canonical_json(dict(document))).hexdigest()
