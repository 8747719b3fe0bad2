"""`tenantry api ...` (run the API, add a password user, make a signing key) and `tenantry db
migrate` (every component's schema: the ledger's and the API's, one runner, one role each).

Secrets never come from the command line, where any local user reads them in the process
list: the DSN from `--dsn-file` (or $TENANTRY_API_DSN), passwords from a file or standard input,
keys from files. Errors are one line, the DSN's password scrubbed.

Server timeouts (the seeds: read 15 s / write 15 s / idle 60 s): idle keep-alive connections
are closed after 60 s (uvicorn's `timeout_keep_alive`); a request body must arrive within 15 s
and each response write must be taken within 15 s (`middleware.Hardening`). uvicorn has no
timeout for the request *head*: a client trickling headers is bounded only by the 16 KiB
header limit, so put a proxy with a header timeout in front of it on untrusted networks.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tenantry.ledger import cli as ledger_cli
from tenantry.ledger import migrations

ENV_DSN = "TENANTRY_API_DSN"
EXIT_OK, EXIT_ERROR = 0, 2


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a record's `fields`."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname.lower(), "logger": record.name,
            "message": record.getMessage()}
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            data.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            data["exception"] = record.exc_info[0].__name__
        return json.dumps(data, separators=(",", ":"), default=str)


def configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("asyncio", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def read_secret(path: str, what: str) -> str:
    """A one-line secret file's content, without its trailing newline."""
    try:
        text = Path(path).read_text()
    except OSError as error:
        raise ledger_cli.UsageError(f"{what} {path}: {error.strerror}") from None
    value = text.removesuffix("\n").removesuffix("\r")
    if not value:
        raise ledger_cli.UsageError(f"{what} {path} is empty")
    return value


def _dsn(args: argparse.Namespace) -> str:
    if args.dsn_file:
        return read_secret(args.dsn_file, "--dsn-file")
    dsn = os.environ.get(ENV_DSN)
    if not dsn:
        raise ledger_cli.UsageError(f"no database: pass --dsn-file or set {ENV_DSN}")
    return dsn


def _fail(error: Exception, dsn: str | None) -> int:
    where = f" ({ledger_cli.safe_dsn(dsn)})" if dsn else ""
    name = "" if isinstance(error, ledger_cli.UsageError) else f"{type(error).__name__}: "
    print(f"error{where}: {name}{ledger_cli.scrub(str(error), dsn)}", file=sys.stderr)
    return EXIT_ERROR


# -- api run -------------------------------------------------------------------------------------

def _settings(args: argparse.Namespace) -> Any:
    from tenantry.api import clientip, deps, ratelimit
    from tenantry.api.oauth import providers as oauth_providers
    from tenantry.api.tokens import rfc7517, rfc9068, rfc9700

    keys = rfc7517.load_key_set(Path(args.signing_key_file),
                                [Path(p) for p in args.previous_key_file or ()])
    grace = rfc9700.check_grace(datetime.timedelta(seconds=args.refresh_grace))
    return deps.Settings(
        keys=keys,
        policy=rfc9068.Policy(issuer=args.issuer, audience=args.audience, leeway=args.leeway),
        refresh_grace_seconds=grace.total_seconds(),
        auth_limit=ratelimit.Limit.parse(args.auth_rate_limit),
        trusted_proxies=clientip.parse_networks(args.trusted_proxy or ()),
        max_body=args.max_body_bytes,
        platform_admins=frozenset(args.platform_admin or ()),
        oauth=oauth_providers.load(Path(args.oauth_config)) if args.oauth_config else None)


async def _preflight(dsn: str) -> None:
    """Fail before serving, in one line, when the database is unreachable or not migrated."""
    import asyncpg

    from tenantry.api import store

    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        await store.require_schema(conn)
    finally:
        await conn.close()


