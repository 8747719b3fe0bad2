"""`tenantry ledger ...`: migrate the schema, verify chains, sign checkpoints, export.

`register(subparsers)` adds the `ledger` command to the main `tenantry` parser; `main(argv)`
runs it standalone (``python -m tenantry.ledger.cli``).

The DSN comes from ``--dsn`` or the environment variable TENANTRY_LEDGER_DSN. It is never
printed with its password: messages show ``user:***@host``, and error texts are scrubbed of the
password before they are printed. Secrets that are not DSNs (the app role's password, the
signing key) are read from files or the environment, never from the command line, where any
local user could read them in the process list.

Exit codes: 0 success; 1 verification failed (a broken chain or checkpoint); 2 usage,
configuration or connection error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg
from cryptography.hazmat.primitives.asymmetric import ed25519

from tenantry.ledger import checkpoints, export, hashing, migrations, verify

ENV_DSN = "TENANTRY_LEDGER_DSN"  # the same variable the operator and webhook read
ENV_APP_PASSWORD = "TENANTRY_LEDGER_APP_PASSWORD"  # noqa: S105 - a variable name, not a secret
ENV_SIGNING_KEY = "TENANTRY_LEDGER_SIGNING_KEY_FILE"

EXIT_OK, EXIT_BROKEN, EXIT_ERROR = 0, 1, 2


class UsageError(Exception):
    """Bad or missing options; printed as `error: ...` with exit code 2."""


def safe_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ***, for messages."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def scrub(text: str, dsn: str | None) -> str:
    """`text` with the DSN's password (raw or URL-encoded) replaced by ***."""
    if not dsn:
        return text
    try:
        password = urlsplit(dsn).password
    except ValueError:
        return text.replace(dsn, "***")
    if password:
        for form in {password, unquote(password)}:
            text = text.replace(form, "***")
    return text


def _dsn(args: argparse.Namespace) -> str:
    dsn: str | None = args.dsn or os.environ.get(ENV_DSN)
    if not dsn:
        raise UsageError(f"no database: pass --dsn or set {ENV_DSN}")
    return dsn


def _chains(args: argparse.Namespace) -> list[str] | None:
    if getattr(args, "platform", False):
        return [hashing.PLATFORM_CHAIN]
    if getattr(args, "tenant", None):
        return [args.tenant]
    return None


def _run(args: argparse.Namespace,
         work: Callable[[argparse.Namespace], Coroutine[Any, Any, int]]) -> int:
    """Run an async command; turn expected failures into a scrubbed one-line error."""
    dsn = args.dsn or os.environ.get(ENV_DSN)
    try:
        return asyncio.run(work(args))
    except UsageError as error:
        print(f"error: {scrub(str(error), dsn)}", file=sys.stderr)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
            migrations.MigrationError, ValueError) as error:
        where = f" ({safe_dsn(dsn)})" if dsn else ""
        print(f"error{where}: {type(error).__name__}: {scrub(str(error), dsn)}",
              file=sys.stderr)
    return EXIT_ERROR


async def _connect(args: argparse.Namespace) -> Any:
    return await asyncpg.connect(_dsn(args))


# -- migrate -------------------------------------------------------------------------------------

def _read_secret_file(path: str) -> str:
    return Path(path).read_text().strip()


async def _migrate(args: argparse.Namespace) -> int:
    password = (_read_secret_file(args.app_password_file) if args.app_password_file
                else os.environ.get(ENV_APP_PASSWORD))
    try:
        report = await migrations.migrate(_dsn(args), app_role=args.app_role,
                                          app_password=password, owner_role=args.owner_role)
    except ValueError as error:  # an unusable password
        raise UsageError(str(error)) from None
    applied = ", ".join(map(str, report.applied)) or "none (already current)"
    print(f"ledger schema at version {report.version}; applied: {applied}; app role "
          f"{args.app_role} {'password set' if password else 'password unchanged'}")
    return EXIT_OK


# -- verify --------------------------------------------------------------------------------------

def _open_lines(path: str) -> Iterator[str]:
    with Path(path).open(encoding="utf-8") as handle:
        yield from handle


async def _verify(args: argparse.Namespace) -> int:
    chains = _chains(args)
    key = None
    cps: list[checkpoints.Checkpoint] = []
    if args.checkpoints or args.public_key:
        if not (args.checkpoints and args.public_key):
            raise UsageError("--checkpoints and --public-key go together")
        key = checkpoints.load_public_key(Path(args.public_key))
        cps = checkpoints.read_checkpoints(_open_lines(args.checkpoints))

    if args.rows:
        return _verify_offline(args.rows, chains, cps, key)

    conn = await _connect(args)
    try:
        if key is not None:
            report = await checkpoints.verify_db_against_checkpoints(conn, cps, key,
                                                                     chains=chains)
            return _print_report(report)
        if chains is None:
            results = await verify.verify_all(conn)
        else:
            results = [await verify.verify_chain(conn, chain) for chain in chains]
    finally:
        await conn.close()
    return _print_results(results)


