"""Key custody: where the operator's keys come from, and how it publishes its public key.

In `crypto/` (pure but for reading the key files): both the operator and the key commands
(`crypto/cli.py`) use it.

Both keys are files, never API objects the operator reads: in a cluster, Secrets mounted into
the operator's pod (`manifests/operator/deployment.yaml`); elsewhere, files named by flags or
environment variables.

- The **keyring** (`--keyring` / `$TENANTRY_KEYRING_FILE`): a JSON/YAML file or a mounted Secret
  directory, as `tenantry.crypto.keyring` reads them.
- The **sealing key** (`--sealing-key` / `$TENANTRY_SEALING_KEY_FILE`): unencrypted PKCS#8 PEM of
  one or more X25519 private keys. The first is published and used by `tenantry seal`; all of
  them unseal, so a new key can be put in front while values sealed to the old one still open.

Files are re-read when they change (Kubernetes updates a mounted Secret in place), so fixing or
rotating a key needs no restart. A missing or malformed file is not fatal to the operator: it
keeps reconciling Tenants, and Credentials fail closed with a condition that says which file is
wrong and how (`KeyringUnavailable`, `SealingKeyUnavailable`); no message ever quotes a file's
content.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import x25519

from tenantry.crypto import errors, keyring, reloading, sealing
from tenantry.model import common

ENV_KEYRING = keyring.ENV_VAR
ENV_SEALING_KEY = "TENANTRY_SEALING_KEY_FILE"
ENV_NAMESPACE = "TENANTRY_NAMESPACE"
DEFAULT_NAMESPACE = "tenantry-system"
# The keyring Secret (in the operator's namespace) that the Deployment mounts at the keyring
# path; a MasterKey RotationPolicy writes it (only it, by name) and reads it back from the mount.
KEYRING_SECRET = "tenantry-keyring"  # noqa: S105 - a Secret name

# Where the operator publishes its sealing public key (in its own namespace), and the keys of
# that ConfigMap; `tenantry seal --fetch-key` reads it.
PUBLIC_KEY_CONFIGMAP = "tenantry-sealing-public-key"
PUBLIC_KEY_PEM = "publicKey.pem"
PUBLIC_KEY_RAW = "publicKey"
PUBLIC_KEY_FINGERPRINT = "fingerprint"

_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]+)-----.+?-----END \1-----", re.DOTALL)

@dataclasses.dataclass(frozen=True)
class KeyOptions:
    """Where the operator's keys are (from `tenantry operator run`)."""

    keyring: Path | None = None
    """Keyring file or mounted Secret directory; None: not configured (Credentials fail)."""
    sealing_key: Path | None = None
    """PEM file of the X25519 sealing key(s); None: sealed Credentials fail, imports work."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeyOptions:
        environ = os.environ if environ is None else environ
        ring = environ.get(ENV_KEYRING, "").strip()
        sealing_key = environ.get(ENV_SEALING_KEY, "").strip()
        return cls(keyring=Path(ring) if ring else None,
                   sealing_key=Path(sealing_key) if sealing_key else None)


def operator_namespace(environ: Mapping[str, str] | None = None) -> str:
    """The operator's own namespace: `$TENANTRY_NAMESPACE`, else tenantry-system."""
    environ = os.environ if environ is None else environ
    return environ.get(ENV_NAMESPACE, "").strip() or DEFAULT_NAMESPACE


