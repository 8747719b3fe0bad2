"""A durable on-disk queue of audit events waiting for the ledger (no database needed).

A writer that must not lose an event while PostgreSQL is unreachable puts it here first: one
file per event, written to a temporary name, fsync'd and renamed into place (then the directory
fsync'd), so after `put` returns the event survives a crash of the process. A flusher later
appends pending events to the ledger in order and only then removes their files.

Delivery is at least once: a crash between the ledger's commit and the removal of the files
appends those events again on restart. Each event carries its spool id as `request_id`
(``spool:<id>``), so such a repeat is recognisable in the ledger; nothing is ever lost or
silently dropped. A file that cannot be parsed is moved aside to ``rejected/`` with a log line,
never deleted.

An event PostgreSQL itself refuses (a data or integrity error: an invalid value, a constraint
violation; not an outage) would block everything behind it forever if it stayed at the head of
the queue. The flusher moves it to ``dead-letter/`` instead (`dead_letter`), with a small
``.reason`` file beside it naming the error class, SQLSTATE and constraint (never a value), so
an operator can inspect it, fix the cause and move it back into the spool to deliver it.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import pydantic

from tenantry.ledger.events import AuditEvent

logger = logging.getLogger(__name__)

_SUFFIX = ".event.json"


class SpoolError(OSError):
    """The spool directory cannot be used (missing permissions, full disk, ...)."""


class Spool:
    """Pending audit events in one directory, oldest first."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.rejected = directory / "rejected"
        self.dead_letters = directory / "dead-letter"
        try:
            self.rejected.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.dead_letters.mkdir(mode=0o700, exist_ok=True)
        except OSError as error:
            raise SpoolError(f"ledger spool {directory}: {error.strerror or error}") from error

    def put(self, event: AuditEvent) -> AuditEvent:
        """Store `event` durably; returns it as it will be appended (with its spool id)."""
        spool_id = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
        if event.request_id is None:
            event = event.model_copy(update={"request_id": f"spool:{spool_id}"})
        data = json.dumps(event.payload(), separators=(",", ":"), allow_nan=False).encode()
        final = self.directory / f"{spool_id}{_SUFFIX}"
        partial = self.directory / f".{spool_id}.partial"
        try:
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(partial, final)
            self._sync_directory()
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise SpoolError(f"ledger spool {self.directory}: cannot store an event: "
                             f"{error.strerror or error}") from error
        return event

    def pending(self, limit: int = 500) -> list[tuple[Path, AuditEvent]]:
        """Up to `limit` stored events, oldest first (unreadable files are set aside)."""
        found: list[tuple[Path, AuditEvent]] = []
        for path in sorted(self.directory.glob(f"*{_SUFFIX}"))[:limit]:
            try:
                found.append((path, AuditEvent.model_validate(json.loads(path.read_bytes()))))
            except (ValueError, pydantic.ValidationError) as error:
                logger.error("ledger spool: %s is not a valid event (%s); moved to %s",
                             path.name, type(error).__name__, self.rejected)
                os.replace(path, self.rejected / path.name)
        return found

    def count(self) -> int:
        return sum(1 for _ in self.directory.glob(f"*{_SUFFIX}"))

    def done(self, paths: Sequence[Path]) -> None:
        """Forget events that are now in the ledger."""
        for path in paths:
            path.unlink(missing_ok=True)
        self._sync_directory()

    def dead_letter(self, path: Path, reason: Mapping[str, str]) -> Path:
        """Set aside an event the ledger refuses, with why (public facts only); returns where."""
        target = self.dead_letters / path.name
        note = self.dead_letters / f"{path.name.removesuffix(_SUFFIX)}.reason.json"
        note.write_text(json.dumps(dict(reason), sort_keys=True) + "\n")
        os.replace(path, target)
        self._sync_directory(self.dead_letters)
        self._sync_directory()
        return target

    def dead_letter_count(self) -> int:
        return sum(1 for _ in self.dead_letters.glob(f"*{_SUFFIX}"))

    def _sync_directory(self, directory: Path | None = None) -> None:
        fd = os.open(directory or self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