def _verify_offline(path: str, chains: list[str] | None, cps: list[checkpoints.Checkpoint],
                    key: ed25519.Ed25519PublicKey | None) -> int:
    rows = export.read_rows(_open_lines(path))
    if chains is not None:
        wanted = set(chains)
        rows = (row for row in rows if row.chain in wanted)
    try:
        if key is not None:
            return _print_report(checkpoints.verify_against_checkpoints(rows, cps, key,
                                                                        chains=chains))
        return _print_results(verify.verify_export(rows))
    except hashing.HashingError as error:
        # A malformed export is a failed verification, not a usage error.
        print(f"BROKEN: {error}")
        return EXIT_BROKEN


def _print_results(results: Sequence[verify.VerifyResult]) -> int:
    for result in results:
        print(result.describe())
    if not results:
        print("no chains")
    return EXIT_OK if all(r.ok for r in results) else EXIT_BROKEN


def _print_report(report: checkpoints.CheckpointReport) -> int:
    for result in report.chains:
        print(result.describe())
    for line in report.describe():
        print(line)
    return EXIT_OK if report.ok else EXIT_BROKEN


# -- checkpoint, export, keygen ------------------------------------------------------------------

def _output(path: str | None, *, append: bool = False) -> TextIO:
    if path is None or path == "-":
        return sys.stdout
    return Path(path).open("a" if append else "w", encoding="utf-8")


def _previous_checkpoints(args: argparse.Namespace) -> list[checkpoints.Checkpoint]:
    """The exported checkpoints to check before signing: --checkpoints, and the --output file
    the new one is appended to (the CronJob's and an operator's usual trail), when it exists."""
    found: list[checkpoints.Checkpoint] = []
    for path in (args.checkpoints, args.output):
        if path and path != "-" and (path == args.checkpoints or Path(path).exists()):
            found += checkpoints.read_checkpoints(_open_lines(path))
    return found


