"""Signing keys and the JSON Web Key Set that publishes them (RFC 7517, RFC 8037, RFC 7638).

Access tokens are signed with Ed25519 (JWS `alg` "EdDSA", RFC 8037): asymmetric, so replicas
and anyone holding `/.well-known/jwks.json` can verify but not mint, and with one algorithm
there is nothing to confuse. A key's `kid` is its RFC 7638 thumbprint: derived from the key,
so two keys never share a kid and a kid names exactly one key.

Rotation, the JWKS way (the seeds' JWT_SECRET_PREVIOUS): the current key signs; previous keys
only verify, for as long as they stay listed (at least the access-token lifetime plus skew
after the switch).

A signing keyring (`SigningKeyring`) holds every version at once, as Secret
`tenantry-api-signing-keys` does and the API pod mounts it: one PKCS#8 PEM per version
(`v1.pem`, `v2.pem`, ...) and `signing`, the name of the version that signs. Every other version
only verifies. An ApiSigningKeys rotation adds a version (published in JWKS, not signing), names
it in `signing` once every API replica has it, and removes the old one after the token lifetime
plus skew; the operator decides when, from public facts only, and the API writes the Secret
(`api.signingwriter`, protocol `api.signingstate`) and re-reads the directory when it changes
(`api.signing`). Nothing outside the API pod holds a private key.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import os
import re
import types
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

ALGORITHM = "EdDSA"


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not an Ed25519 key; the message names the file."""


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw(public: ed25519.Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_jwk(public: ed25519.Ed25519PublicKey) -> dict[str, str]:
    """The key as an OKP JWK (RFC 8037 section 2), with its kid, use and alg."""
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(_raw(public)),
            "kid": thumbprint(public), "use": "sig", "alg": ALGORITHM}


def thumbprint(public: ed25519.Ed25519PublicKey) -> str:
    """RFC 7638 SHA-256 thumbprint: the required members, sorted, no whitespace."""
    members = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw(public))}
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


