"""Master key versions: loading, validation, and the pure steps master-key rotation builds on.

A keyring holds named versions of a 32-byte master key; one is primary and encrypts, the others
only decrypt what was written under them. It comes from one of two places:

- a file (JSON or YAML), given directly or through `$TENANTRY_KEYRING_FILE`::

      {"primary": "v2", "keys": {"v1": "<base64 of 32 bytes>", "v2": "..."}}

- a directory, as Kubernetes mounts a Secret: one file per version holding the base64 key, plus a
  file named `primary` holding the primary version's name. `$TENANTRY_KEYRING_FILE` may point at
  such a directory too.

Loading fails closed: anything missing, unknown or malformed is a `KeyringError` naming the file
and the problem, never the key bytes. Rotation (add a version, promote it, re-encrypt, retire the
old one) is made of pure functions here that return new keyrings; writing them back to the Secret
is the controller's job.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from tenantry.crypto import errors

ENV_VAR = "TENANTRY_KEYRING_FILE"
KEY_SIZE = 32
# In a Secret directory, the file naming the primary version (so no version may be called that).
PRIMARY_FILE = "primary"
# A version id names a Secret key, a file and part of every envelope header and key id: keep it
# short, lowercase and free of '.', which separates the version from the rest of a key id.
VERSION_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,30}[a-z0-9])?$")
_DOCUMENT_FIELDS = frozenset({"primary", "keys"})


class Keyring:
    """Master key versions and which one is primary. Immutable; its repr shows no key bytes."""

    __slots__ = ("_keys", "_primary")

    _keys: Mapping[str, bytes]
    _primary: str

    def __init__(self, primary: str, keys: Mapping[str, bytes]) -> None:
        for version, key in keys.items():
            check_version(version)
            _check_key(version, key)
        if primary not in keys:
            raise errors.KeyringError(
                f"primary version {primary!r} is not among the keys "
                f"({', '.join(sorted(keys, key=_order)) or 'none'})")
        self._keys = MappingProxyType({v: bytes(keys[v]) for v in sorted(keys, key=_order)})
        self._primary = primary

    @property
    def primary(self) -> str:
        """The version new ciphertexts are encrypted under."""
        return self._primary

    @property
    def versions(self) -> tuple[str, ...]:
        """Every version held, oldest first (natural order: v2 before v10)."""
        return tuple(self._keys)

    def key(self, version: str) -> bytes:
        """The 32 key bytes of one version; `UnknownKeyVersionError` if it is not held."""
        try:
            return self._keys[version]
        except KeyError:
            raise errors.UnknownKeyVersionError(version, self.versions) from None

    def __contains__(self, version: object) -> bool:
        return version in self._keys

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Keyring):
            return NotImplemented
        return (self._primary == other._primary and self.versions == other.versions
                and all(hmac.compare_digest(self._keys[v], other._keys[v]) for v in self._keys))

    def __repr__(self) -> str:
        return f"Keyring(primary={self._primary!r}, versions={self.versions!r})"


def check_version(version: object) -> str:
    """Validate a version id and return it; `KeyringError` saying what a valid one looks like."""
    if not isinstance(version, str) or not VERSION_PATTERN.match(version):
        shown = repr(version) if isinstance(version, str) and len(version) <= 64 else "given"
        raise errors.KeyringError(
            f"key version {shown} is not a valid name: use 1-32 lowercase letters, digits "
            "or '-', starting and ending with a letter or digit, e.g. v1")
    if version == PRIMARY_FILE:
        raise errors.KeyringError(
            f"key version may not be called {PRIMARY_FILE!r}: that name marks the primary version")
    return version


def _check_key(version: str, key: object) -> None:
    if not isinstance(key, bytes | bytearray):
        raise errors.KeyringError(f"key {version!r} must be bytes")
    if len(key) != KEY_SIZE:
        raise errors.KeyringError(
            f"key {version!r} is {len(key)} bytes; a master key is {KEY_SIZE} random bytes")
    # All-equal bytes (all zeros above all) is a placeholder someone forgot to replace; a random
    # key is like this with probability 2**-248.
    if key.count(key[0]) == KEY_SIZE:
        raise errors.KeyringError(
            f"key {version!r} is one byte repeated (a placeholder?); generate a random key")


def _order(version: str) -> tuple[tuple[str, int], ...]:
    # Natural order so that v10 sorts after v9.
    return tuple((text, int(digits) if digits else -1)
                 for text, digits in re.findall(r"(\D*)(\d*)", version) if text or digits)


def _decode_key(version: str, value: object) -> bytes:
    if not isinstance(value, str):
        raise errors.KeyringError(f"key {version!r} must be a base64 string")
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise errors.KeyringError(f"key {version!r} is not valid base64") from None
    _check_key(version, key)
    return key


def _encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


@contextlib.contextmanager
def _source(description: str) -> Iterator[None]:
    """Prefix every KeyringError raised inside with where the keyring came from."""
    try:
        yield
    except errors.KeyringError as error:
        raise errors.KeyringError(f"{description}: {error}") from None


# -- loading -----------------------------------------------------------------------------------

def from_document(document: object) -> Keyring:
    """A keyring from its parsed file form: {"primary": ..., "keys": {version: base64}}."""
    if not isinstance(document, Mapping):
        raise errors.KeyringError(
            "expected a mapping with 'primary' and 'keys', e.g. "
            '{"primary": "v1", "keys": {"v1": "<base64 of 32 bytes>"}}')
    # Unknown fields are refused: a typo such as "primay" must not be silently ignored.
    unknown = sorted(str(name) for name in document if name not in _DOCUMENT_FIELDS)
    if unknown:
        raise errors.KeyringError(f"unknown field(s): {', '.join(map(repr, unknown))}")
    if "primary" not in document:
        raise errors.KeyringError("no 'primary' field naming the version that encrypts")
    if "keys" not in document:
        raise errors.KeyringError("no 'keys' field")
    primary, keys = document["primary"], document["keys"]
    if not isinstance(primary, str):
        raise errors.KeyringError("'primary' must be a version name such as \"v1\"")
    if not isinstance(keys, Mapping) or not keys:
        raise errors.KeyringError("'keys' must be a non-empty mapping of version -> base64 key")
    decoded = {check_version(version): _decode_key(version, value)
               for version, value in keys.items()}
    return Keyring(primary, decoded)


def load_file(path: str | os.PathLike[str]) -> Keyring:
    """Load a keyring file (JSON or YAML; JSON is read as the YAML subset it is)."""
    path = Path(path)
    with _source(f"keyring file {path}"):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise errors.KeyringError("does not exist") from None
        except IsADirectoryError:
            raise errors.KeyringError("is a directory; use load_directory()") from None
        except UnicodeDecodeError:
            raise errors.KeyringError("is not UTF-8 text") from None
        except OSError as error:
            raise errors.KeyringError(f"cannot be read: {error.strerror}") from None
        try:
            document = yaml.safe_load(text)
        except yaml.YAMLError as error:
            # The YAML error quotes the offending line, which may hold a key: give only its place.
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise errors.KeyringError(f"is not valid JSON or YAML{where}") from None
        if document is None:
            raise errors.KeyringError("is empty")
        return from_document(document)


def load_directory(path: str | os.PathLike[str]) -> Keyring:
    """Load a keyring from a directory: one file per version plus a `primary` file.

    This is how Kubernetes mounts a Secret; its bookkeeping entries (`..data`, `..2024_...`)
    are skipped, any other unexpected entry is an error.
    """
    path = Path(path)
    with _source(f"keyring directory {path}"):
        if not path.is_dir():
            raise errors.KeyringError("does not exist or is not a directory")
        primary: str | None = None
        keys: dict[str, bytes] = {}
        for entry in sorted(path.iterdir()):
            if entry.name.startswith("."):
                continue
            with _source(f"file {entry.name!r}"):
                # A key just removed from the Secret: the kubelet swaps `..data` first and
                # unlinks the removed keys' links after, so for a moment they dangle, and one
                # may start dangling (or be unlinked) between any two of these checks: a link
                # found dangling, or gone, at any point is a removed key, not a broken keyring.
                if not entry.is_file():
                    if _removed(entry):
                        continue
                    raise errors.KeyringError("is not a regular file")
                try:
                    content = entry.read_text(encoding="utf-8")
                except UnicodeDecodeError:
                    raise errors.KeyringError("is not base64 text") from None
                except FileNotFoundError:
                    if _removed(entry):
                        continue
                    raise errors.KeyringError("vanished while being read") from None
                except OSError as error:
                    raise errors.KeyringError(f"cannot be read: {error.strerror}") from None
                if entry.name == PRIMARY_FILE:
                    primary = content.strip()
                else:
                    version = check_version(entry.name)
                    keys[version] = _decode_key(version, content)
        if not keys:
            raise errors.KeyringError("holds no key versions")
        if primary is None:
            raise errors.KeyringError(
                f"has no {PRIMARY_FILE!r} file naming the version that encrypts")
        return Keyring(primary, keys)


def _removed(entry: Path) -> bool:
    """A key the kubelet is removing: its link dangles (the target is gone), or the link is gone
    too (unlinked since the directory was listed; CI met it in the MasterKey e2e as `file 'v1':
    is not a regular file`)."""
    return (entry.is_symlink() and not entry.exists()) or not os.path.lexists(entry)


def load(path: str | os.PathLike[str]) -> Keyring:
    """Load a keyring from a file or a mounted Secret directory, whichever `path` is."""
    return load_directory(path) if Path(path).is_dir() else load_file(path)


def from_env(environ: Mapping[str, str] | None = None) -> Keyring:
    """Load the keyring `$TENANTRY_KEYRING_FILE` points at (a file or a directory)."""
    environ = os.environ if environ is None else environ
    path = environ.get(ENV_VAR, "").strip()
    if not path:
        raise errors.KeyringError(
            f"{ENV_VAR} is not set: point it at the keyring file or at the directory the "
            "keyring Secret is mounted in")
    return load(path)


# -- writing -----------------------------------------------------------------------------------
# These return key material in the clear, for writing to a Secret or a 0600 file; never log them.

def to_document(ring: Keyring) -> dict[str, Any]:
    """The file form of a keyring (inverse of `from_document`)."""
    return {"primary": ring.primary,
            "keys": {version: _encode_key(ring.key(version)) for version in ring.versions}}


def dumps(ring: Keyring) -> str:
    """The keyring as a JSON document, ready for a file or a Secret's `stringData`."""
    return json.dumps(to_document(ring), indent=2) + "\n"


