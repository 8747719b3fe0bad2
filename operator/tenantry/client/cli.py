"""`tenantry login | logout | audit | api-keys`: the API from a terminal or a pipeline.

    tenantry login --username alice@acme.example < password-file   # or --password-file FILE
    tenantry login --oidc corp                 # in a browser (loopback redirect)
    tenantry audit list acme --limit 20 --order desc
    tenantry audit verify acme                 # exit 1 when the chain is broken
    tenantry audit tail acme                   # follow new entries (polls every 2 s)
    tenantry api-keys create acme --role viewer --name ci   # prints the key, once
    tenantry api-keys list acme --output json
    tenantry api-keys revoke acme KEY_ID
    tenantry logout

The API is `--api-url` or `$TENANTRY_API_URL` (what `tenantry dev up` exports). `login` keeps
the tokens in a 0600 file (`tokens`); every later command refreshes them silently. A pipeline
can instead pass an API key: `$TENANTRY_API_KEY` or `--api-key-file FILE` (never on the command
line, where other local users see it). `--output json` prints exactly the API's JSON (`tail`:
one entry per line), for `jq`; text output is for people. Passwords come from `--password-file`,
standard input, or a prompt; never from argv.

`audit tail` polls `GET .../audit?after=<last seq>` every `--interval` seconds (default 2): it
prints each entry once, in order, starting after the newest one (or `--after SEQ`), until
Ctrl-C or `--count N` entries.

Exit codes: 0 done; 1 refused or failed a check (not signed in, 401/403/404/409 from the API,
a broken audit chain); 2 usage, an unreachable API or any other error.

`tenantry login --oidc PROVIDER` signs in in a browser instead (`loopback`: the API redirects
the browser back to this command with a one-time code, redeemed with a PKCE verifier).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import time
import webbrowser
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tenantry.client import loopback

EXIT_OK, EXIT_REFUSED, EXIT_USAGE = 0, 1, 2
ENV_API_URL = "TENANTRY_API_URL"
ENV_API_KEY = "TENANTRY_API_KEY"
ENV_USERNAME = "TENANTRY_USERNAME"
TAIL_INTERVAL = 2.0
MAX_PAGE = 500


class UsageError(Exception):
    pass


# -- plumbing -------------------------------------------------------------------------------------

def _read_line(path: str, what: str) -> str:
    try:
        value = Path(path).read_text().removesuffix("\n").removesuffix("\r")
    except OSError as error:
        raise UsageError(f"{what} {path}: {error.strerror}") from None
    if not value:
        raise UsageError(f"{what} {path} is empty")
    return value


def _api(args: argparse.Namespace) -> Any:
    from tenantry.client import session

    url = args.api_url or os.environ.get(ENV_API_URL)
    if not url:
        raise UsageError(f"no API: pass --api-url or set {ENV_API_URL} "
                         "(e.g. http://127.0.0.1:8080)")
    key = None
    if getattr(args, "api_key_file", None):
        key = _read_line(args.api_key_file, "--api-key-file")
    elif os.environ.get(ENV_API_KEY):
        key = os.environ[ENV_API_KEY].strip()
    return session.Api(url, api_key=key)


def _run(args: argparse.Namespace, command: Callable[[Any, argparse.Namespace], int]) -> int:
    from tenantry.client import session, tokens

    try:
        with _api(args) as api:
            return command(api, args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except session.ClientError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except tokens.TokenFileError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


def _print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=True))


def _table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths,
                                                                       strict=True)).rstrip())


def _cmd(function: Callable[[Any, argparse.Namespace], int]) -> Callable[[argparse.Namespace],
                                                                          int]:
    def run(args: argparse.Namespace) -> int:
        return _run(args, function)

    return run


# -- login / logout -------------------------------------------------------------------------------

def _password(args: argparse.Namespace) -> str:
    if args.password_file:
        return _read_line(args.password_file, "--password-file")
    if sys.stdin.isatty():
        return getpass.getpass("password: ")
    line = sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    if not line:
        raise UsageError("no password: pass --password-file FILE or one line on standard input")
    return line


def _oidc_login(api: Any, args: argparse.Namespace) -> Any:
    verifier, challenge = loopback.pkce_pair()
    receiver = loopback.CodeReceiver()
    try:
        url = loopback.start_url(api.url, args.oidc, receiver.redirect_uri, challenge)
        print(f"open this address in a browser to sign in with {args.oidc}:\n  {url}",
              file=sys.stderr, flush=True)
        if not args.no_browser:
            webbrowser.open(url)
        code = receiver.wait(args.timeout)
    finally:
        receiver.close()
    if code is None:
        raise UsageError(f"no sign-in within {args.timeout:g} s")
    return api.login_with_code(code, verifier)


def _login(api: Any, args: argparse.Namespace) -> int:
    if args.oidc:
        session = _oidc_login(api, args)
    else:
        username = args.username or os.environ.get(ENV_USERNAME)
        if not username:
            raise UsageError(f"--username: required (or set {ENV_USERNAME})")
        session = api.login(username, _password(args))
    if args.output == "json":
        _print_json({"apiUrl": api.url, "user": session.user, "expiresAt": session.expires_at,
                     "tokenFile": str(api.token_file.path)})
    else:
        print(f"signed in to {api.url} as {session.user} (tokens in {api.token_file.path})")
    return EXIT_OK


def _logout(api: Any, args: argparse.Namespace) -> int:
    had = api.logout()
    if args.output == "json":
        _print_json({"apiUrl": api.url, "signedOut": had})
    else:
        print(f"signed out of {api.url}" if had else f"not signed in to {api.url}")
    return EXIT_OK


# -- audit ----------------------------------------------------------------------------------------

def _chain_path(args: argparse.Namespace) -> str:
    if args.platform == bool(args.tenant):
        raise UsageError("name a TENANT, or pass --platform for the platform chain (not both)")
    return "/v1/platform/audit" if args.platform else f"/v1/tenants/{args.tenant}/audit"


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    return {"action": args.action, "actor": args.actor}


def _entry_row(entry: dict[str, Any]) -> list[str]:
    resource = entry.get("resource") or {}
    where = "/".join(str(part) for part in (resource.get("namespace"), resource.get("name"))
                     if part)
    return [str(entry["seq"]), str(entry["time"]), str(entry["actor"]), str(entry["action"]),
            f"{resource.get('kind')} {where}".strip()]


ENTRY_HEADER = ["SEQ", "TIME", "ACTOR", "ACTION", "RESOURCE"]


def _audit_list(api: Any, args: argparse.Namespace) -> int:
    page = api.call("GET", _chain_path(args), params={
        "after": args.after, "before": args.before, "limit": args.limit, "order": args.order,
        **_filters(args)})
    if args.output == "json":
        _print_json(page)
    else:
        _table([_entry_row(entry) for entry in page["items"]], ENTRY_HEADER)
        if page.get("next") is not None:
            cursor = "--after" if args.order == "asc" else "--before"
            print(f"(more: {cursor} {page['next']})", file=sys.stderr)
    return EXIT_OK


def _audit_verify(api: Any, args: argparse.Namespace) -> int:
    result = api.call("GET", f"{_chain_path(args)}/verify",
                      params={"checkpoint": args.checkpoint})
    if args.output == "json":
        _print_json(result)
    elif result["valid"]:
        print(f"chain {result['chain']}: valid, {result['entries']} entries, head seq "
              f"{result['head']['seq']} {result['head']['hash']}")
    else:
        broken = result.get("firstBreak") or {}
        checkpoint = result.get("checkpoint") or {}
        print(f"chain {result['chain']}: BROKEN at seq {broken.get('seq')} "
              f"({broken.get('kind')}: {broken.get('reason')}); {result['entries']} entries "
              "verified before it" if broken else
              f"chain {result['chain']}: does not match checkpoint {checkpoint.get('id')}: "
              f"{'; '.join(checkpoint.get('failures') or [])}")
    return EXIT_OK if result["valid"] else EXIT_REFUSED


def follow(fetch: Callable[[int], dict[str, Any]], after: int, *, interval: float,
           sleep: Callable[[float], None] = time.sleep) -> Iterator[dict[str, Any]]:
    """Every entry after `after`, in order, each once, polling `fetch(cursor)` (a page of
    entries after `cursor`, ascending) and sleeping `interval` once caught up."""
    cursor = after
    while True:
        page = fetch(cursor)
        for entry in page["items"]:
            cursor = max(cursor, int(entry["seq"]))
            yield entry
        if page.get("next") is None:
            sleep(interval)


def _audit_tail(api: Any, args: argparse.Namespace) -> int:
    path = _chain_path(args)
    after = args.after
    if after is None:
        newest = api.call("GET", path, params={"order": "desc", "limit": 1, **_filters(args)})
        after = newest["items"][0]["seq"] if newest["items"] else 0
    entries = follow(lambda cursor: api.call("GET", path, params={
        "after": cursor, "limit": MAX_PAGE, "order": "asc", **_filters(args)}),
        after, interval=args.interval)
    for printed, entry in enumerate(entries, start=1):
        if args.output == "json":
            print(json.dumps(entry, sort_keys=True), flush=True)
        else:
            print("  ".join(_entry_row(entry)), flush=True)
        if args.count is not None and printed >= args.count:
            break
    return EXIT_OK


# -- api-keys -------------------------------------------------------------------------------------

def _keys_path(args: argparse.Namespace) -> str:
    return f"/v1/tenants/{args.tenant}/api-keys"


def _keys_create(api: Any, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"role": args.role, "name": args.name}
    if args.expires_in is not None:
        body["expiresIn"] = args.expires_in
    created = api.call("POST", _keys_path(args), json=body, ok=(201,))
    if args.output == "json":
        _print_json(created)
    else:
        # The key alone on stdout (KEY=$(tenantry api-keys create ...)); the rest on stderr.
        print(f"created API key {created['prefix']} (id {created['id']}, role "
              f"{created['role']}, expires {created['expiresAt']}); it is shown only now:",
              file=sys.stderr)
        print(created["key"])
    return EXIT_OK


def _keys_list(api: Any, args: argparse.Namespace) -> int:
    listing = api.call("GET", _keys_path(args))
    if args.output == "json":
        _print_json(listing)
        return EXIT_OK
    _table([[key["id"], key["prefix"], key["role"], key["name"], key["createdBy"],
             str(key["expiresAt"]), str(key["lastUsedAt"] or "-"),
             "revoked" if key["revokedAt"] else "live"] for key in listing["items"]],
           ["ID", "PREFIX", "ROLE", "NAME", "CREATED BY", "EXPIRES", "LAST USED", "STATE"])
    return EXIT_OK


def _keys_revoke(api: Any, args: argparse.Namespace) -> int:
    api.call("DELETE", f"{_keys_path(args)}/{args.key_id}", ok=(204,))
    if args.output == "json":
        _print_json({"id": args.key_id, "revoked": True})
    else:
        print(f"revoked API key {args.key_id}")
    return EXIT_OK


# -- parser ---------------------------------------------------------------------------------------

def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    common.add_argument("--api-url", metavar="URL",
                        help=f"the Tenantry API (default: ${ENV_API_URL})")
    common.add_argument("--output", choices=("text", "json"), default="text",
                        help="text for people, json for pipelines (default: %(default)s)")
    return common


def _with_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--api-key-file", metavar="FILE",
                        help=f"authenticate with the API key in FILE instead of the signed-in "
                             f"session (default: ${ENV_API_KEY} if set)")


def _chain_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("tenant", nargs="?", metavar="TENANT", help="the tenant's chain")
    parser.add_argument("--platform", action="store_true",
                        help="the platform chain instead (platform admins)")
    _with_key(parser)


def _filter_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--action", help="only this action, or a prefix ending in '.' (auth.)")
    parser.add_argument("--actor", help="only entries of this actor")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


def register(commands: Any) -> None:
    """Add `login`, `logout`, `audit` and `api-keys` to the `tenantry` command."""
    common = _common()

    login = commands.add_parser(
        "login", parents=[common], allow_abbrev=False, help="sign in to the Tenantry API",
        description="Sign in with a password (from --password-file, standard input or a "
                    "prompt; never argv) and keep the tokens in a 0600 file under "
                    "$XDG_CONFIG_HOME/tenantry (default ~/.config/tenantry).")
    login.add_argument("--username", help=f"login name (default: ${ENV_USERNAME})")
    login.add_argument("--password-file", metavar="FILE", help="file holding the password")
    login.add_argument("--oidc", metavar="PROVIDER",
                       help="sign in with this identity provider in a browser instead "
                            "(a loopback redirect to this command, PKCE)")
    login.add_argument("--no-browser", action="store_true",
                       help="with --oidc: only print the address to open")
    login.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS",
                       help="with --oidc: how long to wait for the browser (default: %(default)s)")
    login.set_defaults(func=_cmd(_login))

    logout = commands.add_parser(
        "logout", parents=[common], allow_abbrev=False,
        help="sign out: end the session at the API and forget its tokens")
    logout.set_defaults(func=_cmd(_logout))

    audit = commands.add_parser("audit", help="the audit ledger through the API",
                                description="Read, verify and follow a ledger chain.")
    audit_commands = audit.add_subparsers(dest="audit_command", metavar="AUDIT_COMMAND",
                                          required=True)
    listing = audit_commands.add_parser("list", parents=[common], allow_abbrev=False,
                                        help="a page of a chain's entries")
    _chain_arguments(listing)
    _filter_arguments(listing)
    listing.add_argument("--after", type=int, metavar="SEQ", help="entries after SEQ")
    listing.add_argument("--before", type=int, metavar="SEQ",
                         help="entries before SEQ (with --order desc)")
    listing.add_argument("--limit", type=_positive, default=100,
                         help=f"at most this many, up to {MAX_PAGE} (default: %(default)s)")
    listing.add_argument("--order", choices=("asc", "desc"), default="asc")
    listing.set_defaults(func=_cmd(_audit_list))

    verify = audit_commands.add_parser(
        "verify", parents=[common], allow_abbrev=False,
        help="verify a chain's hashes and links; exit 1 when broken")
    _chain_arguments(verify)
    verify.add_argument("--checkpoint", type=_positive, metavar="ID",
                        help="also check against this signed checkpoint")
    verify.set_defaults(func=_cmd(_audit_verify))

    tail = audit_commands.add_parser(
        "tail", parents=[common], allow_abbrev=False,
        help="follow new entries (polls with the `after` cursor every --interval seconds)")
    _chain_arguments(tail)
    _filter_arguments(tail)
    tail.add_argument("--after", type=int, metavar="SEQ",
                      help="start after SEQ (default: after the newest entry)")
    tail.add_argument("--interval", type=float, default=TAIL_INTERVAL, metavar="SECONDS",
                      help="poll interval when caught up (default: %(default)s)")
    tail.add_argument("--count", type=_positive, metavar="N", help="exit after N entries")
    tail.set_defaults(func=_cmd(_audit_tail))

    keys = commands.add_parser("api-keys", help="a tenant's API keys (tenant admins)",
                               description="Create, list and revoke API keys of a tenant.")
    key_commands = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND",
                                       required=True)
    create = key_commands.add_parser("create", parents=[common], allow_abbrev=False,
                                     help="create a key; it is printed once")
    create.add_argument("tenant", metavar="TENANT")
    create.add_argument("--role", required=True, choices=("viewer", "member", "admin", "owner"),
                        help="at most your own role in the tenant")
    create.add_argument("--name", default="", help="what the key is for")
    create.add_argument("--expires-in", type=_positive, metavar="SECONDS",
                        help="seconds until it expires (default: the API's, 90 days)")
    create.set_defaults(func=_cmd(_keys_create))
    list_keys = key_commands.add_parser("list", parents=[common], allow_abbrev=False,
                                        help="the tenant's keys, by prefix")
    list_keys.add_argument("tenant", metavar="TENANT")
    list_keys.set_defaults(func=_cmd(_keys_list))
    revoke = key_commands.add_parser("revoke", parents=[common], allow_abbrev=False,
                                     help="revoke a key now")
    revoke.add_argument("tenant", metavar="TENANT")
    revoke.add_argument("key_id", metavar="KEY_ID", help="the key's id (from `list`)")
    revoke.set_defaults(func=_cmd(_keys_revoke))
