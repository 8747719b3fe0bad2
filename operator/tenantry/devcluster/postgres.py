"""A throwaway PostgreSQL server on loopback, from the distribution's binaries.

PostgreSQL refuses to run as root, so when we are root the server runs as the `postgres` system
user (created by Debian's package) or `nobody`. Password authentication (SCRAM) is on for TCP,
as in a real deployment; the superuser's password is random per server and only in the DSN.
The Unix socket lives in the server's private 0700 directory, so `trust` there reaches only the
server's own account (and root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from tenantry.devcluster.process import ManagedProcess, free_port, wait_until

SUPERUSER = "postgres"
DATABASE = "tenantry"


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bindir() -> Path:
    """The newest /usr/lib/postgresql/<major>/bin, or the directory of `postgres` on PATH."""
    configured = os.environ.get("TENANTRY_PG_BINDIR")
    if configured:
        return Path(configured)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"),
        key=lambda p: int(re.sub(r"\D", "", p.parent.parent.name) or 0),
    )
    if candidates:
        return candidates[-1].parent
    on_path = shutil.which("postgres")
    if on_path:
        return Path(on_path).resolve().parent
    raise PostgresNotFound(
        "PostgreSQL server binaries not found. Install them (Debian/Ubuntu: "
        "`apt-get install postgresql`), set TENANTRY_PG_BINDIR to their directory, "
        "or give a DSN of an existing server instead."
    )


def _server_account() -> pwd.struct_passwd | None:
    """The OS account the server runs as: None means 'as we are' (we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a 'postgres' nor a 'nobody' user exists")


class LocalPostgres:
    """initdb + postgres in a temporary directory; `dsn` is ready once `start()` returns."""

    def __init__(self, *, durable: bool = False) -> None:
        self._durable = durable
        self.bindir = find_bindir()
        self.password = secrets.token_urlsafe(24)
        self.port = 0
        self.workdir: Path | None = None
        self._process: ManagedProcess | None = None

    def __enter__(self) -> LocalPostgres:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def dsn(self, database: str = DATABASE, user: str = SUPERUSER,
            password: str | None = None) -> str:
        secret = self.password if password is None else password
        return (f"postgresql://{quote(user)}:{quote(secret, safe='')}"
                f"@127.0.0.1:{self.port}/{quote(database)}")

    def start(self) -> None:
        account = _server_account()
        uid = account.pw_uid if account else None
        gid = account.pw_gid if account else None
        self.workdir = Path(tempfile.mkdtemp(prefix="tenantry-pg-"))
        data = self.workdir / "data"
        pwfile = self.workdir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if account is not None:
            os.chown(self.workdir, account.pw_uid, account.pw_gid)
            os.chown(pwfile, account.pw_uid, account.pw_gid)
        pwfile.chmod(0o600)
        try:
            self._run_as([
                str(self.bindir / "initdb"), "-D", str(data), "-U", SUPERUSER,
                f"--pwfile={pwfile}", "--auth-host=scram-sha-256", "--auth-local=trust",
                "--encoding=UTF8", "--locale=C", "--no-instructions",
            ], uid, gid)
            pwfile.unlink()
            self.port = free_port()
            settings = [
                "-c", "listen_addresses=127.0.0.1",
                "-c", f"unix_socket_directories={self.workdir}",
                "-c", "max_connections=200",
            ]
            if not self._durable:
                # Throwaway data: trade crash safety for speed.
                settings += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                             "-c", "full_page_writes=off"]
            self._process = ManagedProcess(
                "postgres",
                [str(self.bindir / "postgres"), "-D", str(data), "-p", str(self.port), *settings],
                self.workdir / "postgres.log", uid=uid, gid=gid, cwd=self.workdir,
            )
            wait_until(self._accepting, timeout=30, what="PostgreSQL to accept connections",
                       process=self._process)
            self._psql(f"CREATE DATABASE {DATABASE}", uid, gid)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._process is not None:
            self._process.stop()
            self._process = None
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    # -- internals -------------------------------------------------------------------------------

    def _run_as(self, argv: list[str], uid: int | None, gid: int | None) -> None:
        result = subprocess.run(
            argv, capture_output=True, text=True, check=False, cwd=self.workdir,
            user=uid, group=gid, extra_groups=[] if uid is not None else None,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed: {result.stderr.strip()}")

    def _accepting(self) -> bool:
        result = subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
            check=False,
        )
        return result.returncode == 0

    def _psql(self, sql: str, uid: int | None, gid: int | None) -> None:
        assert self.workdir is not None
        self._run_as([
            str(self.bindir / "psql"), "-h", str(self.workdir), "-p", str(self.port),
            "-U", SUPERUSER, "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql,
        ], uid, gid)
