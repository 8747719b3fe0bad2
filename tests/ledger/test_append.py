"""Appending: positions, server time, hashes that match the Python reference, atomic batches."""

from __future__ import annotations

import datetime
import json
import random
import struct

import asyncpg
import pytest

from tenantry.ledger import append, events, hashing, verify
from tests.ledger.ledger_helpers import make_event, read_chain, read_head

pytestmark = pytest.mark.postgres


async def test_appends_get_consecutive_positions_per_chain(app_conn: asyncpg.Connection) -> None:
    first = await append.append(app_conn, make_event(0))
    second = await append.append(app_conn, make_event(1))
    other = await append.append(app_conn, make_event(2, tenant="beta"))
    platform = await append.append(app_conn, make_event(3, tenant=None))
    assert [(a.chain, a.seq) for a in (first, second, other, platform)] == [
        ("acme", 1), ("acme", 2), ("beta", 1), (hashing.PLATFORM_CHAIN, 1)]
    rows = await read_chain(app_conn, "acme")
    assert rows[0].prev_hash == hashing.GENESIS_HASH
    assert rows[1].prev_hash == rows[0].hash == first.hash
    assert await read_head(app_conn, "acme") == (2, second.hash)


async def test_event_time_is_the_servers_clock(app_conn: asyncpg.Connection) -> None:
    before = await app_conn.fetchval("SELECT clock_timestamp()")
    appended = await append.append(app_conn, make_event())
    after = await app_conn.fetchval("SELECT clock_timestamp()")
    assert before <= appended.event_time <= after
    stored = (await read_chain(app_conn, "acme"))[0]
    assert stored.event_time == hashing.format_event_time(appended.event_time)


async def test_stored_rows_hash_exactly_as_the_python_reference(
        app_conn: asyncpg.Connection) -> None:
    tricky = make_event(
        actor="zoë \"quoted\" \\ back\tslash\n\x01\x1f\x7f \u2028 😀",
        source_ip="2001:DB8:0:0::1",
        identity=events.kubernetes_identity("system:serviceaccount:ns:sa", ["a", "ü"]),
        changes={
            "\ue000": 1, "😀": 2, "a": 3, "": 4, "é": 5,  # UTF-16 order differs from code points
            "floats": [0.1, 1e21, 1e-7, 5e-324, -1.5, 2.0**60, 123456.789],
            "ints": [0, -1, 2**53 - 1, -(2**53 - 1)],
            "nested": {"b": [True, False, None, {}, []], "a": "plain"},
        })
    appended = await append.append(app_conn, tricky)
    row = (await read_chain(app_conn, "acme"))[0]
    assert row.source_ip == "2001:db8::1"
    assert row.compute_hash() == row.hash == appended.hash
    assert row.changes["floats"][1] == 1e21


async def test_sql_canonical_json_matches_rfc8785_for_many_values(
        admin_conn: asyncpg.Connection) -> None:
    rng = random.Random(8785)  # noqa: S311 - reproducible test data, not secrets
    values: list[object] = [0.1 + 0.2, 1e16, 1e21, 1e22, 1e-6, 1e-7, 2.0**53, 2.0**53 + 2,
                            1.7976931348623157e308, 2.2250738585072014e-308, 5e-324, -0.0,
                            9007199254740993, 2**64, -(2**70), 123e-20, 4.35, 0.000001234]
    while len(values) < 1500:
        (number,) = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))
        if number == number and abs(number) != float("inf"):
            values.append(number)
    values += [rng.uniform(-1e6, 1e6) for _ in range(300)]
    values += ["".join(chr(rng.choice([rng.randrange(1, 0x80), rng.randrange(0x80, 0xD800),
                                       rng.randrange(0xE000, 0x110000)]))
                       for _ in range(rng.randrange(0, 8))) for _ in range(300)]
    keys = ["\ue000", "\uffff", "😀", "\U0010ffff", "a", "", "\x7f", "\x01", "é", "\ud7ff"]
    values += [{k: i for i, k in enumerate(rng.sample(keys, rng.randrange(1, len(keys))))}
               for _ in range(100)]
    texts = [json.dumps(value) for value in values]
    rows = await admin_conn.fetch(
        "SELECT ledger.jcs(t::jsonb) AS c FROM unnest($1::text[]) WITH ORDINALITY AS u(t, i) "
        "ORDER BY i", texts)
    mismatches = [
        (text, row["c"], hashing.canonical_json(hashing.parse_json(text)).decode())
        for text, row in zip(texts, rows, strict=True)
        if row["c"] != hashing.canonical_json(hashing.parse_json(text)).decode()
    ]
    assert mismatches == []


async def test_batch_results_follow_input_order_across_chains(
        app_conn: asyncpg.Connection) -> None:
    await append.append(app_conn, make_event(0, tenant="beta"))
    batch = [make_event(1, tenant="beta"), make_event(2), make_event(3, tenant=None),
             make_event(4), make_event(5, tenant="beta")]
    results = await append.append_batch(app_conn, batch)
    assert [(r.chain, r.seq) for r in results] == [
        ("beta", 2), ("acme", 1), (hashing.PLATFORM_CHAIN, 1), ("acme", 2), ("beta", 3)]
    acme = await read_chain(app_conn, "acme")
    assert [row.request_id for row in acme] == ["req-2", "req-4"]
    for result in await verify.verify_all(app_conn):
        assert result.ok, result.describe()


async def test_an_empty_batch_writes_nothing(app_conn: asyncpg.Connection) -> None:
    assert await append.append_batch(app_conn, []) == []
    assert await app_conn.fetchval("SELECT count(*) FROM ledger.chain_heads") == 0


async def test_a_batch_with_one_bad_event_writes_nothing(app_conn: asyncpg.Connection) -> None:
    await append.append(app_conn, make_event(0))
    good = [make_event(1).payload(), make_event(2, tenant="beta").payload()]
    bad = {**make_event(3).payload(), "actor_kind": "robot"}
    with pytest.raises(asyncpg.CheckViolationError):
        await app_conn.fetch("SELECT * FROM ledger.append_batch($1::jsonb)",
                             json.dumps([*good, bad]))
    assert await app_conn.fetchval("SELECT count(*) FROM ledger.audit_log") == 1
    assert await read_head(app_conn, "beta") is None
    assert (await append.append(app_conn, make_event(4))).seq == 2


async def test_appends_join_the_callers_transaction(app_conn: asyncpg.Connection) -> None:
    tx = app_conn.transaction()
    await tx.start()
    await append.append(app_conn, make_event(0))
    await tx.rollback()
    assert await app_conn.fetchval("SELECT count(*) FROM ledger.audit_log") == 0
    assert (await append.append(app_conn, make_event(1))).seq == 1


async def test_secrets_in_changes_are_stored_redacted(app_conn: asyncpg.Connection) -> None:
    await append.append(app_conn, make_event(changes={
        "credential": {"name": "db", "plaintext": "hunter2"},
        "dsn": "postgresql://u:hunter2@db/x"}))
    text = await app_conn.fetchval("SELECT changes::text FROM ledger.audit_log")
    assert "hunter2" not in text


async def test_appended_time_is_timezone_aware(app_conn: asyncpg.Connection) -> None:
    appended = await append.append(app_conn, make_event())
    assert appended.event_time.tzinfo is not None
    assert appended.event_time.utcoffset() == datetime.timedelta(0)