async def _checkpoint(args: argparse.Namespace) -> int:
    key_path = args.signing_key or os.environ.get(ENV_SIGNING_KEY)
    if not key_path:
        raise UsageError(f"no signing key: pass --signing-key or set {ENV_SIGNING_KEY}")
    key = checkpoints.load_private_key(Path(key_path))
    extra_keys = [checkpoints.load_public_key(Path(p)) for p in args.public_key or ()]
    exported = _previous_checkpoints(args)
    conn = await _connect(args)
    try:
        # Stored copies count too, but only those under a key we can check: a checkpoint of a
        # retired key is verified from an exported file with its --public-key.
        known = {checkpoints.public_key_id(k) for k in (key.public_key(), *extra_keys)}
        seen = {c.signature for c in exported}
        previous = exported + [c for c in await checkpoints.load_checkpoints(conn)
                               if c.key_id in known and c.signature not in seen]
        try:
            checkpoint = await checkpoints.create_checkpoint(conn, key, previous=previous,
                                                             public_keys=extra_keys)
        except checkpoints.UnverifiedLedgerError as error:
            for result in error.report.chains:
                if not result.ok:
                    print(result.describe(), file=sys.stderr)
            for line in error.report.describe():
                print(line, file=sys.stderr)
            print("error: the ledger does not verify; refusing to sign a checkpoint over it "
                  "(nothing was stored)", file=sys.stderr)
            return EXIT_BROKEN
    finally:
        await conn.close()
    out = _output(args.output, append=True)
    try:
        out.write(checkpoint.to_json_line() + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    print(f"checkpoint {checkpoint.id} at {checkpoint.created_at}: {len(checkpoint.heads)} chain "
          f"heads signed with key {checkpoint.key_id}, after verifying every chain and "
          f"{len(previous)} earlier checkpoint(s)", file=sys.stderr)
    return EXIT_OK


async def _export(args: argparse.Namespace) -> int:
    conn = await _connect(args)
    out = _output(args.output)
    try:
        if args.checkpoints:
            stored = await checkpoints.load_checkpoints(conn)
            for checkpoint in stored:
                out.write(checkpoint.to_json_line() + "\n")
            count, what = len(stored), "checkpoints"
        else:
            count, what = await export.export_rows(conn, out, _chains(args)), "entries"
    finally:
        await conn.close()
        if out is not sys.stdout:
            out.close()
    print(f"exported {count} {what}", file=sys.stderr)
    return EXIT_OK


def _cmd_keygen(args: argparse.Namespace) -> int:
    key = checkpoints.generate_private_key()
    try:
        checkpoints.write_key_pair(key, Path(args.private_key), Path(args.public_key))
    except FileExistsError:
        print(f"error: {args.private_key} exists; refusing to overwrite a signing key",
              file=sys.stderr)
        return EXIT_ERROR
    print(f"wrote {args.private_key} (keep it outside the database host) and {args.public_key}; "
          f"key id {checkpoints.public_key_id(key.public_key())}")
    return EXIT_OK


# -- parser --------------------------------------------------------------------------------------

def _add_dsn(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dsn", help=f"PostgreSQL DSN (default: ${ENV_DSN})")


def _add_chain_choice(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--tenant", help="only this tenant's chain")
    group.add_argument("--platform", action="store_true", help="only the platform chain")


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `ledger` and its subcommands to the `tenantry` command's subparsers."""
    ledger: argparse.ArgumentParser = subparsers.add_parser(
        "ledger", help="audit ledger: migrate, verify, checkpoint, export",
        description="The append-only, hash-chained audit ledger in PostgreSQL.")
    commands = ledger.add_subparsers(dest="ledger_command", metavar="LEDGER_COMMAND",
                                     required=True)

    migrate = commands.add_parser(
        "migrate", help="create or update the ledger schema and its roles",
        description="Apply pending schema migrations (idempotent, safe to run concurrently) "
                    "with an administrative DSN; create or update the owner role and the "
                    f"application role (password from --app-password-file or "
                    f"${ENV_APP_PASSWORD}).")
    _add_dsn(migrate)
    migrate.add_argument("--app-role", default=migrations.DEFAULT_APP_ROLE,
                         help="role the application connects as (default: %(default)s)")
    migrate.add_argument("--owner-role", default=migrations.DEFAULT_OWNER_ROLE,
                         help="NOLOGIN role owning the tables (default: %(default)s)")
    migrate.add_argument("--app-password-file", help="file holding the app role's password")
    migrate.set_defaults(func=lambda args: _run(args, _migrate))

    check = commands.add_parser(
        "verify", help="walk hash chains; exit 1 at the first broken entry",
        description="Verify every chain (or one) in the database, or offline in an export "
                    "(--rows). With --checkpoints and --public-key, also check that every "
                    "signed chain head is still there, unchanged.")
    _add_dsn(check)
    _add_chain_choice(check)
    check.add_argument("--rows", help="verify this JSON-lines export instead of the database")
    check.add_argument("--checkpoints", help="JSON-lines file of exported signed checkpoints")
    check.add_argument("--public-key", help="PEM file of the checkpoint signing public key")
    check.set_defaults(func=lambda args: _run(args, _verify))

    checkpoint = commands.add_parser(
        "checkpoint", help="verify, then sign every chain head and store the checkpoint",
        description="Verify every chain and every earlier checkpoint (from --checkpoints, the "
                    "--output file if it exists, and those stored under this key), then sign "
                    "each chain's head (seq, hash) with Ed25519, store the checkpoint in the "
                    "database and append it as a JSON line to --output (default stdout). Keep "
                    "that output outside the database. Exit 1, signing nothing, if anything "
                    "fails to verify.")
    _add_dsn(checkpoint)
    checkpoint.add_argument("--signing-key",
                            help=f"PEM Ed25519 private key (default: ${ENV_SIGNING_KEY})")
    checkpoint.add_argument("--output", help="append the checkpoint line to this file")
    checkpoint.add_argument("--checkpoints",
                            help="JSON-lines file of earlier exported checkpoints to check first")
    checkpoint.add_argument("--public-key", action="append",
                            help="PEM public key of earlier checkpoints signed with another "
                                 "(retired) key; repeatable")
    checkpoint.set_defaults(func=lambda args: _run(args, _checkpoint))

    dump = commands.add_parser(
        "export", help="write ledger entries (or checkpoints) as JSON lines",
        description="Write entries, ordered by chain and seq, as canonical JSON lines that "
                    "`tenantry ledger verify --rows` (or any RFC 8785 + SHA-256 "
                    "implementation) can verify offline.")
    _add_dsn(dump)
    _add_chain_choice(dump)
    dump.add_argument("--checkpoints", action="store_true",
                      help="export the stored checkpoints instead of entries")
    dump.add_argument("--output", help="file to write (default stdout)")
    dump.set_defaults(func=lambda args: _run(args, _export))

    keygen = commands.add_parser("keygen", help="create an Ed25519 checkpoint signing key pair")
    keygen.add_argument("--private-key", required=True, help="PEM file to create (mode 0600)")
    keygen.add_argument("--public-key", required=True, help="PEM file to write")
    keygen.set_defaults(func=_cmd_keygen, dsn=None)
    return ledger


def main(argv: Sequence[str] | None = None) -> int:
    """Run `ledger ...` standalone (the `tenantry` command wires `register` instead)."""
    parser = argparse.ArgumentParser(prog="tenantry")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
