"""`tenantry ledger ...` end to end on a real database, run through `ledger.cli.main`."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path

import asyncpg
import pytest

from tenantry.ledger import append, cli
from tests.ledger.ledger_helpers import Database, forge_chain, make_event, read_chain, tamper

pytestmark = pytest.mark.postgres


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def _append(dsn: str, events: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await append.append_batch(conn, [make_event(i) for i in range(events)] +
                                  [make_event(i, tenant=None) for i in range(2)])
    finally:
        await conn.close()


async def _tamper(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await tamper(conn, sql)
    finally:
        await conn.close()


def test_migrate_via_cli_is_idempotent_and_keeps_secrets_out_of_output(
        empty_db: Database, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    password_file = tmp_path / "app-password"
    password_file.write_text(empty_db.app_password + "\n")
    monkeypatch.setenv(cli.ENV_DSN, empty_db.admin_dsn)
    args = ("ledger", "migrate", "--app-role", empty_db.app_role, "--owner-role",
            empty_db.owner_role, "--app-password-file", str(password_file))
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "applied: 1" in out
    code, out, _ = run(capsys, *args)
    assert (code, "already current" in out) == (0, True)
    for secret in (empty_db.app_password, empty_db.server.password):
        assert secret not in out + err
    asyncio.run(_append(empty_db.app_dsn, 1))  # the password from the file works


def test_verify_checkpoint_export_and_offline_verify(
        ledger_db: Database, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.ENV_DSN, ledger_db.app_dsn)
    asyncio.run(_append(ledger_db.app_dsn, 5))
    private, public = tmp_path / "ledger.key", tmp_path / "ledger.pub"
    checkpoints_file, rows_file = tmp_path / "checkpoints.jsonl", tmp_path / "rows.jsonl"

    code, out, _ = run(capsys, "ledger", "keygen", "--private-key", str(private),
                       "--public-key", str(public))
    assert code == 0 and "key id" in out
    code, _, err = run(capsys, "ledger", "checkpoint", "--signing-key", str(private),
                       "--output", str(checkpoints_file))
    assert code == 0, err
    assert "2 chain heads signed" in err
    code, out, _ = run(capsys, "ledger", "verify")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("chain _platform: ok, 2 entries, head 2 ")
    assert lines[1].startswith("chain acme: ok, 5 entries, head 5 ")
    code, _, err = run(capsys, "ledger", "export", "--output", str(rows_file))
    assert (code, err.strip()) == (0, "exported 7 entries")
    assert len(rows_file.read_text().splitlines()) == 7
    code, out, _ = run(capsys, "ledger", "verify", "--rows", str(rows_file), "--checkpoints",
                       str(checkpoints_file), "--public-key", str(public))
    assert code == 0, out
    assert "checkpoints: ok, 1 checkpoints, 2 signed heads match" in out

    # The superuser changes an entry: every form of verification now fails, naming seq 3.
    asyncio.run(_tamper(ledger_db.admin_dsn, "UPDATE ledger.audit_log SET actor = 'mallory' "
                                              "WHERE chain = 'acme' AND seq = 3"))
    code, out, _ = run(capsys, "ledger", "verify", "--tenant", "acme")
    assert code == 1
    assert "chain acme: BROKEN at seq 3 (changed)" in out
    code, out, _ = run(capsys, "ledger", "verify", "--platform")
    assert code == 0
    code, out, _ = run(capsys, "ledger", "verify", "--checkpoints", str(checkpoints_file),
                       "--public-key", str(public))
    assert code == 1
    # Entry 3's stored hash was left alone, so the signed head (entry 5) still matches: the
    # chain walk is what fails here.
    assert "checkpoints: FAILED: chain acme seq 3" in out
    code, _, _ = run(capsys, "ledger", "export", "--tenant", "acme", "--output", str(rows_file))
    assert code == 0
    code, out, _ = run(capsys, "ledger", "verify", "--rows", str(rows_file))
    assert code == 1
    assert "BROKEN at seq 3" in out


def test_export_of_checkpoints_and_malformed_exports(
        ledger_db: Database, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.ENV_DSN, ledger_db.app_dsn)
    asyncio.run(_append(ledger_db.app_dsn, 2))
    private, public = tmp_path / "k", tmp_path / "k.pub"
    run(capsys, "ledger", "keygen", "--private-key", str(private), "--public-key", str(public))
    monkeypatch.setenv(cli.ENV_SIGNING_KEY, str(private))
    assert run(capsys, "ledger", "checkpoint")[0] == 0
    code, out, _ = run(capsys, "ledger", "export", "--checkpoints")
    assert code == 0
    assert json.loads(out.splitlines()[0])["payload"]["type"] == "tenantry.ledger.checkpoint"

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"chain": "acme"}\n')
    code, out, _ = run(capsys, "ledger", "verify", "--rows", str(broken))
    assert code == 1
    assert "export line 1" in out


def test_usage_and_connection_errors_never_show_the_password(
        ledger_db: Database, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cli.ENV_DSN, raising=False)
    code, _, err = run(capsys, "ledger", "verify")
    assert code == 2 and cli.ENV_DSN in err

    wrong = ledger_db.server.dsn(database=ledger_db.name, user=ledger_db.app_role,
                                 password="Wr0ng-Pa55word")
    code, out, err = run(capsys, "ledger", "verify", "--dsn", wrong)
    assert code == 2
    assert "Wr0ng-Pa55word" not in out + err
    assert "***@127.0.0.1" in err

    code, _, err = run(capsys, "ledger", "verify", "--checkpoints", "x")
    assert code == 2 and "--public-key" in err


@pytest.mark.parametrize(("dsn", "shown"), [
    ("postgresql://app:s%2Fecret@db:5432/tenantry", "postgresql://app:***@db:5432/tenantry"),
    ("postgresql://app@db/tenantry", "postgresql://app@db/tenantry"),
])
def test_safe_dsn_masks_the_password(dsn: str, shown: str) -> None:
    assert cli.safe_dsn(dsn) == shown


def test_scrub_removes_raw_and_encoded_passwords() -> None:
    dsn = "postgresql://app:s%2Fecret@db/tenantry"
    assert cli.scrub("failed for s/ecret and s%2Fecret", dsn) == "failed for *** and ***"


async def _count_checkpoints(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        count: int = await conn.fetchval("SELECT count(*) FROM ledger.checkpoints")
    finally:
        await conn.close()
    return count


async def _forge(dsn: str, chain: str) -> None:
    """A superuser's consistent rewrite of a chain (entry 2's actor), head moved to match."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await read_chain(conn, chain)
        await forge_chain(conn, chain, [dataclasses.replace(r, actor="mallory")
                                        if r.seq == 2 else r for r in rows])
    finally:
        await conn.close()