@dataclasses.dataclass(frozen=True)
class SealingKeys:
    """The operator's sealing private keys; the first is the one it publishes."""

    keys: tuple[x25519.X25519PrivateKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise errors.SealingKeyError("no sealing key")

    @property
    def primary(self) -> x25519.X25519PrivateKey:
        return self.keys[0]

    @property
    def fingerprint(self) -> str:
        """`sha256:<hex>` of the published public key."""
        return sealing.fingerprint(self.primary)

    def for_hint(self, hint: str) -> x25519.X25519PrivateKey:
        """The key a value was sealed for, by the sealed value's recipient hint (hex); the
        published key when none matches (unsealing then says "sealed for another key")."""
        for key in self.keys:
            if sealing.fingerprint(key).removeprefix("sha256:").startswith(hint):
                return key
        return self.primary

    def __repr__(self) -> str:
        return f"SealingKeys({', '.join(sealing.fingerprint(k) for k in self.keys)})"


def parse_sealing_keys(data: bytes) -> SealingKeys:
    """One or more PEM private keys, concatenated; `SealingKeyError` saying what is wrong."""
    blocks = [match.group(0) for match in _PEM_BLOCK.finditer(data)]
    if not blocks:
        raise errors.SealingKeyError(
            "holds no PEM block; expected an X25519 private key from `tenantry sealing-key init`")
    keys = []
    for number, block in enumerate(blocks, start=1):
        try:
            keys.append(sealing.load_private_key(block))
        except errors.SealingKeyError as error:
            raise errors.SealingKeyError(f"PEM block {number}: {error}") from None
    return SealingKeys(tuple(keys))


def load_sealing_keys(path: Path) -> SealingKeys:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise errors.SealingKeyError(f"sealing key file {path}: does not exist") from None
    except IsADirectoryError:
        raise errors.SealingKeyError(
            f"sealing key file {path}: is a directory; point at the PEM file inside it") from None
    except OSError as error:
        raise errors.SealingKeyError(
            f"sealing key file {path}: cannot be read: {error.strerror}") from None
    try:
        return parse_sealing_keys(data)
    except errors.SealingKeyError as error:
        raise errors.SealingKeyError(f"sealing key file {path}: {error}") from None


class KeySource:
    """The operator's keys, from the files in `KeyOptions`, re-read when those change."""

    def __init__(self, options: KeyOptions) -> None:
        self.options = options
        self._ring = reloading.Reloading(
            options.keyring, keyring.load, errors.KeyringError,
            f"no keyring configured: start the operator with --keyring FILE or "
            f"${ENV_KEYRING} (create one with `tenantry keyring init`)")
        self._sealing = reloading.Reloading(
            options.sealing_key, load_sealing_keys, errors.SealingKeyError,
            f"no sealing key configured: start the operator with --sealing-key FILE or "
            f"${ENV_SEALING_KEY} (create one with `tenantry sealing-key init`)")

    def keyring(self) -> keyring.Keyring:
        """The keyring; `KeyringError` (with a clear, key-free message) if unavailable."""
        return self._ring.get()

    def sealing_keys(self) -> SealingKeys:
        """The sealing keys; `SealingKeyError` if unavailable."""
        return self._sealing.get()

    def describe(self) -> list[str]:
        """One line per key for the start-up log: versions and fingerprints, never key bytes."""
        lines = []
        try:
            ring = self.keyring()
            lines.append(f"keyring {self.options.keyring}: primary {ring.primary}, versions "
                         f"{', '.join(ring.versions)}")
        except errors.KeyringError as error:
            lines.append(f"keyring unavailable, every Credential will report KeyringUnavailable:"
                         f" {error}")
        try:
            lines.append(f"sealing key {self.options.sealing_key}: "
                         f"{self.sealing_keys().fingerprint}")
        except errors.SealingKeyError as error:
            lines.append(f"sealing key unavailable, sealed Credentials will report "
                         f"SealingKeyUnavailable: {error}")
        return lines


def public_key_configmap(namespace: str, keys: SealingKeys) -> dict[str, Any]:
    """The ConfigMap publishing the sealing public key (pure; public values only)."""
    public = keys.primary.public_key()
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": PUBLIC_KEY_CONFIGMAP,
            "namespace": namespace,
            "labels": {common.MANAGED_BY_LABEL: "tenantry", "app.kubernetes.io/name": "tenantry",
                       "app.kubernetes.io/component": "operator"},
        },
        "data": {
            PUBLIC_KEY_PEM: sealing.public_key_to_pem(public).decode("ascii"),
            PUBLIC_KEY_RAW: sealing.public_key_to_base64(public),
            PUBLIC_KEY_FINGERPRINT: sealing.fingerprint(public),
        },
    }


def public_key_from_configmap(configmap: Mapping[str, Any]) -> x25519.X25519PublicKey:
    """The public key a published ConfigMap holds; `SealingKeyError` if it holds none, or one
    that does not match its own fingerprint."""
    data = configmap.get("data") or {}
    text = data.get(PUBLIC_KEY_PEM) or data.get(PUBLIC_KEY_RAW)
    if not isinstance(text, str):
        raise errors.SealingKeyError(
            f"ConfigMap {PUBLIC_KEY_CONFIGMAP} holds no {PUBLIC_KEY_PEM!r}")
    key = sealing.load_public_key(text)
    stated = data.get(PUBLIC_KEY_FINGERPRINT)
    if stated is not None and stated != sealing.fingerprint(key):
        raise errors.SealingKeyError(
            f"ConfigMap {PUBLIC_KEY_CONFIGMAP}: the key does not match its stated fingerprint")
    return key

