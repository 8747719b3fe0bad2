"""The canonical encoding of an entry (pure): a pinned known answer, and its edge cases."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib

import pytest

from tenantry.ledger import hashing

GOLDEN = hashing.LedgerRow(
    chain="acme", seq=2, event_time="2026-01-02T03:04:05.000006Z", tenant="acme",
    actor="alice", actor_kind="user",
    identity={"kind": "kubernetes", "username": "alice", "groups": ["team-a"]},
    action="tenant.update", resource_kind="Tenant", resource_namespace=None,
    resource_name="acme", changes={"b": 1.5, "a": [1, "x"], "é": None, "big": 1e21},
    source_ip="10.0.0.1", request_id="r1", component="admission", prev_hash="ab" * 32,
    hash="",
)

# Written out by hand from the module docstring: sorted keys, no whitespace, JCS numbers.
GOLDEN_CANONICAL = (
    '{"action":"tenant.update","actor":"alice","actor_kind":"user","chain":"acme",'
    '"changes":{"a":[1,"x"],"b":1.5,"big":1e+21,"é":null},"component":"admission",'
    '"event_time":"2026-01-02T03:04:05.000006Z",'
    '"identity":{"groups":["team-a"],"kind":"kubernetes","username":"alice"},'
    f'"prev_hash":"{"ab" * 32}","request_id":"r1","resource_kind":"Tenant",'
    '"resource_name":"acme","resource_namespace":null,"seq":2,"source_ip":"10.0.0.1",'
    '"tenant":"acme","v":1}'
)


def test_golden_entry_encodes_exactly_as_documented() -> None:
    encoded = hashing.canonical_json(GOLDEN.document())
    assert encoded == GOLDEN_CANONICAL.encode("utf-8")
    assert GOLDEN.compute_hash() == hashlib.sha256(encoded).hexdigest()


def test_golden_hash_is_pinned() -> None:
    # A changed encoding would orphan every stored hash: changing this value needs a new
    # format version, not an edit.
    assert GOLDEN.compute_hash() == (
        "ceb829a6aa3fdac3004ee6078ba3a66368639533648e93df18b4c88ed03fbc78")


@pytest.mark.parametrize("field", hashing.ENTRY_FIELDS)
def test_every_field_is_covered_by_the_hash(field: str) -> None:
    value = getattr(GOLDEN, field)
    changed: object
    if isinstance(value, dict):
        changed = {**value, "extra": 1}
    elif isinstance(value, int):
        changed = value + 1
    elif field == "event_time":
        changed = "2026-01-02T03:04:05.000007Z"
    elif field == "prev_hash":
        changed = "cd" * 32
    else:
        changed = (value or "") + "x"
    altered = dataclasses.replace(GOLDEN, **{field: changed})  # type: ignore[arg-type]
    assert altered.compute_hash() != GOLDEN.compute_hash()


def test_event_time_format_is_utc_with_six_fraction_digits() -> None:
    cet = datetime.timezone(datetime.timedelta(hours=1))
    moment = datetime.datetime(2026, 3, 4, 5, 6, 7, 0, tzinfo=cet)
    assert hashing.format_event_time(moment) == "2026-03-04T04:06:07.000000Z"
    assert hashing.parse_event_time("2026-03-04T04:06:07.000000Z") == moment


def test_naive_event_time_is_refused() -> None:
    with pytest.raises(hashing.HashingError):
        hashing.format_event_time(datetime.datetime(2026, 1, 1))


@pytest.mark.parametrize(("stored", "canonical"), [
    ("1.0", b"1"),
    ("-0.0", b"0"),
    ("9007199254740991", b"9007199254740991"),
    # Beyond 2**53 a JSON number means the nearest double (I-JSON), as in PostgreSQL's hash.
    ("9007199254740993", b"9007199254740992"),
    ("18446744073709551616", b"18446744073709552000"),
    ("1000000000000000000000", b"1e+21"),
    ("0.000001", b"0.000001"),
    ("0.0000001", b"1e-7"),
    ("1.5e300", b"1.5e+300"),
])
def test_stored_numbers_are_read_as_doubles(stored: str, canonical: bytes) -> None:
    assert hashing.canonical_json(hashing.parse_json(stored)) == canonical


def test_nan_is_not_json() -> None:
    with pytest.raises(hashing.HashingError):
        hashing.parse_json('{"a": NaN}')
    with pytest.raises(hashing.HashingError):
        hashing.canonical_json({"a": float("nan")})


@pytest.mark.parametrize("value", [{"a": "x\x00y"}, {"a\x00": 1}, ["\ud800"], {"n": 2**60}])
def test_values_without_a_canonical_form_are_refused(value: object) -> None:
    with pytest.raises(hashing.HashingError):
        hashing.canonical_json(value)


def test_a_backslash_u0000_text_is_not_mistaken_for_nul() -> None:
    assert hashing.canonical_json({"a": "\\u0000"}) == b'{"a":"\\\\u0000"}'


def test_export_line_round_trips_and_keeps_the_hash() -> None:
    row = dataclasses.replace(GOLDEN, hash=GOLDEN.compute_hash())
    again = hashing.LedgerRow.from_json_line(row.to_json_line())
    assert again == row
    assert again.compute_hash() == row.hash


def test_export_line_with_missing_or_unknown_members_is_refused() -> None:
    data = GOLDEN.to_json()
    del data["actor"]
    with pytest.raises(hashing.HashingError, match="actor"):
        hashing.LedgerRow.from_json(data)
    with pytest.raises(hashing.HashingError, match="sneaky"):
        hashing.LedgerRow.from_json({**GOLDEN.to_json(), "sneaky": 1})


@pytest.mark.parametrize(("field", "value"), [
    ("seq", "2"), ("seq", True), ("actor", 5), ("tenant", ["acme"]), ("changes", [1]),
])
def test_export_line_with_mistyped_members_is_refused(field: str, value: object) -> None:
    with pytest.raises(hashing.HashingError, match=field):
        hashing.LedgerRow.from_json({**GOLDEN.to_json(), field: value})


def test_platform_events_have_their_own_chain() -> None:
    assert hashing.chain_for(None) == hashing.PLATFORM_CHAIN
    assert hashing.chain_for("acme") == "acme"
