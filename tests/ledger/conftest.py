"""Ledger fixtures: a fresh database (and fresh roles) per test, on the session's PostgreSQL.

Roles are cluster-wide in PostgreSQL, so each test gets its own owner and app role names too;
tests never see each other's databases, roles or chains.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tenantry.devcluster.postgres import LocalPostgres
from tests.ledger.ledger_helpers import Database


@pytest.fixture
async def empty_db(postgres: LocalPostgres) -> AsyncIterator[Database]:
    """A fresh, empty database (not migrated) with unique role names; dropped afterwards."""
    suffix = uuid.uuid4().hex[:12]
    db = Database(server=postgres, name=f"ledger_{suffix}", owner_role=f"owner_{suffix}",
                  app_role=f"app_{suffix}", app_password=secrets.token_urlsafe(18))
    admin = await asyncpg.connect(postgres.dsn(database="postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{db.name}"')
    finally:
        await admin.close()
    yield db
    admin = await asyncpg.connect(postgres.dsn(database="postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
        for role in (db.app_role, db.owner_role):
            await admin.execute(f'DROP ROLE IF EXISTS "{role}"')
    finally:
        await admin.close()


@pytest.fixture
async def ledger_db(empty_db: Database) -> Database:
    """A fresh database with the ledger schema and its roles in place."""
    await empty_db.migrate()
    return empty_db


@pytest.fixture
async def app_conn(ledger_db: Database) -> AsyncIterator[asyncpg.Connection]:
    """Connected as the application role."""
    conn = await asyncpg.connect(ledger_db.app_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def admin_conn(ledger_db: Database) -> AsyncIterator[asyncpg.Connection]:
    """Connected as the superuser, to the test's database."""
    conn = await asyncpg.connect(ledger_db.admin_dsn)
    yield conn
    await conn.close()
