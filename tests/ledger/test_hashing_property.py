"""The fast canonical encoder is RFC 8785, byte for byte: property tests against `rfc8785`.

`hashing.canonical_json` and `LedgerRow.compute_hash` take a fast path (orjson with sorted
keys, a walk of the value, one scan of the output) and fall back to the `rfc8785` reference for
anything that path cannot vouch for; reading takes orjson's parse when the value it builds is
plain, `parse_json` (the number semantics of the hash) otherwise. Generated values aim at every
place where the two could part: floats and integers at and beyond 2**53, control characters and
escapes, U+2028, characters beyond U+FFFF in keys (UTF-16 order is not code point order there),
lone surrogates, NUL, deep nesting. On every one the result must be the reference's, or the same
refusal.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tenantry.ledger import hashing

SAFE = hashing.MAX_SAFE_INTEGER

# Characters from everywhere, weighted towards the ones with special encodings.
_chars = st.one_of(
    st.characters(codec="utf-8"),
    st.sampled_from(['"', "\\", "/", "\b", "\f", "\n", "\r", "\t", "\x00", "\x01", "\x1f",
                     "\x7f", "\u2028", "\ue000", "\uffff", "😀", "\U0010ffff", "é", ":", ","]),
    st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF),  # lone surrogates
)
_text = st.text(_chars, max_size=12)
_number = st.one_of(
    st.integers(min_value=-SAFE, max_value=SAFE),
    st.integers(),  # beyond 2**53 too: the reference refuses those
    st.sampled_from([SAFE, -SAFE, SAFE + 1, 10**15, 10**16, 0, -1]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.1, 1e21, 1e-7, 5e-324, -0.0, 2.0**53, 1.5, 100.0, 1e16]),
)
_scalar = st.one_of(st.none(), st.booleans(), _number, _text)
_json = st.recursive(
    _scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(_text, inner, max_size=6)),
    max_leaves=30,
)
_object = st.dictionaries(_text, _json, max_size=8)


def _reference(value: Any) -> bytes | None:
    """RFC 8785 by the reference, None when the value has no canonical form in the ledger (the
    reference refuses it, or it holds NUL, which PostgreSQL cannot store)."""
    try:
        encoded = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError):  # a surrogate key: the latter
        return None
    return None if _has_nul(value) else encoded


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _ours(value: Any) -> bytes | None:
    try:
        return hashing.canonical_json(value)
    except hashing.HashingError:
        return None


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_object)
@example({"\ue000": 1, "😀": 2, "a": 3})
@example({"a": 2**53, "b": 2**53 - 1})
@example({"x": [1.0, 0.5, 1e21, -0.0]})
@example({"k": "\\u0000"})
@example({"k": "a\x00"})
@example({"\ud800": 1})
@example({"t": "\u2028\x7f\x1f"})
def test_canonical_json_is_rfc8785_on_objects(value: dict[str, Any]) -> None:
    assert _ours(value) == _reference(value)


@settings(max_examples=300, deadline=None)
@given(_json)
def test_canonical_json_is_rfc8785_on_any_json_value(value: Any) -> None:
    assert _ours(value) == _reference(value)


_optional = st.one_of(st.none(), _text)
_rows = st.builds(
    hashing.LedgerRow,
    chain=_text, seq=st.integers(min_value=1, max_value=SAFE), event_time=_text,
    tenant=_optional, actor=_text, actor_kind=_text, identity=_object, action=_text,
    resource_kind=_text, resource_namespace=_optional, resource_name=_optional,
    changes=_object, source_ip=_optional, request_id=_optional, component=_text,
    prev_hash=_text, hash=st.just(""),
)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rows)
def test_entry_hash_is_sha256_of_the_rfc8785_document(row: hashing.LedgerRow) -> None:
    reference = _reference(row.document())
    if reference is None:
        with pytest.raises(hashing.HashingError):
            row.compute_hash()
    else:
        assert row.compute_hash() == hashlib.sha256(reference).hexdigest()


def test_typical_entries_take_the_fast_path() -> None:
    """The point of the fast path: an ordinary entry never needs the reference."""
    row = hashing.LedgerRow(
        chain="acme", seq=7, event_time="2026-01-02T03:04:05.000006Z", tenant="acme",
        actor="system:serviceaccount:tenantry-system:operator", actor_kind="serviceaccount",
        identity={"kind": "kubernetes", "username": "alice", "groups": ["a", "b"]},
        action="tenant.update", resource_kind="Tenant", resource_namespace=None,
        resource_name="acme", changes={"spec.quotas.cpu": {"from": "4", "to": "8"}, "n": 3},
        source_ip="10.0.0.1", request_id="r1", component="admission", prev_hash="ab" * 32,
        hash="")
    assert hashing._fast_entry_bytes(row) is not None
    assert row.compute_hash() == hashlib.sha256(rfc8785.dumps(row.document())).hexdigest()
    # A float anywhere sends the entry to the reference, and it still hashes the same.
    floaty = dataclasses.replace(row, changes={"ratio": 0.5})
    assert hashing._fast_entry_bytes(floaty) is None
    assert floaty.compute_hash() == hashlib.sha256(
        rfc8785.dumps(floaty.document())).hexdigest()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_rows)
def test_rows_read_back_from_export_lines_hash_as_the_reference(row: hashing.LedgerRow) -> None:
    """Rows parsed from JSON skip the walk when their numbers were exact: same hash."""
    if _reference(row.document()) is None:
        return
    line = dataclasses.replace(row, hash=row.compute_hash()).to_json_line()
    again = hashing.LedgerRow.from_json_line(line)
    reference = _reference(again.document())
    assert reference is not None
    assert again.compute_hash() == hashlib.sha256(reference).hexdigest() == again.hash


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_json, st.booleans())
@example({"big": 2**53, "bigger": 2**64, "huge": 10**30, "f": 1.0, "z": -0.0}, False)
@example({"s": "\ud800", "\udfff": [1e300, 5e-324]}, True)
def test_reading_json_gives_the_values_the_reference_parser_gives(value: Any,
                                                                  ascii_only: bool) -> None:
    """The fast read of an export line or a jsonb column is `parse_json`'s, to the type of every
    number (an integer beyond 2**53 means the nearest double), and says "plain" only when it
    is (then compute_hash skips its walk)."""
    text = json.dumps(value, ensure_ascii=ascii_only)
    fast, plain = hashing._parse_json_exact(text)
    assert repr(fast) == repr(hashing.parse_json(text))
    assert plain == hashing._plain(fast)