def to_secret_data(ring: Keyring) -> dict[str, str]:
    """Secret `stringData` for the directory form: version -> base64 key, plus `primary`."""
    data = {version: _encode_key(ring.key(version)) for version in ring.versions}
    data[PRIMARY_FILE] = ring.primary
    return data


def from_secret_data(data: Mapping[str, str]) -> Keyring:
    """A keyring from the directory form's Secret `stringData` (inverse of `to_secret_data`):
    version -> base64 key, plus `primary`. The caller decodes the Secret's `data` first."""
    if PRIMARY_FILE not in data:
        raise errors.KeyringError(f"has no {PRIMARY_FILE!r} key naming the version that encrypts")
    keys = {check_version(version): _decode_key(version, value)
            for version, value in data.items() if version != PRIMARY_FILE}
    if not keys:
        raise errors.KeyringError("holds no key versions")
    return Keyring(str(data[PRIMARY_FILE]).strip(), keys)


def from_secret_manifest(document: Mapping[str, Any]) -> Keyring:
    """A keyring from a Secret manifest (`kubectl get secret tenantry-keyring -o yaml`): its
    `data` (base64, as the API returns it) and `stringData`."""
    data: dict[str, str] = {}
    for name, value in (document.get("data") or {}).items():
        try:
            data[str(name)] = base64.b64decode(str(value), validate=True).decode("ascii")
        except (binascii.Error, ValueError):
            raise errors.KeyringError(f"data {str(name)[:32]!r} is not base64 text") from None
    data.update({str(k): str(v) for k, v in (document.get("stringData") or {}).items()})
    return from_secret_data(data)


