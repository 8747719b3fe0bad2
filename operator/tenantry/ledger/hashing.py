"""The canonical encoding of a ledger entry and its hash: pure Python, no database.

PostgreSQL computes every entry's hash when the entry is inserted (see `schema`), because only the
server knows the entry's sequence number and event time at that moment; the writer hands it
`identity` and `changes` already canonical (`canonical_json`), the one part that is slow in SQL.
This module is the reference definition of the whole computation, so that anyone holding an
export can recompute every hash with nothing but Python, `rfc8785` and `hashlib`. Tests keep the
two in agreement.

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

Two encoders, one output
------------------------
`rfc8785` (pure Python, ~50 us an entry) is the reference. Verification and the writer use a
fast path instead: `orjson` with sorted keys (Rust; no whitespace, UTF-8 out, ~1 us an entry
where the `json` module's C encoder took ~9), whose output is RFC 8785's byte for byte where the
two rules coincide: string keys; strings, whose escapes are the same in both (the seven short
ones, ``\\u00xx`` in lowercase hex for the other controls, nothing else escaped); integers
within +-(2**53-1); true, false, null; keys free of characters beyond U+FFFF (code point order,
which orjson sorts by, is then UTF-16 order). Anything else goes to the reference: a float
(neither encoder's float text is ECMAScript's by construction), a larger integer or another
type (found by a walk of the value, `_plain`), and a character beyond U+FFFF, a lone surrogate
(orjson refuses it) or NUL (found in the fast output, `_fast_bytes`).

Reading goes the same way: `orjson.loads` parses an export line or a jsonb column, and its value
is kept only when `_plain` holds for it, i.e. every number in it is an integer within
+-(2**53-1) (on such text both parsers build the same value); otherwise, or when orjson refuses
the text, `parse_json` parses it again with the number semantics above.
`tests/ledger/test_hashing_property.py` checks the encoders agree on generated values and
entries, and the parsers on generated lines.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import re
import threading
from collections.abc import Mapping
from typing import Any

import orjson
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


#: Every member of a stored row (an export line's object has exactly these).
_ROW_MEMBERS_IN_ORDER: tuple[str, ...] = (*ENTRY_FIELDS, "hash")
_ROW_MEMBERS = frozenset(_ROW_MEMBERS_IN_ORDER)


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


# Whether the text being parsed (in this thread) held a number that is not an exact integer: the
# parse hooks below note it, so rows read from JSON know they need no walk (see `_plain`).
_parsing = threading.local()


def _parse_int(text: str) -> int | float:
    # I-JSON: an integer beyond the double's exact range means the double nearest to it.
    value = int(text)
    if abs(value) <= MAX_SAFE_INTEGER:
        return value
    _parsing.inexact = True
    return float(text)


def _parse_float(text: str) -> float:
    _parsing.inexact = True
    return float(text)


def _refuse_constant(name: str) -> Any:
    raise HashingError(f"{name} is not JSON")


# One decoder for every parse: json.loads with hooks builds a new one per call.
_decoder = json.JSONDecoder(parse_int=_parse_int, parse_float=_parse_float,
                            parse_constant=_refuse_constant)


def parse_json(text: str) -> Any:
    """Parse JSON (e.g. PostgreSQL's jsonb text) with the number semantics of the hash."""
    return _decoder.decode(text)


def _parse_json_exact(text: str) -> tuple[Any, bool]:
    """`parse_json`, and whether the value is plain (`_plain`: only strings, exact integers,
    booleans, null, lists and string-keyed dicts), so needs no walk before the fast encoder."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        pass  # NaN, a lone surrogate, ...: the reference parser's verdict (and error) below
    else:
        if _plain(value):
            return value, True
    _parsing.inexact = False
    value = _decoder.decode(text)
    return value, not _parsing.inexact


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON of `value`, or HashingError if it has no canonical form.

    Object keys must be strings (as in every JSON value); see "Two encoders" above.
    """
    if type(value) is dict and _plain(value):
        fast = _fast_bytes(value)
        if fast is not None:
            return fast
    return _reference_json(value)


def _reference_json(value: Any) -> bytes:
    try:
        encoded = rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as error:
        raise HashingError(str(error)) from error
    except UnicodeEncodeError as error:  # a lone surrogate in a key (rfc8785 sorts by UTF-16)
        raise HashingError(f"a key is not valid Unicode: {error.reason}") from error
    if _contains_nul(value):
        raise HashingError("strings must not contain U+0000 (PostgreSQL cannot store it)")
    return encoded


# A character beyond U+FFFF is four bytes in UTF-8, led by F0-F4, and the only kind whose UTF-16
# order differs from the code point order orjson sorts keys by. Searched only in non-ASCII output.
_BEYOND_BMP = re.compile(b"[\xf0-\xf4]")


def _fast_bytes(value: Any) -> bytes | None:
    """orjson's sorted-key output for a value that passed `_plain`, when it is the canonical
    text: None for a lone surrogate (orjson refuses it), a character beyond U+FFFF or a NUL."""
    try:
        encoded = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError: a surrogate, or a value that is not JSON
        return None
    if b"\\u0000" in encoded or (not encoded.isascii() and _BEYOND_BMP.search(encoded)):
        return None
    return encoded


def _plain(value: Any) -> bool:
    """Whether `value` holds only what both encoders write alike: dicts with string keys, lists,
    strings, true/false/null and integers within +-(2**53-1). Exact types, so a subclass with
    its own idea of itself takes the reference path."""
    kind = type(value)
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not _plain_member(item):
                return False
        return True
    if kind is list:
        return all(map(_plain_member, value))
    return _plain_member(value)


def _plain_member(item: Any) -> bool:
    # Scalars decided here, without a call each (verification walks every value it reads).
    kind = type(item)
    if kind is str or item is None or kind is bool:
        return True
    if kind is int:
        return bool(-MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER)
    if kind is dict or kind is list:
        return _plain(item)
    return False


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
    _from_exact_json: bool = dataclasses.field(default=False, init=False, repr=False,
                                               compare=False)
    """Set when the row was read by a parser (an export line, a database record) and its
    `identity` and `changes` are plain (`_plain`): then every member is a JSON string, null or
    integer and the fast encoder needs no walk. Not an init field, so `dataclasses.replace`
    never carries it over."""

    def document(self) -> JsonObject:
        """The JSON object whose canonical form is hashed (see the module docstring)."""
        doc: JsonObject = {name: getattr(self, name) for name in ENTRY_FIELDS}
        doc["v"] = FORMAT_VERSION
        return doc

    def compute_hash(self) -> str:
        """Recompute this entry's hash from its content (never trusts `self.hash`)."""
        fast = _fast_entry_bytes(self)
        if fast is not None:
            return hashlib.sha256(fast).hexdigest()
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
        if data.keys() != _ROW_MEMBERS:
            missing = _ROW_MEMBERS - data.keys()
            extra = data.keys() - _ROW_MEMBERS
            raise HashingError(f"ledger row has missing {sorted(missing)} / unknown "
                               f"{sorted(extra)} members")
        row = cls(**data)
        row._check_types()
        return row

    @classmethod
    def from_json_line(cls, line: str) -> LedgerRow:
        data, exact = _parse_json_exact(line)
        if not isinstance(data, dict):
            raise HashingError("a ledger row line must be a JSON object")
        row = cls.from_json(data)
        object.__setattr__(row, "_from_exact_json", exact)
        return row

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> LedgerRow:
        """From a database record: `event_time` a datetime, jsonb columns as JSON text."""
        data = dict(record)
        data["event_time"] = format_event_time(data["event_time"])
        exact = True
        for name in ("identity", "changes"):
            if isinstance(data[name], str):
                data[name], exact_here = _parse_json_exact(data[name])
                exact = exact and exact_here
            else:
                exact = False
        row = cls(**{name: data[name] for name in _ROW_MEMBERS_IN_ORDER})
        object.__setattr__(row, "_from_exact_json", exact)
        return row

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


def _fast_entry_bytes(row: LedgerRow) -> bytes | None:
    """The canonical document of `row` by the fast encoder (the tight loop of verification), or
    None when a value needs the general path (see "Two encoders")."""
    seq = row.seq
    if (type(seq) is not int or not 0 <= seq <= MAX_SAFE_INTEGER
            or type(row.identity) is not dict or type(row.changes) is not dict):
        return None
    if not row._from_exact_json and not _plain_members(row):
        return None
    return _fast_bytes({
        "action": row.action, "actor": row.actor, "actor_kind": row.actor_kind,
        "chain": row.chain, "changes": row.changes, "component": row.component,
        "event_time": row.event_time, "identity": row.identity, "prev_hash": row.prev_hash,
        "request_id": row.request_id, "resource_kind": row.resource_kind,
        "resource_name": row.resource_name, "resource_namespace": row.resource_namespace,
        "seq": seq, "source_ip": row.source_ip, "tenant": row.tenant, "v": FORMAT_VERSION})


def _plain_members(row: LedgerRow) -> bool:
    """Whether a row built in code (not read by a parser) holds only what the fast encoder
    writes as the reference does: string or null members, plain identity and changes."""
    for member in (row.chain, row.event_time, row.tenant, row.actor, row.actor_kind, row.action,
                   row.resource_kind, row.resource_namespace, row.resource_name, row.source_ip,
                   row.request_id, row.component, row.prev_hash):
        if type(member) is not str and member is not None:
            return False
    return _plain(row.identity) and _plain(row.changes)


def entry_hash(document: Mapping[str, Any]) -> str:
    """SHA-256 (lowercase hex) of the canonical JSON of an entry document."""
    return hashlib.sha256(canonical_json(dict(document))).hexdigest()
