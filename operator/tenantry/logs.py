"""One logging setup for every Tenantry process: JSON lines in a cluster, text for a person.

`tenantry operator run`, `tenantry webhook run` and `tenantry api run` call `configure` with
their component name and `--log-format` (default `json`: one object per line, what log
collectors parse; `text` for a terminal, which `tenantry dev up` uses). Every record carries
`time`, `level`, `component`, `logger` and `message`, and, when known, the request or
reconcile id, tenant, object and outcome:

- from the context (`bind` / `context`, contextvars: each asyncio task has its own, so one
  request's or reconciliation's fields never show up in another's lines),
- from kopf's per-object loggers (their `k8s_ref` becomes `object`, and `tenant` for a Tenant),
- from a call's `extra={...}` (any of the field names, or `fields={...}` as the API logs).

Why redact here as well as at the source: logs leave the process (collectors, support bundles)
and cannot be recalled. Messages and fields pass through the ledger's redaction
(`ledger.redact`: secret-looking keys, PEM private keys, JWTs, Authorization values, URL
passwords) plus patterns only free text has (`password=...`, `Bearer ...` inside a sentence).
Exceptions are logged as their type, redacted message and stack frames (file, line, function),
never local variables (the API: their type only). The client libraries' debug logs print whole
response bodies, Secret values among them, so they are held at INFO even with --verbose.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import re
import sys
import traceback
import types
import uuid
from collections.abc import Iterator, Mapping
from typing import Any, TextIO

from tenantry.ledger import redact

FORMATS = ("json", "text")
DEFAULT_FORMAT = "json"

# The fields a record may carry beyond the always-present ones, in the order text shows them.
CONTEXT_FIELDS = ("request_id", "reconcile_id", "tenant", "object", "outcome")
MAX_MESSAGE = 4096
MAX_FRAMES = 12

# Their debug logs print request and response bodies (Secrets' data among them).
_BODY_LOGGERS = ("kubernetes_asyncio.client.rest", "kubernetes.client.rest",
                 "urllib3.connectionpool", "httpcore", "httpx", "asyncpg")
_QUIET_LOGGERS = ("asyncio", "uvicorn.access")
_ACCESS_LOGGERS = ("aiohttp.access",)  # only with --verbose

_context: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar(
    "tenantry_log_context", default=types.MappingProxyType({}))

# Free-text forms of a secret that the ledger's value patterns (whole values) do not cover.
_INLINE_ASSIGNMENT = re.compile(
    r"(?P<key>(?<![A-Za-z0-9])(?:password|passwd|pwd|secret|token|api[_-]?key"
    r"|client[_-]?secret|private[_-]?key|authorization)(?![A-Za-z0-9])[\"']?\s{0,3}[=:]"
    r"\s{0,3})"
    r"(?P<value>\"[^\"]{0,512}\"|'[^']{0,512}'|[^\s,;&\"']{1,512}+)",
    re.IGNORECASE)
_INLINE_SCHEME = re.compile(r"(?P<scheme>\b(?:bearer|basic)\s{1,3})[A-Za-z0-9._~+/=-]{8,}+",
                            re.IGNORECASE)
_INLINE_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]++\.eyJ[A-Za-z0-9_-]++"
                         r"\.[A-Za-z0-9_-]*+")
_INLINE_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----.*?"
                         r"(?:-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----|\Z)", re.DOTALL)


# -- context -------------------------------------------------------------------------------------

def new_id() -> str:
    """A short random id for one request or reconciliation."""
    return uuid.uuid4().hex[:16]


def bind(**fields: str | None) -> None:
    """Add fields to every record of the current task (and the tasks it starts) from now on;
    None leaves a field as it was."""
    _context.set({**_context.get(), **{k: str(v) for k, v in fields.items() if v is not None}})


@contextlib.contextmanager
def context(**fields: str | None) -> Iterator[None]:
    """Like `bind`, for the duration of a `with` block only."""
    token = _context.set({**_context.get(),
                          **{k: str(v) for k, v in fields.items() if v is not None}})
    try:
        yield
    finally:
        _context.reset(token)


def object_name(kind: str, name: str, namespace: str | None = None) -> str:
    """How records name an object: `Kind/name` or `Kind/namespace/name`."""
    return f"{kind}/{namespace}/{name}" if namespace else f"{kind}/{name}"


def bind_reconcile(kind: str, name: str, namespace: str | None = None, *,
                   tenant: str | None = None) -> str:
    """Start one reconciliation's fields in the current task: a new reconcile id (returned),
    the object, and its tenant when known."""
    reconcile_id = new_id()
    _context.set({**{k: v for k, v in _context.get().items() if k not in CONTEXT_FIELDS},
                  "reconcile_id": reconcile_id, "object": object_name(kind, name, namespace),
                  **({"tenant": tenant} if tenant else {})})
    return reconcile_id


def current() -> dict[str, str]:
    return dict(_context.get())


# -- redaction -----------------------------------------------------------------------------------

def redact_text(text: str) -> str:
    """Free text with whatever looks like a secret replaced (pure)."""
    text = _INLINE_PEM.sub(redact.REDACTED, text)
    text = _INLINE_JWT.sub(redact.REDACTED, text)
    text = _INLINE_SCHEME.sub(lambda m: m.group("scheme") + redact.REDACTED, text)
    text = _INLINE_ASSIGNMENT.sub(lambda m: m.group("key") + redact.REDACTED, text)
    return redact.redact_string(text)


def redact_value(value: Any) -> Any:
    """A JSON-like value with secret-looking members (by name) and strings replaced (pure)."""
    if isinstance(value, Mapping):
        return {key: redact.REDACTED if isinstance(key, str) and redact.is_secret_key(key)
                else redact_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(item) for item in value]
    if isinstance(value, str):
        return redact_text(value)
    if value is None or isinstance(value, bool | int | float):
        return value
    return redact_text(str(value))


# -- records -------------------------------------------------------------------------------------

# kopf's line at the end of each handler run, and the outcome it means.
_KOPF_HANDLER_RESULT = re.compile(r"^Handler '[^']*' (succeeded|failed temporarily|failed "
                                  r"permanently|failed with an exception)")
_KOPF_OUTCOMES = {"succeeded": "succeeded", "failed temporarily": "retrying",
                  "failed permanently": "failed", "failed with an exception": "retrying"}

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message", "asctime", "taskName"}
# kopf's own extras: its settings object and posting flags are not log fields.
_KOPF_INTERNAL = frozenset({"settings", "k8s_skip", "k8s_ref"})




def fields_of(record: logging.LogRecord) -> dict[str, Any]:
    """The record's fields beyond time/level/component/logger/message: context, then kopf's
    object reference, then the call's own extras (the most specific wins)."""
    fields: dict[str, Any] = dict(_context.get())
    ref = getattr(record, "k8s_ref", None)
    if isinstance(ref, Mapping) and ref.get("name"):
        fields["object"] = object_name(str(ref.get("kind")), str(ref["name"]),
                                       ref.get("namespace"))
        if ref.get("kind") == "Tenant":
            fields["tenant"] = str(ref["name"])
        result = _KOPF_HANDLER_RESULT.match(str(record.msg))
        if result:
            fields["outcome"] = _KOPF_OUTCOMES[result.group(1)]
    for key, value in record.__dict__.items():
        if key in _STANDARD or key in _KOPF_INTERNAL or key.startswith("_"):
            continue
        if key == "fields" and isinstance(value, Mapping):
            fields.update(value)
        else:
            fields[key] = value
    cleaned: dict[str, Any] = redact_value(fields)
    return cleaned


