"""One scan of every component's log for secrets, at the end of the e2e run.

Each process fixture (the operator, the webhook, the API) registers the log file it writes
(`watch_log`); tests register the secret values they use (`remember`: passwords, Credential
plaintexts, master keys). The last test of the session (`tests/e2e/test_log_secrets.py`) reads
every registered log and looks for:

- every remembered value, as is and in the base64 forms Secret data and JSON would hold it;
- anything shaped like a credential whoever issued it: a signed JWT (access, participant and
  ServiceAccount tokens), a refresh token, an API key, a PEM private key. A pattern catches a
  token no test thought to register.

Pure apart from reading the files; `scan` is unit-tested against planted secrets.
"""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tenantry.api import apikeys
from tenantry.api.tokens import rfc9700

# Shapes of credentials. A JWT needs its three parts (a payload alone grants nothing, but a
# signed token does); the others are Tenantry's own token formats, and any PEM private key.
PATTERNS: Mapping[str, re.Pattern[str]] = {
    "signed JWT": re.compile(
        r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}"),
    "refresh token": re.compile(re.escape(rfc9700.PREFIX) + r"[A-Za-z0-9_-]{40,}"),
    "API key": re.compile(re.escape(apikeys.PREFIX) + r"[0-9A-Za-z]{38}(?![0-9A-Za-z])"),
    "PEM private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
}
# A PEM private key base64-encoded, as Secret data and merge patches carry it: any long base64
# run is decoded and looked into.
BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{40,}={0,2}")
BASE64_PEM = "base64 PEM private key"
MIN_VALUE = 8  # shorter values would match by chance


@dataclasses.dataclass(frozen=True)
class Log:
    component: str
    path: Path


@dataclasses.dataclass(frozen=True)
class Hit:
    component: str
    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.component} log {self.path}:{self.line}: {self.what}"


LOGS: list[Log] = []
SECRETS: dict[str, str] = {}  # value -> what it is (never printed: only what it is)
EXPECTED: set[str] = set()  # components this run starts (from the collected tests)


def watch_log(component: str, path: Path) -> None:
    """A component's log file, scanned at the end of the run."""
    if Log(component, path) not in LOGS:
        LOGS.append(Log(component, path))


def remember(value: str | bytes, what: str, into: dict[str, str] | None = None) -> None:
    """A secret value that must never appear in any component's log (in `SECRETS`, or
    `into`)."""
    registry = SECRETS if into is None else into
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    if len(text) >= MIN_VALUE:
        registry.setdefault(text, what)
    if isinstance(value, bytes):
        # Raw key bytes show up only encoded.
        for form in _encodings(value):
            registry.setdefault(form, what)


def _encodings(raw: bytes) -> set[str]:
    return {base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("="),
            raw.hex()}


def forms(value: str) -> set[str]:
    """How a value could show up in a log line: as is, and base64 as Secret data holds it."""
    return {value, *_encodings(value.encode())}


def scan_text(text: str, secrets: Mapping[str, str]) -> list[tuple[int, str]]:
    """(line number, what was found) for every secret or credential shape in `text`."""
    found: list[tuple[int, str]] = []
    needles = {form: what for value, what in secrets.items() for form in forms(value)}
    for number, line in enumerate(text.splitlines(), start=1):
        for name, pattern in PATTERNS.items():
            if pattern.search(line):
                found.append((number, name))
        if any(_holds_private_key(run) for run in BASE64_RUN.findall(line)):
            found.append((number, BASE64_PEM))
        found.extend((number, what) for needle, what in needles.items() if needle in line)
    return found


def _holds_private_key(run: str) -> bool:
    try:
        decoded = base64.b64decode(run + "=" * (-len(run) % 4))
    except ValueError:
        return False
    return b"PRIVATE KEY-----" in decoded


def scan(logs: Iterable[Log], secrets: Mapping[str, str]) -> list[Hit]:
    hits: list[Hit] = []
    for log in logs:
        text = log.path.read_text(errors="replace") if log.path.exists() else ""
        hits.extend(Hit(log.component, log.path, number, what)
                    for number, what in scan_text(text, secrets))
    return hits


def components(logs: Sequence[Log]) -> set[str]:
    return {log.component for log in logs}
