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
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tenantry import logs
from tenantry.api import tokenreview
from tenantry.ledger import cli as ledger_cli
from tenantry.ledger import migrations

ENV_DSN = "TENANTRY_API_DSN"
EXIT_OK, EXIT_ERROR = 0, 2


def configure_logging(verbose: bool, log_format: str = logs.DEFAULT_FORMAT) -> None:
    """Tenantry's one logging setup (`tenantry.logs`): JSON lines, redacted, a request's
    `fields` (the access log's) as members, exceptions by their type only."""
    logs.configure("api", log_format, verbose=verbose, exception_detail=False)


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host.strip("[]"), int(port)


def _token_lifetime(text: str) -> int:
    """--max-token-lifetime: whole seconds, at least TokenRequest's minimum of 600."""
    if not text.isdigit() or int(text) < 600:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected whole seconds, at least 600 (the shortest token TokenRequest "
            "issues)")
    return int(text)


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
    from tenantry.api import clientip, deps, passwords, ratelimit, signing
    from tenantry.api.oauth import providers as oauth_providers
    from tenantry.api.tokens import rfc7517, rfc9068, rfc9700
    from tenantry.ledger import checkpoints
    from tenantry.ledger import recorder as ledger_recorder
    from tenantry.ledger.spool import Spool

    if bool(args.signing_key_file) == bool(args.signing_keyring):
        raise ledger_cli.UsageError("pass exactly one of --signing-key-file FILE and "
                                    "--signing-keyring DIR")
    if args.signing_keyring and args.previous_key_file:
        raise ledger_cli.UsageError("--previous-key-file goes with --signing-key-file: with "
                                    "--signing-keyring every version in it verifies")
    if args.signing_keyring:
        try:
            keys = signing.load(Path(args.signing_keyring)).key_set()
        except signing.SigningKeyringError as error:
            raise ledger_cli.UsageError(f"--signing-keyring {args.signing_keyring}: "
                                        f"{error}") from None
    else:
        keys = rfc7517.load_key_set(Path(args.signing_key_file),
                                    [Path(p) for p in args.previous_key_file or ()])
    grace = rfc9700.check_grace(datetime.timedelta(seconds=args.refresh_grace))
    oauth = oauth_providers.load(Path(args.oauth_config)) if args.oauth_config else None
    # Last: every other mistake in the command line is reported before a missing ledger.
    try:
        ledger_dsn = ledger_recorder.ledger_dsn(args.ledger_dsn_file, disabled=args.no_ledger)
    except ValueError as error:
        raise ledger_cli.UsageError(str(error)) from None
    spool = Path(args.ledger_spool)
    if ledger_dsn is not None:
        Spool(spool)  # refuse to start on a spool directory that cannot be used
    return deps.Settings(
        keys=keys,
        policy=rfc9068.Policy(issuer=args.issuer, audience=args.audience, leeway=args.leeway),
        refresh_grace_seconds=grace.total_seconds(),
        auth_limit=ratelimit.Limit.parse(args.auth_rate_limit),
        trusted_proxies=clientip.parse_networks(args.trusted_proxy or ()),
        max_body=args.max_body_bytes,
        platform_admins=frozenset(passwords.normalise_username(name)
                                  for name in args.platform_admin or ()),
        platform_admin_groups=frozenset(args.platform_admin_group or ()),
        tenant_limit=ratelimit.Limit.parse(args.tenant_rate_limit),
        oauth=oauth,
        kubeconfig=Path(args.kubeconfig) if args.kubeconfig else None,
        ledger_dsn=ledger_dsn, ledger_spool=spool,
        checkpoint_keys=tuple(checkpoints.load_public_key(Path(path))
                              for path in args.checkpoint_public_key or ()),
        hook_secrets_dir=Path(args.hook_secrets_dir) if args.hook_secrets_dir else None,
        tenantry_namespace=args.tenantry_namespace,
        keyring=Path(args.keyring) if args.keyring else None,
        exchange_limit=ratelimit.Limit.parse(args.exchange_rate_limit),
        token_review_cache=not args.no_token_review_cache,
        max_token_lifetime=args.max_token_lifetime,
        signing_keyring=Path(args.signing_keyring) if args.signing_keyring else None,
        replica=args.replica or "")


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
        host, port = parse_listen(args.listen)
        if bool(args.tls_cert) != bool(args.tls_key):
            raise ledger_cli.UsageError("--tls-cert and --tls-key go together")
        settings = _settings(args)
        metrics_address = parse_listen(args.metrics_listen) if args.metrics_listen else None
        asyncio.run(_preflight(dsn))
        if metrics_address is not None:
            from tenantry.api import metrics

            metrics.serve(*metrics_address)
    except (ledger_cli.UsageError, ValueError, OSError, migrations.MigrationError,
            asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        return _fail(error, dsn)
    configure_logging(args.verbose, args.log_format)
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
    if args.secret:
        import yaml

        print(yaml.safe_dump(rfc7517.signing_keyring_secret(args.namespace, key),
                             sort_keys=False), end="")
        print(f"# kid {rfc7517.thumbprint(key.public_key())}", file=sys.stderr)
        return EXIT_OK
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
    run.add_argument("--signing-key-file", metavar="FILE",
                     help="PEM Ed25519 key that signs access tokens (`tenantry api keygen`)")
    run.add_argument("--previous-key-file", metavar="FILE", action="append",
                     help="a previous signing key (PEM public or private) that still "
                          "verifies; repeatable; keep it at least 15 min + skew after a switch")
    run.add_argument("--signing-keyring", metavar="DIR",
                     help="instead of --signing-key-file: the mounted Secret "
                          "tenantry-api-signing-keys (`tenantry api keygen --secret`), every "
                          "version published in JWKS, the one its `signing` names signing; "
                          "re-read when it changes (ApiSigningKeys rotation)")
    run.add_argument("--replica", metavar="NAME",
                     help="this replica's name in its identity Lease tenantry-api-NAME "
                          "(default: $POD_NAME, else host name and process id)")
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
    run.add_argument("--platform-admin-group", action="append", metavar="GROUP",
                     help="identity-provider group (with its provider's groupsPrefix) whose "
                          "members are platform admins; repeatable")
    run.add_argument("--tenant-rate-limit", default="600/min", metavar="N/UNIT",
                     help="requests per tenant to /v1/tenants/{tenant}/... "
                          "(default: %(default)s)")
    run.add_argument("--kubeconfig", metavar="FILE",
                     help="where Tenants (and so every member's role) are read from "
                          "(default: the in-cluster ServiceAccount, else ~/.kube/config)")
    run.add_argument("--ledger-dsn-file", metavar="FILE",
                     help="file holding the audit ledger's PostgreSQL DSN (its app role): "
                          "every auth event is recorded (default: $TENANTRY_LEDGER_DSN)")
    run.add_argument("--ledger-spool", default="/var/lib/tenantry/api-spool", metavar="DIR",
                     help="durable queue of auth events while the ledger is unreachable "
                          "(default: %(default)s)")
    run.add_argument("--no-ledger", action="store_true",
                     help="record no auth events (explicit opt-out; not for production)")
    run.add_argument("--keyring", metavar="PATH",
                     default=os.environ.get("TENANTRY_KEYRING_FILE") or None,
                     help="the master keyring (file or mounted Secret directory, the "
                          "operator's) that credential exchanges decrypt with; re-read when it "
                          "changes (default: $TENANTRY_KEYRING_FILE)")
    run.add_argument("--tenantry-namespace",
                     default=os.environ.get("TENANTRY_NAMESPACE") or "tenantry-system",
                     help="Tenantry's own namespace: only its ServiceAccounts may use "
                          "platform-scoped Credentials (default: %(default)s)")
    run.add_argument("--exchange-rate-limit", default="600/min", metavar="N/UNIT",
                     help="credential exchanges per ServiceAccount (default: %(default)s)")
    run.add_argument("--max-token-lifetime", type=_token_lifetime,
                     default=tokenreview.MAX_LIFETIME, metavar="SECONDS",
                     help="refuse credential exchanges with ServiceAccount tokens that live "
                          "longer (exp - iat; default: %(default)s, a day)")
    run.add_argument("--no-token-review-cache", action="store_true",
                     help="send a TokenReview for every exchange (benchmarks; the default "
                          "caches verdicts for at most a minute and never past the token's "
                          "expiry)")
    run.add_argument("--metrics-listen", metavar="HOST:PORT",
                     help="serve Prometheus /metrics on this address, apart from the API's "
                          "port (default: off; manifests use 0.0.0.0:9090)")
    run.add_argument("--checkpoint-public-key", action="append", metavar="FILE",
                     help="Ed25519 public key (PEM) of `tenantry ledger checkpoint`, so "
                          "/audit/verify?checkpoint=ID can check signed checkpoints; repeatable")
    run.add_argument("--hook-secrets-dir", metavar="DIR",
                     help="directory of one file per tenant name, each that tenant's secret "
                          "for POST /v1/hooks/rotate/{tenant} (HMAC-SHA256, at least 32 "
                          "bytes); a tenant without a file has no hook (default: none)")
    run.add_argument("--oauth-config", metavar="FILE",
                     help="YAML/JSON file of external identity providers (OpenID Connect, "
                          "Google preset) and the API's public URL; client secrets are read "
                          "from the files it names (see tenantry.api.oauth.providers)")
    run.add_argument("--verbose", action="store_true", help="debug logging")
    logs.add_argument(run)
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
    target = keygen.add_mutually_exclusive_group(required=True)
    target.add_argument("--output", help="PEM file to create (mode 0600)")
    target.add_argument("--secret", action="store_true",
                        help="print Secret tenantry-api-signing-keys (the key as version v1, "
                             "signing) for `kubectl apply -f-` and --signing-keyring")
    keygen.add_argument("--namespace", default=os.environ.get("TENANTRY_NAMESPACE")
                        or "tenantry-system", help="the Secret's namespace (default: "
                                                   "%(default)s)")
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
