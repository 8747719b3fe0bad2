"""Writing fetched values into a directory (an in-memory volume) safely (pure file I/O).

Each field becomes one file, mode 0400, written to a temporary name in the same directory and
renamed into place, so a reader never sees a half-written value and a sidecar's refresh swaps
values atomically. Files of fields the Credential no longer has are removed. `.tenantry.json`
beside them says which key id and encryption generation the values are from (no value).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

META_FILE = ".tenantry.json"
_FIELD = re.compile(r"^[-._a-zA-Z0-9]+$")


class UnsafeField(ValueError):
    """A field name that cannot be a file name here (the API never sends one)."""


def _check(field: str) -> str:
    if not _FIELD.match(field) or field in (".", "..") or field == META_FILE:
        raise UnsafeField(f"field {field[:64]!r} cannot be a file name")
    return field


def _write(directory: Path, name: str, data: bytes, mode: int) -> None:
    temporary = directory / f".{name}.tmp-{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, directory / name)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_values(directory: Path, values: Mapping[str, bytes], *, key_id: str,
                 generation: int, only: bool = False) -> list[str]:
    """Write every value (0400), then the metadata; unless `only` (a subset was asked for),
    remove files of fields no longer present. Returns the file names written."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    names = [_check(field) for field in sorted(values)]
    for field in names:
        _write(directory, field, values[field], 0o400)
    if not only:
        previous = read_meta(directory).get("fields")
        listed = [f for f in previous if isinstance(f, str)] if isinstance(previous, list) else []
        for stale in set(listed) - set(names):
            if _FIELD.match(stale) and stale != META_FILE:
                (directory / stale).unlink(missing_ok=True)
    meta = {"keyId": key_id, "generation": generation, "fields": names}
    _write(directory, META_FILE, json.dumps(meta, sort_keys=True).encode(), 0o444)
    return names


def read_meta(directory: Path) -> dict[str, object]:
    try:
        found = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}