@dataclasses.dataclass(frozen=True)
class KeySet:
    """The key that signs now and every key that still verifies (the signing key included).

    The kid and the verification mapping are computed once (a thumbprint is a serialisation,
    JSON and SHA-256: too much to redo on every request) and the mapping is read-only, so the
    same key objects verify every token (`rfc9068.verify` relies on that for its cache)."""

    signing: ed25519.Ed25519PrivateKey
    previous: tuple[ed25519.Ed25519PublicKey, ...] = ()

    @functools.cached_property
    def kid(self) -> str:
        return thumbprint(self.signing.public_key())

    @functools.cached_property
    def _verification(self) -> Mapping[str, ed25519.Ed25519PublicKey]:
        keys = {thumbprint(k): k for k in self.previous}
        keys[self.kid] = self.signing.public_key()
        return types.MappingProxyType(keys)

    def verification_keys(self) -> Mapping[str, ed25519.Ed25519PublicKey]:
        return self._verification

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set: current key first, then the previous ones."""
        publics = [self.signing.public_key(), *self.previous]
        seen: set[str] = set()
        keys = []
        for public in publics:
            jwk = public_jwk(public)
            if jwk["kid"] not in seen:
                seen.add(jwk["kid"])
                keys.append(jwk)
        return {"keys": keys}


def generate() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def write_private_key(key: ed25519.Ed25519PrivateKey, path: Path) -> None:
    """Write a PKCS#8 PEM, created 0600; refuses to overwrite an existing file."""
    pem = private_pem(key)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def load_signing_key(path: Path) -> ed25519.Ed25519PrivateKey:
    """The PEM Ed25519 private key in `path`."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as error:
        raise KeyFileError(f"signing key {path}: {type(error).__name__}: not a readable, "
                        "unencrypted PEM private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise KeyFileError(f"signing key {path}: must be an Ed25519 key (JWS alg EdDSA)")
    return key


def load_verification_key(path: Path) -> ed25519.Ed25519PublicKey:
    """A previous key from `path`: a PEM public key, or a private key whose public half is used."""
    data = path.read_bytes() if path.exists() else b""
    if b"PRIVATE KEY" in data:
        return load_signing_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError):
        raise KeyFileError(f"previous key {path}: not a readable PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise KeyFileError(f"previous key {path}: must be an Ed25519 key (JWS alg EdDSA)")
    return key


def load_key_set(signing: Path, previous: Sequence[Path] = ()) -> KeySet:
    return KeySet(signing=load_signing_key(signing),
                  previous=tuple(load_verification_key(p) for p in previous))


# -- the signing keyring (Secret tenantry-api-signing-keys) ----------------------------------------

SIGNING_KEYRING_SECRET = "tenantry-api-signing-keys"  # noqa: S105 - a name
SIGNING_FILE = "signing"
"""The keyring member naming the version that signs."""
KEY_SUFFIX = ".pem"
VERSION_PATTERN = re.compile(r"^v[1-9][0-9]{0,8}$")


def private_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclasses.dataclass(frozen=True)
class SigningKeyring:
    """Every version of the signing keyring and the one that signs; `key_set()` is what the API
    signs and verifies with, `kids` what is public about it (never a key)."""

    signing: str
    keys: Mapping[str, ed25519.Ed25519PrivateKey]

    @functools.cached_property
    def kids(self) -> Mapping[str, str]:
        """version -> kid (RFC 7638 thumbprint), oldest version first."""
        return types.MappingProxyType({v: thumbprint(self.keys[v].public_key())
                                       for v in self.versions})

    @property
    def versions(self) -> tuple[str, ...]:
        """Oldest first (natural order: v2 before v10)."""
        return tuple(sorted(self.keys, key=lambda v: int(v[1:])))

    def key_set(self) -> KeySet:
        return KeySet(signing=self.keys[self.signing],
                      previous=tuple(self.keys[v].public_key() for v in self.versions
                                     if v != self.signing))


def signing_keyring_from_files(files: Mapping[str, bytes]) -> SigningKeyring:
    """The keyring in `files` (member name -> content: a Secret's data, or a mounted
    directory's files); KeyFileError naming the member and the rule, never its content."""
    signing = files.get(SIGNING_FILE, b"").decode("ascii", "replace").strip()
    keys: dict[str, ed25519.Ed25519PrivateKey] = {}
    for name, content in files.items():
        if not name.endswith(KEY_SUFFIX):
            continue
        version = name.removesuffix(KEY_SUFFIX)
        if not VERSION_PATTERN.match(version):
            raise KeyFileError(f"signing keyring member {name!r}: a key's name must be "
                               "v<number>.pem")
        try:
            key = serialization.load_pem_private_key(content, password=None)
        except (ValueError, TypeError):
            raise KeyFileError(f"signing keyring member {name}: not a readable, unencrypted "
                               "PEM private key") from None
        if not isinstance(key, ed25519.Ed25519PrivateKey):
            raise KeyFileError(f"signing keyring member {name}: must be an Ed25519 key "
                               "(JWS alg EdDSA)")
        keys[version] = key
    if not keys:
        raise KeyFileError("signing keyring: no key (members v<number>.pem)")
    if signing not in keys:
        raise KeyFileError(f"signing keyring: member {SIGNING_FILE!r} must name one of its "
                           f"versions ({', '.join(sorted(keys))}), not {signing!r}")
    return SigningKeyring(signing=signing, keys=keys)


def load_signing_keyring(directory: Path) -> SigningKeyring:
    """The keyring in a directory (a mounted Secret): every regular member, through the
    kubelet's `..data` links. A link that dangles for a moment after an update (the kubelet
    swaps `..data` first and unlinks a removed key after) is a removed key."""
    files: dict[str, bytes] = {}
    try:
        entries = sorted(directory.iterdir())
    except OSError as error:
        raise KeyFileError(f"signing keyring {directory}: {error.strerror}") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            files[entry.name] = entry.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as error:
            raise KeyFileError(f"signing keyring {entry}: {error.strerror}") from None
    return signing_keyring_from_files(files)


def signing_keyring_secret(namespace: str, key: ed25519.Ed25519PrivateKey) -> dict[str, Any]:
    """Secret `tenantry-api-signing-keys` holding `key` as version v1, the signing one."""
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": SIGNING_KEYRING_SECRET, "namespace": namespace,
                         "labels": {"app.kubernetes.io/name": "tenantry",
                                    "app.kubernetes.io/component": "api"}},
            "data": {"v1" + KEY_SUFFIX: base64.b64encode(private_pem(key)).decode("ascii"),
                     SIGNING_FILE: base64.b64encode(b"v1").decode("ascii")}}
