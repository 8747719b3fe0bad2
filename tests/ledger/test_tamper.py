"""A superuser tampers with a chain (triggers off); verification finds each kind, at its seq.

Chain 'acme' has six entries; chain 'beta' is there to show that a tampered chain does not
taint the others.
"""

from __future__ import annotations

import dataclasses
import io

import asyncpg
import pytest

from tenantry.ledger import append, export, hashing, verify
from tests.ledger.ledger_helpers import INSERT_ROW, db_values, make_event, read_chain, tamper

pytestmark = pytest.mark.postgres

Kind = verify.BreakKind

_NON_KEY = ", ".join(c for c in (*hashing.ENTRY_FIELDS, "hash") if c not in ("chain", "seq"))
# Every column but the key, exchanged between entries 2 and 5 (constant column names only).
_SWAP_2_AND_5 = (
    f"UPDATE ledger.audit_log AS a SET ({_NON_KEY}) = ("  # noqa: S608
    f"SELECT {_NON_KEY} FROM ledger.audit_log AS b "
    "WHERE b.chain = a.chain AND b.seq = CASE a.seq WHEN 2 THEN 5 ELSE 2 END) "
    "WHERE a.chain = 'acme' AND a.seq IN (2, 5)")


@pytest.fixture
async def chain(app_conn: asyncpg.Connection) -> list[hashing.LedgerRow]:
    events = [make_event(i) for i in range(6)] + [make_event(i, tenant="beta") for i in range(3)]
    await append.append_batch(app_conn, events)
    return await read_chain(app_conn, "acme")


async def assert_broken(conn: asyncpg.Connection, seq: int, kind: verify.BreakKind, *,
                        checked: int | None = None) -> None:
    """Chain 'acme' breaks first at `seq`; `checked` entries verified (default: those before)."""
    result = await verify.verify_chain(conn, "acme")
    assert not result.ok
    assert (result.first_broken_seq, result.kind) == (seq, kind), result.reason
    assert result.checked == (seq - 1 if checked is None else checked)
    assert f"seq {seq}" in result.describe()
    assert (await verify.verify_chain(conn, "beta")).ok


async def test_untouched_chains_verify(app_conn: asyncpg.Connection,
                                       chain: list[hashing.LedgerRow]) -> None:
    results = await verify.verify_all(app_conn)
    assert [(r.chain, r.ok, r.checked) for r in results] == [("acme", True, 6),
                                                             ("beta", True, 3)]
    assert results[0].last_hash == chain[-1].hash


@pytest.mark.parametrize(("sql", "seq"), [
    ("UPDATE ledger.audit_log SET action = 'tenant.delete' WHERE chain = 'acme' AND seq = 3", 3),
    ("UPDATE ledger.audit_log SET changes = changes || '{\"n\": 99}' "
     "WHERE chain = 'acme' AND seq = 4", 4),
    ("UPDATE ledger.audit_log SET identity = '{\"kind\": \"kubernetes\", \"username\": \"bob\"}' "
     "WHERE chain = 'acme' AND seq = 1", 1),
    ("UPDATE ledger.audit_log SET event_time = event_time - interval '1 day' "
     "WHERE chain = 'acme' AND seq = 2", 2),
    ("UPDATE ledger.audit_log SET source_ip = '10.9.9.9' WHERE chain = 'acme' AND seq = 6", 6),
    ("UPDATE ledger.audit_log SET resource_namespace = 'kube-system' "
     "WHERE chain = 'acme' AND seq = 5", 5),
])
async def test_a_changed_field_is_found(admin_conn: asyncpg.Connection,
                                        chain: list[hashing.LedgerRow], sql: str,
                                        seq: int) -> None:
    await tamper(admin_conn, sql)
    await assert_broken(admin_conn, seq, Kind.CHANGED)


@pytest.mark.parametrize("seq", [1, 3, 6])
async def test_a_deleted_row_is_found(admin_conn: asyncpg.Connection,
                                      chain: list[hashing.LedgerRow], seq: int) -> None:
    await tamper(admin_conn, "DELETE FROM ledger.audit_log WHERE chain = 'acme' AND seq = $1",
                 seq)
    # The last entry deleted looks like a cut tail: the head still points past it.
    await assert_broken(admin_conn, seq, Kind.HEAD if seq == 6 else Kind.MISSING)


async def test_two_rows_with_swapped_content_are_found(admin_conn: asyncpg.Connection,
                                                       chain: list[hashing.LedgerRow]) -> None:
    await tamper(admin_conn, _SWAP_2_AND_5)
    rows = await read_chain(admin_conn, "acme")
    assert (rows[1].request_id, rows[4].request_id) == ("req-4", "req-1")
    await assert_broken(admin_conn, 2, Kind.CHANGED)


