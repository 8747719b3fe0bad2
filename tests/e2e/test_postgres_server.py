"""The throwaway PostgreSQL: real server, non-root, password auth, gone after stop."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import asyncpg
import pytest

from tenantry.devcluster.postgres import LocalPostgres


def _uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError("no Uid line")


async def test_serves_sql_over_loopback_with_passwords(postgres: LocalPostgres) -> None:
    connection = await asyncpg.connect(postgres.dsn())
    try:
        assert await connection.fetchval("SELECT current_database()") == "tenantry"
        assert await connection.fetchval("SHOW listen_addresses") == "127.0.0.1"
    finally:
        await connection.close()
    with pytest.raises(asyncpg.InvalidPasswordError):
        await asyncpg.connect(postgres.dsn(password="wrong"))


def test_server_runs_as_non_root(postgres: LocalPostgres) -> None:
    assert postgres._process is not None
    assert _uid_of(postgres._process.pid) != 0


def test_stop_leaves_nothing_behind() -> None:
    server = LocalPostgres()
    server.start()
    assert server._process is not None and server.workdir is not None
    pid, port, workdir = server._process.pid, server.port, server.workdir
    asyncio.run(_ping(server.dsn()))
    server.stop()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    assert not workdir.exists()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


async def _ping(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    await connection.close()
