"""A key file (or a mounted Secret directory) loaded again whenever it changes.

Kubernetes updates a mounted Secret in place (it swaps the `..data` symlink), so every
component that holds keys from files (the operator, the webhook, the API) picks a rotated or
repaired key up without a restart: `Reloading.get` compares a cheap signature of the file (inode,
mtime, size; for a directory, of every entry) with the last one and loads again only when it
differs. A file that fails to load raises the loader's error (a `CryptoError`, whose message
never quotes the file's content) until it is fixed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from tenantry.crypto import errors

T = TypeVar("T")


def signature(path: Path) -> tuple[Any, ...] | None:
    """What changes when a file, or a mounted Secret directory, is replaced or edited."""
    try:
        info = path.stat()
    except OSError:
        return None
    if not path.is_dir():
        return ("file", info.st_ino, info.st_mtime_ns, info.st_size)
    entries: list[tuple[Any, ...]] = []
    try:
        children = sorted(path.iterdir())
    except OSError:
        return ("dir", info.st_ino, info.st_mtime_ns)
    for child in children:
        # Includes `..data`, the symlink Kubernetes swaps atomically on every Secret update.
        try:
            child_info = child.stat()
        except OSError:
            entries.append((child.name, None))
            continue
        entries.append((child.name, child_info.st_ino, child_info.st_mtime_ns,
                        child_info.st_size))
    return ("dir", info.st_ino, info.st_mtime_ns, tuple(entries))


class Reloading(Generic[T]):
    """A value loaded from a file, loaded again only when the file changes."""

    def __init__(self, path: Path | None, loader: Callable[[Path], T],
                 error: type[errors.CryptoError], unset: str) -> None:
        self._path = path
        self._loader = loader
        self._error = error
        self._unset = unset
        self._signature: tuple[Any, ...] | None = None
        self._loaded = False
        self._value: T | None = None
        self._message = ""

    @property
    def path(self) -> Path | None:
        return self._path

    def get(self) -> T:
        """The current value; the loader's error (a `CryptoError`) if the file is bad."""
        if self._path is None:
            raise self._error(self._unset)
        current = signature(self._path)
        if not self._loaded or current is None or current != self._signature:
            self._signature = current
            self._loaded = True
            try:
                self._value, self._message = self._loader(self._path), ""
            except errors.CryptoError as error:
                self._value, self._message = None, str(error)
        if self._value is None:
            raise self._error(self._message)
        return self._value
