"""`tenantry credentials fetch NAMESPACE/NAME --dir DIR`: a pod's Credential, as files.

Run it as an init container (fetch once, exit) or as a sidecar (`--watch`: fetch again every
`--interval` seconds and swap the files when the values changed, e.g. after a rotation, so new
values reach the running pod without a restart). It reads the pod's projected ServiceAccount
token (audience `tenantry-api`) from `--token-file` at every fetch (the kubelet rotates it),
exchanges it at the API (`POST /v1/credentials/exchange`) and writes one 0400 file per field
(`workload.files`). It never prints a value.

Exit codes, for a shell or a pod's restart policy:
  0  the files are written (once; or, with --watch, when stopped by SIGTERM/SIGINT)
  1  refused: the token is not accepted, or this ServiceAccount may not use the Credential,
     or it does not exist (retrying will not help)
  2  usage: bad arguments, unreadable token file
  3  unavailable: the API could not be reached or answered 5xx/409 after the retries
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx2

from tenantry import logs
from tenantry.workload import files

log = logging.getLogger("tenantry.workload")

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
DEFAULT_TOKEN_FILE = "/var/run/secrets/tenantry/token"  # noqa: S105 - a path
ENV_API_URL = "TENANTRY_API_URL"
RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0, 8.0)


class Refused(Exception):
    """The API refused, for a reason retrying will not change."""


class Unavailable(Exception):
    """The API could not answer now."""


@dataclasses.dataclass(frozen=True)
class Fetched:
    values: dict[str, bytes] = dataclasses.field(repr=False)
    key_id: str
    generation: int


def parse_answer(status: int, body: Any) -> Fetched:
    """The exchange's answer (pure): values as bytes, or the refusal."""
    detail = body.get("detail") if isinstance(body, dict) else None
    if status in (401, 403, 404):
        raise Refused(f"HTTP {status}: {detail or 'refused'}")
    if status != 200 or not isinstance(body, dict):
        raise Unavailable(f"HTTP {status}: {detail or 'unexpected answer'}")
    data, encoded = body.get("data") or {}, set(body.get("base64Fields") or ())
    values = {field: (base64.b64decode(value) if field in encoded else str(value).encode())
              for field, value in data.items()}
    return Fetched(values=values, key_id=str(body.get("keyId")),
                   generation=int(body.get("generation") or 0))


def fetch_once(http: httpx2.Client, token_file: Path, namespace: str, name: str,
               field: str | None) -> Fetched:
    try:
        token = token_file.read_text().strip()
    except OSError as error:
        raise Unavailable(f"token file {token_file}: {error.strerror}") from None
    body: dict[str, str] = {"namespace": namespace, "name": name}
    if field:
        body["field"] = field
    try:
        response = http.post("/v1/credentials/exchange", json=body,
                             headers={"Authorization": f"Bearer {token}"})
    except httpx2.HTTPError as error:
        raise Unavailable(f"{type(error).__name__} reaching the API") from None
    try:
        answer = response.json()
    except ValueError:
        answer = None
    return parse_answer(response.status_code, answer)


def fetch_with_retries(http: httpx2.Client, args: argparse.Namespace, namespace: str,
                       name: str, stop: threading.Event) -> Fetched:
    delays = list(RETRY_DELAYS[:args.retries])
    while True:
        try:
            return fetch_once(http, Path(args.token_file), namespace, name, args.field)
        except Unavailable as unavailable:
            if not delays or stop.is_set():
                raise
            delay = delays.pop(0)
            log.warning("credential %s/%s: %s; retrying in %.1fs", namespace, name,
                        unavailable, delay)
            stop.wait(delay)


def run(args: argparse.Namespace) -> int:
    namespace, _, name = args.credential.partition("/")
    if not namespace or not name or "/" in name:
        print("error: CREDENTIAL is NAMESPACE/NAME", file=sys.stderr)
        return EXIT_USAGE
    url = args.api_url or os.environ.get(ENV_API_URL)
    if not url:
        print(f"error: no API: pass --api-url or set ${ENV_API_URL}", file=sys.stderr)
        return EXIT_USAGE
    if not Path(args.token_file).is_file():
        print(f"error: --token-file {args.token_file}: no such file (mount a projected "
              "ServiceAccount token with audience tenantry-api there)", file=sys.stderr)
        return EXIT_USAGE
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    verify: str | bool = args.ca_file or True
    directory = Path(args.dir)
    with httpx2.Client(base_url=url, timeout=args.timeout, verify=verify) as http:
        seen: tuple[str, int] | None = None
        while True:
            try:
                fetched = fetch_with_retries(http, args, namespace, name, stop)
            except Refused as refused:
                print(f"error: credential {namespace}/{name}: {refused}", file=sys.stderr)
                return EXIT_REFUSED
            except Unavailable as unavailable:
                if not args.watch or seen is None:
                    print(f"error: credential {namespace}/{name}: {unavailable}",
                          file=sys.stderr)
                    return EXIT_UNAVAILABLE
                log.warning("credential %s/%s: %s; keeping the files of generation %d",
                            namespace, name, unavailable, seen[1])
            else:
                version = (fetched.key_id, fetched.generation)
                if version != seen:
                    written = files.write_values(directory, fetched.values,
                                                 key_id=fetched.key_id,
                                                 generation=fetched.generation,
                                                 only=args.field is not None)
                    log.info("credential %s/%s: wrote %s (key %s, generation %d)", namespace,
                             name, ", ".join(written), fetched.key_id, fetched.generation)
                    seen = version
            if not args.watch or stop.wait(args.interval):
                return EXIT_OK


def register(subparsers: Any) -> None:
    credentials = subparsers.add_parser(
        "credentials", help="use Credentials from a workload (fetch them as files)",
        description="The workload side of Credentials.")
    commands = credentials.add_subparsers(dest="credentials_command", metavar="COMMAND",
                                          required=True)
    fetch = commands.add_parser(
        "fetch", help="exchange the pod's ServiceAccount token for a Credential, as files",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    fetch.add_argument("credential", metavar="NAMESPACE/NAME")
    fetch.add_argument("--dir", required=True,
                       help="directory for the files (an emptyDir with medium: Memory)")
    fetch.add_argument("--field", help="fetch one field only (default: all)")
    fetch.add_argument("--api-url", help=f"the API's URL (default: ${ENV_API_URL})")
    fetch.add_argument("--token-file", default=DEFAULT_TOKEN_FILE,
                       help="projected ServiceAccount token, audience tenantry-api "
                            "(default: %(default)s)")
    fetch.add_argument("--ca-file", help="CA bundle that signs the API's certificate")
    fetch.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    fetch.add_argument("--retries", type=int, default=5, choices=range(0, 6),
                       help="retries while the API is unavailable (default: %(default)s)")
    fetch.add_argument("--watch", action="store_true",
                       help="sidecar mode: keep fetching and swap the files when the values "
                            "change (after a rotation)")
    fetch.add_argument("--interval", type=float, default=60.0,
                       help="seconds between fetches with --watch (default: %(default)s)")
    logs.add_argument(fetch)
    fetch.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    logs.configure("credentials-fetch", args.log_format)
    return run(args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tenantry")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