def _cmd_run(args: argparse.Namespace) -> int:
    import asyncpg

    dsn = None
    try:
        dsn = _dsn(args)
        settings = _settings(args)
        host, port = parse_listen(args.listen)
        if bool(args.tls_cert) != bool(args.tls_key):
            raise ledger_cli.UsageError("--tls-cert and --tls-key go together")
        asyncio.run(_preflight(dsn))
    except (ledger_cli.UsageError, ValueError, OSError, migrations.MigrationError,
            asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return _fail(error, dsn)
    configure_logging(args.verbose)
    import uvicorn

    from tenantry.api import app

    config = uvicorn.Config(
        app.create_app(settings, dsn), host=host, port=port, http="h11", loop="asyncio",
        lifespan="on", log_config=None, access_log=False, server_header=False,
        proxy_headers=False, timeout_keep_alive=60, timeout_graceful_shutdown=10,
        h11_max_incomplete_event_size=16 * 1024,
        ssl_certfile=args.tls_cert, ssl_keyfile=args.tls_key)
    server = uvicorn.Server(config)
    try:
        server.run()
    except SystemExit:  # uvicorn exits (code 3) when the lifespan start-up fails
        return EXIT_ERROR
    return EXIT_OK if server.started else EXIT_ERROR


# -- api create-user -----------------------------------------------------------------------------

async def _create_user(dsn: str, username: str, password: str, replace: bool) -> int:
    import asyncpg

    from tenantry.api import passwords, store

    name = passwords.normalise_username(username)
    if not name or len(name) > 254 or any(c.isspace() for c in name):
        raise ledger_cli.UsageError("--username: 1-254 characters, no spaces")
    hashed = passwords.Passwords().hash(password)
    conn = await asyncpg.connect(dsn)
    try:
        await store.require_schema(conn)
        try:
            user_id, created = await store.upsert_password_user(conn, name, hashed,
                                                                replace=replace)
        except asyncpg.UniqueViolationError:
            raise ledger_cli.UsageError(
                f"user {name} exists; pass --replace to set its password") from None
    finally:
        await conn.close()
    print(f"{'created' if created else 'updated'} password user {name} (id {user_id})")
    return EXIT_OK


def _cmd_create_user(args: argparse.Namespace) -> int:
    import asyncpg

    from tenantry.api import passwords

    dsn = None
    try:
        dsn = _dsn(args)
        if args.password_file:
            password = read_secret(args.password_file, "--password-file")
        else:
            password = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
        return asyncio.run(_create_user(dsn, args.username, password, args.replace))
    except (ledger_cli.UsageError, passwords.WeakPassword, migrations.MigrationError,
            OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return _fail(error, dsn)


# -- api keygen ----------------------------------------------------------------------------------

def _cmd_keygen(args: argparse.Namespace) -> int:
    from tenantry.api.tokens import rfc7517

    key = rfc7517.generate()
    try:
        rfc7517.write_private_key(key, Path(args.output))
    except FileExistsError:
        print(f"error: {args.output} exists; refusing to overwrite a signing key",
              file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {args.output} (Ed25519, mode 0600); kid {rfc7517.thumbprint(key.public_key())}")
    return EXIT_OK


# -- db migrate ----------------------------------------------------------------------------------

def components() -> tuple[migrations.Component, ...]:
    """Every component with a schema, in migration order."""
    from tenantry.api import schema

    return (migrations.LEDGER, schema.COMPONENT)


async def _migrate_all(dsn: str, args: argparse.Namespace) -> int:
    for component in components():
        option = getattr(args, f"{component.name}_app_password_file")
        password = read_secret(option, f"--{component.name}-app-password-file") if option \
            else None
        try:
            report = await migrations.migrate(
                dsn, component=component,
                app_role=getattr(args, f"{component.name}_app_role"),
                owner_role=getattr(args, f"{component.name}_owner_role"),
                app_password=password)
        except ValueError as error:  # an unusable password
            raise ledger_cli.UsageError(f"{component.name}: {error}") from None
        applied = ", ".join(map(str, report.applied)) or "none (already current)"
        print(f"{component.name} schema at version {report.version}; applied: {applied}; app "
              f"role {getattr(args, f'{component.name}_app_role') or component.default_app_role}"
              f" {'password set' if password else 'password unchanged'}")
    return EXIT_OK


def _cmd_db_migrate(args: argparse.Namespace) -> int:
    import asyncpg

    dsn = None
    try:
        dsn = (read_secret(args.dsn_file, "--dsn-file") if args.dsn_file
               else args.dsn or os.environ.get(ledger_cli.ENV_DSN))
        if not dsn:
            raise ledger_cli.UsageError("no database: pass --dsn-file (or --dsn, or set "
                                        f"{ledger_cli.ENV_DSN}) with an administrative DSN")
        return asyncio.run(_migrate_all(dsn, args))
    except (ledger_cli.UsageError, migrations.MigrationError, OSError, asyncpg.PostgresError,
            asyncpg.InterfaceError) as error:
        return _fail(error, dsn)


# -- parser --------------------------------------------------------------------------------------

def register(subparsers: Any) -> None:
    """Add `api` and `db` to the `tenantry` command's subparsers."""
    # allow_abbrev=False: `--password x` must not be taken for `--password-file x`.
    api = subparsers.add_parser("api", help="the API pod: identity, sessions, tokens",
                                description="The API pod (auth, tokens, rate limits).",
                                allow_abbrev=False)
    commands = api.add_subparsers(dest="api_command", metavar="API_COMMAND", required=True)

    run = commands.add_parser(
        "run", allow_abbrev=False,
        help="serve the API (plain HTTP behind TLS termination, or --tls-*)",
        description="Serve the API until stopped. Refuses to start unless `tenantry db "
                    "migrate` brought the API's schema to this version.")
    run.add_argument("--dsn-file", metavar="FILE",
                     help=f"file holding the API role's PostgreSQL DSN (default: ${ENV_DSN})")
    run.add_argument("--signing-key-file", metavar="FILE", required=True,
                     help="PEM Ed25519 key that signs access tokens (`tenantry api keygen`)")
    run.add_argument("--previous-key-file", metavar="FILE", action="append",
                     help="a previous signing key (PEM public or private) that still "
                          "verifies; repeatable; keep it at least 15 min + skew after a switch")
    run.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                     help="address to serve on (default: %(default)s)")
    run.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this certificate chain")
    run.add_argument("--tls-key", metavar="FILE", help="... and this private key")
    run.add_argument("--issuer", default="tenantry-api",
                     help="access tokens' iss (default: %(default)s)")
    run.add_argument("--audience", default="tenantry-api",
                     help="access tokens' aud (default: %(default)s)")
    run.add_argument("--leeway", type=int, default=30, metavar="SECONDS",
                     help="clock skew tolerated, 0-60 (default: %(default)s)")
    run.add_argument("--refresh-grace", type=float, default=10.0, metavar="SECONDS",
                     help="a just-used refresh token may be retried once within this, 0-60 "
                          "(default: %(default)s)")
    run.add_argument("--auth-rate-limit", default="10/min", metavar="N/UNIT",
                     help="login and refresh requests per client address "
                          "(default: %(default)s)")
    run.add_argument("--trusted-proxy", action="append", metavar="CIDR",
                     help="believe X-Forwarded-For only from these peers; repeatable")
    run.add_argument("--max-body-bytes", type=int, default=1024 * 1024,
                     help="request body limit (default: %(default)s)")
    run.add_argument("--platform-admin", action="append", metavar="USER",
                     help="login name with the platform-admin role; repeatable")
    run.add_argument("--oauth-config", metavar="FILE",
                     help="YAML/JSON file of external identity providers (OpenID Connect, "
                          "Google preset) and the API's public URL; client secrets are read "
                          "from the files it names (see tenantry.api.oauth.providers)")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    run.set_defaults(func=_cmd_run)

    user = commands.add_parser(
        "create-user", allow_abbrev=False,
        help="add a password user (password from stdin or a file)",
        description="Add a password user, Argon2id-hashed. The password is read from "
                    "--password-file or the first line of standard input, never from argv.")
    user.add_argument("--dsn-file", metavar="FILE",
                      help=f"file holding the API role's DSN (default: ${ENV_DSN})")
    user.add_argument("--username", required=True, help="login name (e.g. an e-mail address)")
    user.add_argument("--password-file", metavar="FILE", help="file holding the password")
    user.add_argument("--replace", action="store_true",
                      help="set the password of an existing user instead of refusing")
    user.set_defaults(func=_cmd_create_user)

    keygen = commands.add_parser("keygen", help="create an Ed25519 access-token signing key")
    keygen.add_argument("--output", required=True, help="PEM file to create (mode 0600)")
    keygen.set_defaults(func=_cmd_keygen)

    db = subparsers.add_parser("db", help="database schema of every component",
                               description="PostgreSQL schemas of the ledger and the API.")
    db_commands = db.add_subparsers(dest="db_command", metavar="DB_COMMAND", required=True)
    migrate = db_commands.add_parser(
        "migrate", help="create or update every component's schema and roles",
        description="Apply pending migrations of the audit ledger and the API (idempotent, "
                    "safe to run concurrently) with an administrative DSN. Each component "
                    "has its own owner role and app role with exactly its grants. "
                    "`tenantry ledger migrate` still migrates the ledger alone.")
    migrate.add_argument("--dsn-file", metavar="FILE", help="file holding the admin DSN")
    migrate.add_argument("--dsn", help=f"admin DSN (default: ${ledger_cli.ENV_DSN}); prefer "
                                       "--dsn-file, argv is visible to local users")
    for component in components():
        migrate.add_argument(f"--{component.name}-app-role",
                             help=f"{component.name} app role (default: "
                                  f"{component.default_app_role})")
        migrate.add_argument(f"--{component.name}-owner-role",
                             help=f"{component.name} owner role (default: "
                                  f"{component.default_owner_role})")
        migrate.add_argument(f"--{component.name}-app-password-file", metavar="FILE",
                             help=f"file holding the {component.name} app role's password")
    migrate.set_defaults(func=_cmd_db_migrate)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tenantry")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