def load_backup(path: str | os.PathLike[str]) -> Keyring:
    """A keyring backup in any form it is kept in: a Secret manifest (YAML or JSON), a keyring
    file, or a directory as a Secret is mounted."""
    path = Path(path)
    if path.is_dir():
        return load_directory(path)
    with _source(f"backup {path}"):
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise errors.KeyringError("does not exist") from None
        except (OSError, UnicodeDecodeError):
            raise errors.KeyringError("cannot be read as text") from None
        except yaml.YAMLError:
            raise errors.KeyringError("is not valid YAML or JSON") from None
        if isinstance(document, Mapping) and document.get("kind") == "Secret":
            return from_secret_manifest(document)
        return from_document(document)


def backup_problems(ring: Keyring, expected: Mapping[str, str]) -> list[str]:
    """What makes `ring` not a backup of a keyring whose check values are `expected`
    (version -> check value): a version missing, or another key under its name."""
    found = check_values(ring)
    problems = []
    for version, value in sorted(expected.items(), key=lambda item: _order(item[0])):
        if version not in found:
            problems.append(f"it lacks key version {version}")
        elif not hmac.compare_digest(found[version], value):
            problems.append(f"its key version {version} is another key (check value "
                            f"{found[version]}, not {value})")
    return problems


# -- check values ------------------------------------------------------------------------------
# A key check value names one version's key without revealing it: HMAC-SHA256 under the key
# itself of a fixed label, truncated. Status shows it, and `tenantry keyring confirm-backup`
# compares it with a backup's, so "this backup holds the new key" is checked, not assumed.