def test_checkpoint_refuses_to_sign_a_broken_chain(
        ledger_db: Database, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.ENV_DSN, ledger_db.app_dsn)
    asyncio.run(_append(ledger_db.app_dsn, 4))
    private, public = tmp_path / "k", tmp_path / "k.pub"
    run(capsys, "ledger", "keygen", "--private-key", str(private), "--public-key", str(public))
    asyncio.run(_tamper(ledger_db.admin_dsn, "UPDATE ledger.audit_log SET actor = 'mallory' "
                                              "WHERE chain = 'acme' AND seq = 3"))
    out_file = tmp_path / "checkpoints.jsonl"
    code, out, err = run(capsys, "ledger", "checkpoint", "--signing-key", str(private),
                         "--output", str(out_file))
    assert code == 1
    assert "chain acme: BROKEN at seq 3 (changed)" in err
    assert "refusing to sign" in err
    # Nothing signed, nothing stored, nothing appended to the trail.
    assert out == "" and not out_file.exists()
    assert asyncio.run(_count_checkpoints(ledger_db.admin_dsn)) == 0


def test_checkpoint_refuses_a_rewrite_that_only_a_previous_checkpoint_reveals(
        ledger_db: Database, capsys: pytest.CaptureFixture[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cli.ENV_DSN, ledger_db.app_dsn)
    asyncio.run(_append(ledger_db.app_dsn, 4))
    private, public = tmp_path / "k", tmp_path / "k.pub"
    run(capsys, "ledger", "keygen", "--private-key", str(private), "--public-key", str(public))
    trail = tmp_path / "trail.jsonl"
    code, _, err = run(capsys, "ledger", "checkpoint", "--signing-key", str(private),
                       "--output", str(trail))
    assert code == 0, err
    assert "after verifying every chain and 0 earlier checkpoint(s)" in err

    # The superuser rewrites chain acme consistently: the chain walk alone is fooled ...
    asyncio.run(_forge(ledger_db.admin_dsn, "acme"))
    assert run(capsys, "ledger", "verify", "--tenant", "acme")[0] == 0
    # ... the stored checkpoint is not: no new checkpoint would launder the rewrite.
    code, out, err = run(capsys, "ledger", "checkpoint", "--signing-key", str(private))
    assert code == 1, err
    assert "checkpoints: FAILED: chain acme seq 4" in err and "rewritten" in err
    assert out == ""
    assert asyncio.run(_count_checkpoints(ledger_db.admin_dsn)) == 1

    # The superuser also removes the stored checkpoint: the exported trail still catches it.
    asyncio.run(_tamper(ledger_db.admin_dsn, "DELETE FROM ledger.checkpoints"))
    code, _, err = run(capsys, "ledger", "checkpoint", "--signing-key", str(private),
                       "--output", str(trail))
    assert code == 1, err
    assert "chain acme seq 4" in err
    assert len(trail.read_text().splitlines()) == 1
    code, _, err = run(capsys, "ledger", "checkpoint", "--signing-key", str(private),
                       "--checkpoints", str(trail))
    assert code == 1 and "chain acme seq 4" in err
    assert asyncio.run(_count_checkpoints(ledger_db.admin_dsn)) == 0