async def test_reordered_rows_are_found(admin_conn: asyncpg.Connection,
                                        chain: list[hashing.LedgerRow]) -> None:
    for sql in ("UPDATE ledger.audit_log SET seq = 1000 WHERE chain = 'acme' AND seq = 3",
                "UPDATE ledger.audit_log SET seq = 3 WHERE chain = 'acme' AND seq = 4",
                "UPDATE ledger.audit_log SET seq = 4 WHERE chain = 'acme' AND seq = 1000"):
        await tamper(admin_conn, sql)
    await assert_broken(admin_conn, 3, Kind.CHANGED)


async def test_a_cut_tail_is_found(admin_conn: asyncpg.Connection,
                                   chain: list[hashing.LedgerRow]) -> None:
    await tamper(admin_conn, "DELETE FROM ledger.audit_log WHERE chain = 'acme' AND seq >= 5")
    await assert_broken(admin_conn, 5, Kind.HEAD)


async def test_a_truncated_table_is_found(admin_conn: asyncpg.Connection,
                                          chain: list[hashing.LedgerRow]) -> None:
    await tamper(admin_conn, "TRUNCATE ledger.audit_log")
    await assert_broken_all(admin_conn, {"acme": 1, "beta": 1})


async def assert_broken_all(conn: asyncpg.Connection, expected: dict[str, int]) -> None:
    results = await verify.verify_all(conn)
    assert {r.chain: r.first_broken_seq for r in results} == expected
    assert all(r.kind == Kind.HEAD for r in results)


async def test_a_rewritten_and_rehashed_row_breaks_the_next_link(
        admin_conn: asyncpg.Connection, chain: list[hashing.LedgerRow]) -> None:
    forged = dataclasses.replace(chain[2], action="tenant.delete")
    forged = dataclasses.replace(forged, hash=forged.compute_hash())
    await tamper(admin_conn, "UPDATE ledger.audit_log SET action = $1, hash = $2 "
                             "WHERE chain = 'acme' AND seq = 3", forged.action, forged.hash)
    await assert_broken(admin_conn, 4, Kind.LINK)


async def test_a_forged_entry_beyond_the_head_is_found(admin_conn: asyncpg.Connection,
                                                       chain: list[hashing.LedgerRow]) -> None:
    extra = dataclasses.replace(chain[-1], seq=7, prev_hash=chain[-1].hash, action="forged")
    extra = dataclasses.replace(extra, hash=extra.compute_hash())
    await tamper(admin_conn, INSERT_ROW, *db_values(extra))
    await assert_broken(admin_conn, 7, Kind.HEAD, checked=7)


async def test_a_moved_head_is_found(admin_conn: asyncpg.Connection,
                                     chain: list[hashing.LedgerRow]) -> None:
    await tamper(admin_conn, "UPDATE ledger.chain_heads SET hash = $1 WHERE chain = 'acme'",
                 chain[3].hash)
    await assert_broken(admin_conn, 6, Kind.HEAD, checked=6)


async def test_a_deleted_head_is_found(admin_conn: asyncpg.Connection,
                                       chain: list[hashing.LedgerRow]) -> None:
    await tamper(admin_conn, "DELETE FROM ledger.chain_heads WHERE chain = 'acme'")
    await assert_broken(admin_conn, 1, Kind.HEAD, checked=6)


async def test_offline_verification_of_an_export_finds_the_same_break(
        admin_conn: asyncpg.Connection, chain: list[hashing.LedgerRow]) -> None:
    await tamper(admin_conn, "UPDATE ledger.audit_log SET actor = 'mallory' "
                             "WHERE chain = 'acme' AND seq = 4")
    buffer = io.StringIO()
    assert await export.export_rows(admin_conn, buffer) == 9
    results = verify.verify_export(export.read_rows(buffer.getvalue().splitlines()))
    assert [(r.chain, r.ok, r.first_broken_seq) for r in results] == [
        ("acme", False, 4), ("beta", True, None)]


def test_pure_verifier_reports_duplicates_and_foreign_rows() -> None:
    rows = [make_row(1), make_row(2)]
    assert verify.verify_rows(rows).ok
    duplicated = verify.verify_rows([*rows, rows[1]])
    assert (duplicated.first_broken_seq, duplicated.kind) == (2, Kind.ORDER)
    foreign = verify.verify_rows(rows, chain="beta")
    assert (foreign.first_broken_seq, foreign.kind) == (1, Kind.ORDER)
    assert verify.verify_rows([], chain="acme").ok


def make_row(seq: int) -> hashing.LedgerRow:
    """Rows 1..seq of a small synthetic chain, last one returned (pure, no database)."""
    previous = hashing.GENESIS_HASH
    row = None
    for n in range(1, seq + 1):
        row = hashing.LedgerRow(
            chain="acme", seq=n, event_time="2026-01-01T00:00:00.000000Z", tenant="acme",
            actor="alice", actor_kind="user", identity={}, action="a", resource_kind="Tenant",
            resource_namespace=None, resource_name="acme", changes={"n": n}, source_ip=None,
            request_id=None, component="test", prev_hash=previous, hash="")
        row = dataclasses.replace(row, hash=row.compute_hash())
        previous = row.hash
    assert row is not None
    return row
