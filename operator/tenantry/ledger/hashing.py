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
fast path instead: the C encoder of the standard `json` module (sorted keys, no whitespace,
``ensure_ascii=False``), whose output is RFC 8785's byte for byte where the two rules coincide:
string keys; strings, whose escapes are the same in both (the seven short ones, ``\\u00xx``
for the other controls); integers within +-(2**53-1); true, false, null; keys free of
characters beyond U+FFFF (code point order is then UTF-16 order). Anything else goes to the
reference: a float (Python's repr is not ECMAScript's), a larger integer or another type (found
by a walk of the value, `_plain`, which rows parsed from JSON skip when the parser saw no such
number), and a character beyond U+FFFF, a lone surrogate or NUL (found in the fast output,
`_fast_safe`). `tests/ledger/test_hashing_property.py` checks the two agree on generated values
and entries.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import json.encoder
import re
import threading
from collections.abc import Callable, Mapping
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
    """`parse_json`, and whether every number in `text` was an exact integer (then the value
    holds only strings, exact integers, booleans, null, lists and string-keyed dicts)."""
    _parsing.inexact = False
    value = _decoder.decode(text)
    return value, not _parsing.inexact


def canonical_json(value: Any) -> bytes:
    """RFC 8785 canonical JSON of `value`, or HashingError if it has no canonical form.

    Object keys must be strings (as in every JSON value); see "Two encoders" above.
    """
    if type(value) is dict and _plain(value):
        text = _fast_text(value)
        if _fast_safe(text):
            return text.encode("utf-8")
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


def _refuse_unknown(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON")


_quote: Callable[[str], str] = json.encoder.encode_basestring
_c_make_encoder = json.encoder.c_make_encoder  # type: ignore[attr-defined]
if _c_make_encoder is not None:
    # (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys,
    # allow_nan): what json.JSONEncoder builds per call, built once.
    _c_encode = _c_make_encoder(None, _refuse_unknown, _quote, None, ":", ",", True, False,
                                False)

    def _fast_text(value: Any) -> str:
        return "".join(_c_encode(value, 0))
else:  # pragma: no cover - interpreters without the C accelerator
    _py_encoder = json.JSONEncoder(ensure_ascii=False, sort_keys=True, separators=(",", ":"),
                                   allow_nan=False, default=_refuse_unknown)

    def _fast_text(value: Any) -> str:
        return _py_encoder.encode(value)

# Characters the fast output may get wrong, for the reference: a surrogate (unencodable) or a
# character beyond U+FFFF (UTF-16 key order). Searched only in non-ASCII text.
_WIDE = re.compile("[\ud800-\udfff\U00010000-\U0010ffff]")


def _fast_safe(text: str) -> bool:
    """Whether fast output of values that passed `_plain` is the canonical text (no NUL, no
    character whose encoding or key order differs)."""
    return "\\u0000" not in text and (text.isascii() or _WIDE.search(text) is None)


def _plain(value: Any) -> bool:
    """Whether `value` holds only what both encoders write alike: dicts with string keys, lists,
    strings, true/false/null and integers within +-(2**53-1). Exact types, so a subclass with
    its own idea of itself takes the reference path."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        return bool(-MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)
    if kind is dict:
        return all(type(key) is str and _plain(item) for key, item in value.items())
    if kind is list:
        return all(_plain(item) for item in value)
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
    """Set when `identity` and `changes` were parsed from JSON without a float (so need no
    `_plain` walk); not an init field, so `dataclasses.replace` never carries it over."""

    def document(self) -> JsonObject:
        """The JSON object whose canonical form is hashed (see the module docstring)."""
        doc: JsonObject = {name: getattr(self, name) for name in ENTRY_FIELDS}
        doc["v"] = FORMAT_VERSION
        return doc

    def compute_hash(self) -> str:
        """Recompute this entry's hash from its content (never trusts `self.hash`)."""
        text = _fast_entry_text(self)
        if text is not None:
            return hashlib.sha256(text.encode("utf-8")).hexdigest()
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
        row = cls(**{name: data[name] for name in (*ENTRY_FIELDS, "hash")})
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


def _opt(value: str | None) -> str:
    return "null" if value is None else _quote(value)


def _fast_entry_text(row: LedgerRow) -> str | None:
    """The canonical document of `row` written out in its fixed key order (the tight loop of
    verification), or None when a value needs the general path (see "Two encoders")."""
    seq = row.seq
    if (type(seq) is not int or not 0 <= seq <= MAX_SAFE_INTEGER
            or type(row.identity) is not dict or type(row.changes) is not dict
            or not (row._from_exact_json or (_plain(row.identity) and _plain(row.changes)))):
        return None
    try:
        text = (f'{{"action":{_quote(row.action)},"actor":{_quote(row.actor)},'
                f'"actor_kind":{_quote(row.actor_kind)},"chain":{_quote(row.chain)},'
                f'"changes":{_fast_text(row.changes)},"component":{_quote(row.component)},'
                f'"event_time":{_quote(row.event_time)},"identity":{_fast_text(row.identity)},'
                f'"prev_hash":{_quote(row.prev_hash)},"request_id":{_opt(row.request_id)},'
                f'"resource_kind":{_quote(row.resource_kind)},'
                f'"resource_name":{_opt(row.resource_name)},'
                f'"resource_namespace":{_opt(row.resource_namespace)},"seq":{seq},'
                f'"source_ip":{_opt(row.source_ip)},"tenant":{_opt(row.tenant)},'
                f'"v":{FORMAT_VERSION}}}')
    except TypeError:  # a member that is not a string
        return None
    return text if _fast_safe(text) else None


def entry_hash(document: Mapping[str, Any]) -> str:
    """SHA-256 (lowercase hex) of the canonical JSON of an entry document."""
    return hashlib.sha256(canonical_json(dict(document))).hexdigest()