CHECK_VALUE_LABEL = b"tenantry.dev/v1 master key check value"
CHECK_VALUE_HEX = 16


def check_value(ring: Keyring, version: str) -> str:
    """The check value of one version: 16 hex digits, safe to show (not the key)."""
    digest = hmac.new(ring.key(version), CHECK_VALUE_LABEL, hashlib.sha256).hexdigest()
    return digest[:CHECK_VALUE_HEX]


def check_values(ring: Keyring) -> dict[str, str]:
    """version -> check value, for every version held."""
    return {version: check_value(ring, version) for version in ring.versions}


# -- rotation steps (pure: each returns a new keyring) -----------------------------------------

def new_key() -> bytes:
    """32 bytes from the operating system's CSPRNG."""
    return secrets.token_bytes(KEY_SIZE)


def generate(version: str = "v1") -> Keyring:
    """A fresh keyring with one random version, primary."""
    return Keyring(version, {check_version(version): new_key()})


def next_version(ring: Keyring) -> str:
    """The name the next version gets: v<N+1> after the highest v<N> held (v1 if none)."""
    return version_after(ring.versions)


def version_after(versions: Iterable[str]) -> str:
    """v<N+1> after the highest v<N> among `versions` (v1 if none)."""
    numbers = [int(v[1:]) for v in versions if re.fullmatch(r"v[0-9]+", v)]
    return f"v{max(numbers, default=0) + 1}"


def add_version(ring: Keyring, version: str | None = None, key: bytes | None = None) -> Keyring:
    """Add a version (random key unless given) without promoting it.

    Adding first and promoting later lets every replica learn the new key before any of them
    encrypts with it, so no replica ever meets a ciphertext it cannot open.
    """
    version = check_version(version) if version is not None else next_version(ring)
    if version in ring:
        raise errors.KeyringError(f"key version {version!r} already exists")
    keys = {v: ring.key(v) for v in ring.versions}
    keys[version] = new_key() if key is None else key
    return Keyring(ring.primary, keys)


def promote(ring: Keyring, version: str) -> Keyring:
    """Make an existing version primary; the previous primary still decrypts."""
    ring.key(version)  # UnknownKeyVersionError if absent
    return Keyring(version, {v: ring.key(v) for v in ring.versions})


def retire(ring: Keyring, version: str) -> Keyring:
    """Remove a version: whatever is still encrypted under it can no longer be opened.

    Only call this once everything has been re-encrypted under a newer version.
    """
    ring.key(version)
    if version == ring.primary:
        raise errors.KeyringError(
            f"cannot retire {version!r}: it is the primary version; promote another one first")
    return Keyring(ring.primary, {v: ring.key(v) for v in ring.versions if v != version})