def _exception_of(record: logging.LogRecord, *, detail: bool) -> dict[str, Any] | None:
    """The exception's type; with `detail`, its redacted message and its frames too."""
    if not record.exc_info or record.exc_info[0] is None:
        return None
    kind, error, tb = record.exc_info
    if not detail:
        return {"type": kind.__name__}
    frames = [f"{frame.filename}:{frame.lineno} {frame.name}"
              for frame in traceback.extract_tb(tb)[-MAX_FRAMES:]]
    return {"type": kind.__name__, "message": redact_text(str(error))[:MAX_MESSAGE],
            "frames": frames}


def _time_of(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def __init__(self, component: str, *, exception_detail: bool = True) -> None:
        super().__init__()
        self.component = component
        self.exception_detail = exception_detail

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _time_of(record), "level": record.levelname.lower(),
            "component": self.component, "logger": record.name,
            "message": redact_text(record.getMessage())[:MAX_MESSAGE]}
        for key, value in fields_of(record).items():
            data.setdefault(key, value)
        exception = _exception_of(record, detail=self.exception_detail)
        if exception is not None:
            data["exception"] = exception
        return json.dumps(data, separators=(",", ":"), default=str, ensure_ascii=False)


def _one_line(text: str) -> str:
    """One record, one line: a newline in a value cannot forge another record."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


class TextFormatter(logging.Formatter):
    """`TIME LEVEL component logger: message [key=value ...]` for a terminal."""

    def __init__(self, component: str, *, exception_detail: bool = True) -> None:
        super().__init__()
        self.component = component
        self.exception_detail = exception_detail

    def format(self, record: logging.LogRecord) -> str:
        fields = fields_of(record)
        ordered = [*(k for k in CONTEXT_FIELDS if k in fields),
                   *sorted(k for k in fields if k not in CONTEXT_FIELDS)]
        suffix = " ".join(f"{key}={fields[key]}" for key in ordered)
        message = _one_line(redact_text(record.getMessage())[:MAX_MESSAGE])
        line = (f"{_time_of(record)} {record.levelname:<7} {self.component} {record.name}: "
                f"{message}"
                f"{' [' + suffix + ']' if suffix else ''}")
        exception = _exception_of(record, detail=self.exception_detail)
        if exception is not None:
            line += f"\n  {exception['type']}"
            if "message" in exception:
                line += f": {_one_line(exception['message'])}"
            line += "".join(f"\n    at {frame}" for frame in exception.get("frames", ()))
        return line


def formatter(component: str, log_format: str, *,
              exception_detail: bool = True) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(component, exception_detail=exception_detail)
    if log_format == "text":
        return TextFormatter(component, exception_detail=exception_detail)
    raise ValueError(f"--log-format {log_format!r}: expected one of {', '.join(FORMATS)}")


def configure(component: str, log_format: str = DEFAULT_FORMAT, *, verbose: bool = False,
              stream: TextIO | None = None, exception_detail: bool = True) -> None:
    """Send every record of the process to `stream` (stderr) in `log_format`, replacing any
    handler set up before (kopf's, basicConfig's). Without `exception_detail` an exception is
    logged by its type only (the API's choice: its exceptions may quote what a client sent)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter(component, log_format, exception_detail=exception_detail))
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    for name in _BODY_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO)
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in _ACCESS_LOGGERS:
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


def add_argument(parser: Any) -> None:
    """`--log-format json|text` on a command's argparse parser."""
    parser.add_argument("--log-format", choices=FORMATS, default=DEFAULT_FORMAT,
                        help="json: one object per line, for log collectors (default); "
                             "text: for a terminal")
