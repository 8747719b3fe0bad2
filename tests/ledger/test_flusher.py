"""The spool flusher on a real PostgreSQL: a refused event is dead-lettered, not a roadblock, and
no exception stops the flusher."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from tenantry.ledger import append
from tenantry.ledger import recorder as audit
from tenantry.ledger.spool import Spool
from tests.ledger.ledger_helpers import Database, make_event, read_chain

pytestmark = pytest.mark.postgres


async def _wait_for(condition: Callable[[], bool]) -> None:
    for _ in range(200):  # 10 s
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


async def test_an_event_postgresql_refuses_is_dead_lettered_and_the_rest_delivered(
        ledger_db: Database, admin_conn: asyncpg.Connection, app_conn: asyncpg.Connection,
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # A real constraint violation (SQLSTATE 23514) for one event, as a schema change or a value
    # the database will never take would cause: retrying it can never succeed.
    await admin_conn.execute("ALTER TABLE ledger.audit_log ADD CONSTRAINT no_poison "
                             "CHECK (action <> 'tenant.poison')")
    spool = Spool(tmp_path / "spool")
    spool.put(make_event(0))
    spool.put(make_event(1, action="tenant.poison",
                         changes={"password": "hunter2-do-not-log", "n": 1}))
    for n in (2, 3):
        spool.put(make_event(n))
    recorder = audit.Recorder(spool, ledger_db.app_dsn, "system:serviceaccount:t:op")
    try:
        with caplog.at_level(logging.ERROR, logger=audit.__name__):
            assert await recorder.flush() == 3
            # Once set aside, it no longer blocks later events either.
            spool.put(make_event(4))
            assert await recorder.flush() == 1
    finally:
        await recorder.close()

    rows = await read_chain(app_conn, "acme")
    assert [row.request_id for row in rows] == ["req-0", "req-2", "req-3", "req-4"]
    assert spool.count() == 0
    assert recorder.dead_lettered == 1 and spool.dead_letter_count() == 1
    (dead,) = spool.dead_letters.glob("*.event.json")
    assert json.loads(dead.read_bytes())["action"] == "tenant.poison"
    (note,) = spool.dead_letters.glob("*.reason.json")
    assert json.loads(note.read_text()) == {
        "action": "tenant.poison", "chain": "acme", "constraint": "no_poison",
        "error": "CheckViolationError", "sqlstate": "23514"}
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    message = errors[0].getMessage()
    assert "REFUSED BY THE LEDGER" in message and "23514" in message
    assert "tenant.poison" in message and str(dead) in message
    assert "hunter2" not in caplog.text


async def test_an_unexpected_exception_does_not_stop_the_flusher(
        ledger_db: Database, app_conn: asyncpg.Connection, tmp_path: Path,
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit, "RETRY_DELAYS", (0.05,))
    real_append_batch = append.append_batch
    calls = 0

    async def flaky(pool: object, events: object) -> object:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise RuntimeError("a bug in the flusher")
        return await real_append_batch(pool, events)  # type: ignore[arg-type]

    monkeypatch.setattr(append, "append_batch", flaky)
    spool = Spool(tmp_path / "spool")
    recorder = audit.Recorder(spool, ledger_db.app_dsn, "system:serviceaccount:t:op")
    with caplog.at_level(logging.ERROR, logger=audit.__name__):
        recorder.start()
        try:
            await recorder.record(make_event(0))
            await _wait_for(lambda: recorder.flushed == 1)
            assert recorder._task is not None and not recorder._task.done()
            # Still running: later events are delivered too.
            await recorder.record(make_event(1))
            await _wait_for(lambda: recorder.flushed == 2)
        finally:
            await recorder.close()
    assert recorder.flush_errors == 2
    assert [r.request_id for r in await read_chain(app_conn, "acme")] == ["req-0", "req-1"]
    failures = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info is not None and r.exc_info[0] is RuntimeError for r in failures)
