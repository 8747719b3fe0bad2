"""Signed checkpoints catch what the chain alone cannot: a superuser's consistent rewrite."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import asyncpg
import pytest

from tenantry.ledger import append, checkpoints, export, hashing, verify
from tests.ledger.ledger_helpers import forge_chain, make_event, read_chain, tamper

pytestmark = pytest.mark.postgres

KEY = checkpoints.generate_private_key()


@pytest.fixture
async def signed(app_conn: asyncpg.Connection) -> checkpoints.Checkpoint:
    """Chains 'acme' (5 entries) and 'beta' (2), checkpointed by the app role."""
    await append.append_batch(app_conn, [make_event(i) for i in range(5)] +
                              [make_event(i, tenant="beta") for i in range(2)])
    return await checkpoints.create_checkpoint(app_conn, KEY)


async def exported(conn: asyncpg.Connection) -> list[hashing.LedgerRow]:
    buffer = io.StringIO()
    await export.export_rows(conn, buffer)
    return list(export.read_rows(buffer.getvalue().splitlines()))


async def test_a_checkpoint_signs_every_chain_head(app_conn: asyncpg.Connection,
                                                   signed: checkpoints.Checkpoint) -> None:
    heads = {h.chain: (h.seq, h.hash) for h in signed.heads}
    acme, beta = await read_chain(app_conn, "acme"), await read_chain(app_conn, "beta")
    assert heads == {"acme": (5, acme[-1].hash), "beta": (2, beta[-1].hash)}
    assert signed.signature_valid(KEY.public_key())
    assert signed.key_id == checkpoints.public_key_id(KEY.public_key())
    assert signed.id is not None
    assert await checkpoints.load_checkpoints(app_conn) == [signed]
    line = signed.to_json_line()
    assert checkpoints.Checkpoint.from_json_line(line) == signed


async def test_an_untouched_ledger_verifies_against_its_checkpoints(
        app_conn: asyncpg.Connection, signed: checkpoints.Checkpoint) -> None:
    await append.append(app_conn, make_event(10))  # appends after a checkpoint are fine
    second = await checkpoints.create_checkpoint(app_conn, KEY)
    report = await checkpoints.verify_db_against_checkpoints(
        app_conn, [signed, second], KEY.public_key())
    assert report.ok, report.describe()
    assert (report.checkpoints, report.anchors) == (2, 4)
    offline = checkpoints.verify_against_checkpoints(
        await exported(app_conn), [signed, second], KEY.public_key())
    assert offline.ok, offline.describe()


async def test_a_consistent_rewrite_of_a_whole_chain_is_caught(
        app_conn: asyncpg.Connection, admin_conn: asyncpg.Connection,
        signed: checkpoints.Checkpoint) -> None:
    original = await read_chain(admin_conn, "acme")
    rewritten = [dataclasses.replace(row, actor="bob") if row.seq == 2 else row
                 for row in original]
    await forge_chain(admin_conn, "acme", rewritten)

    # The chain alone is fooled: the superuser rehashed everything and moved the head.
    assert (await verify.verify_chain(app_conn, "acme")).ok
    report = await checkpoints.verify_db_against_checkpoints(app_conn, [signed],
                                                             KEY.public_key())
    assert not report.ok
    assert [(f.chain, f.seq) for f in report.failures] == [("acme", 5)]
    assert "rewritten" in report.failures[0].reason
    offline = checkpoints.verify_against_checkpoints(await exported(app_conn), [signed],
                                                     KEY.public_key())
    assert [(f.chain, f.seq) for f in offline.failures] == [("acme", 5)]


async def test_a_cut_tail_with_a_moved_head_is_caught(
        app_conn: asyncpg.Connection, admin_conn: asyncpg.Connection,
        signed: checkpoints.Checkpoint) -> None:
    original = await read_chain(admin_conn, "acme")
    await forge_chain(admin_conn, "acme", original[:3])
    assert (await verify.verify_chain(app_conn, "acme")).ok
    report = await checkpoints.verify_db_against_checkpoints(app_conn, [signed],
                                                             KEY.public_key())
    assert [(f.chain, f.seq) for f in report.failures] == [("acme", 5)]
    assert "missing" in report.failures[0].reason


async def test_a_deleted_chain_is_caught(app_conn: asyncpg.Connection,
                                         admin_conn: asyncpg.Connection,
                                         signed: checkpoints.Checkpoint) -> None:
    await tamper(admin_conn, "DELETE FROM ledger.audit_log WHERE chain = 'beta'")
    await tamper(admin_conn, "DELETE FROM ledger.chain_heads WHERE chain = 'beta'")
    assert [r.chain for r in await verify.verify_all(app_conn)] == ["acme"]
    report = await checkpoints.verify_db_against_checkpoints(app_conn, [signed],
                                                             KEY.public_key())
    assert [(f.chain, f.seq) for f in report.failures] == [("beta", 2)]


async def test_tampered_or_foreign_checkpoints_fail_closed(
        app_conn: asyncpg.Connection, signed: checkpoints.Checkpoint) -> None:
    lowered = dataclasses.replace(signed, heads=tuple(
        dataclasses.replace(h, seq=h.seq - 1) for h in signed.heads))
    report = await checkpoints.verify_db_against_checkpoints(app_conn, [lowered],
                                                             KEY.public_key())
    assert not report.ok
    assert report.checkpoints == 0
    assert "signature" in report.failures[0].reason

    other_key = checkpoints.generate_private_key().public_key()
    report = await checkpoints.verify_db_against_checkpoints(app_conn, [signed], other_key)
    assert not report.ok
    # Several keys (e.g. across a rotation) are accepted by key id.
    report = await checkpoints.verify_db_against_checkpoints(
        app_conn, [signed], [other_key, KEY.public_key()])
    assert report.ok


async def test_verification_can_be_limited_to_one_chain(
        app_conn: asyncpg.Connection, admin_conn: asyncpg.Connection,
        signed: checkpoints.Checkpoint) -> None:
    await forge_chain(admin_conn, "beta", (await read_chain(admin_conn, "beta"))[:1])
    only_acme = await checkpoints.verify_db_against_checkpoints(
        app_conn, [signed], KEY.public_key(), chains=["acme"])
    assert only_acme.ok
    assert [r.chain for r in only_acme.chains] == ["acme"]
    only_beta = await checkpoints.verify_db_against_checkpoints(
        app_conn, [signed], KEY.public_key(), chains=["beta"])
    assert [(f.chain, f.seq) for f in only_beta.failures] == [("beta", 2)]


def test_malformed_checkpoint_lines_are_refused() -> None:
    with pytest.raises(checkpoints.CheckpointError, match="line 2"):
        checkpoints.read_checkpoints(['{"payload": {}, "signature": ""}\n'.replace(
            "{}", json.dumps({"v": 1, "type": checkpoints.CHECKPOINT_TYPE, "created_at": "t",
                              "key_id": "k", "heads": []})), "[1]\n"])
    with pytest.raises(checkpoints.CheckpointError, match="version 1"):
        checkpoints.Checkpoint.from_parts({"v": 2, "type": "x"}, "")


def test_key_files_round_trip_and_are_never_overwritten(tmp_path: Path) -> None:
    private, public = tmp_path / "ledger.key", tmp_path / "ledger.pub"
    checkpoints.write_key_pair(KEY, private, public)
    assert private.stat().st_mode & 0o777 == 0o600
    loaded = checkpoints.load_private_key(private)
    assert checkpoints.public_key_id(loaded.public_key()) == checkpoints.public_key_id(
        checkpoints.load_public_key(public)) == checkpoints.public_key_id(KEY.public_key())
    with pytest.raises(FileExistsError):
        checkpoints.write_key_pair(checkpoints.generate_private_key(), private, public)
