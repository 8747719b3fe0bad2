"""Per-tenant keys: HKDF-SHA256 (RFC 5869) from one master key version, bound to a Tenant's UID.

    salt = SHA-256("tenantry/v1/salt/" || version)       fixed and public, one per master version
    key  = HKDF-SHA256(master, salt, "tenantry/tenant-key/v1/"    || uid, 32 bytes)
    id   = HKDF-SHA256(master, salt, "tenantry/tenant-key-id/v1/" || uid,  8 bytes)

The UID, not the name, goes into `info`: a Tenant deleted and re-created under the same name gets
a new UID and so a new key, and cannot read what its predecessor left behind.

The key id (`<version>.<16 hex>`) is a separate HKDF output, so publishing it (status, headers)
reveals nothing about the key; because it depends on the master key it also tells "encrypted with
another master key that happens to share this version name" apart from "tampered with".

These formulas are part of the stored data format: changing any label makes every existing
ciphertext unreadable, which is why the tests pin known answers.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from tenantry.crypto import errors, keyring

SALT_LABEL = b"tenantry/v1/salt/"
KEY_INFO_LABEL = b"tenantry/tenant-key/v1/"
KEY_ID_INFO_LABEL = b"tenantry/tenant-key-id/v1/"
KEY_SIZE = 32
FINGERPRINT_SIZE = 8
# Derived keys are cached: a reconcile of one Credential opens every field with the same key.
# The bound keeps memory flat on a platform with many tenants and several master versions.
CACHE_SIZE = 4096
_UID_PATTERN = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length: int) -> bytes:
    """RFC 5869 HKDF (extract then expand) with SHA-256, as `cryptography` implements it."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def version_salt(version: str) -> bytes:
    """The fixed, public HKDF salt of one master key version."""
    return hashlib.sha256(SALT_LABEL + keyring.check_version(version).encode("ascii")).digest()


def check_uid(tenant_uid: object, kind: str = "Tenant") -> str:
    """Validate a Tenant (or other object's) UID: a canonical lowercase UUID, as Kubernetes
    writes metadata.uid.

    Insisting on the UUID form catches the easy mistake of passing the object's name, which
    would silently bind keys to something a re-created object shares with its predecessor.
    """
    # A regex rather than uuid.UUID(): this runs on every encryption and decryption, and the
    # canonical form (lowercase, hyphenated) is all Kubernetes ever writes.
    if not isinstance(tenant_uid, str) or not _UID_PATTERN.fullmatch(tenant_uid):
        raise errors.InvalidContextError(
            f"{kind.lower()} UID must be the {kind}'s metadata.uid, a lowercase UUID such as "
            f"'0b7c6e2a-5f3d-4c1e-9a8b-2d4f6e8a0c1b' (not the {kind.lower()}'s name)")
    return tenant_uid


def format_key_id(master_version: str, fingerprint: bytes) -> str:
    """The public key id: `<master version>.<fingerprint as 16 hex digits>`."""
    return f"{master_version}.{fingerprint.hex()}"


@dataclasses.dataclass(frozen=True)
class TenantKey:
    """One tenant's AES-256-GCM key under one master key version."""

    master_version: str
    tenant_uid: str
    fingerprint: bytes
    """8 public bytes identifying the key (an independent HKDF output, not part of the key)."""
    key: bytes = dataclasses.field(repr=False, compare=False)
    aead: AESGCM = dataclasses.field(repr=False, compare=False)
    """Ready-made cipher, built once per cached key rather than once per encryption."""

    @property
    def key_id(self) -> str:
        """`<master version>.<16 hex>`: what `status.secretRef.keyId` shows."""
        return format_key_id(self.master_version, self.fingerprint)


@functools.lru_cache(maxsize=CACHE_SIZE)
def _derive(master_key: bytes, version: str, tenant_uid: str) -> TenantKey:
    # The cache key includes the master key bytes, not just the version name: two keyrings can
    # hold different keys under the same name (a restored backup, a re-generated dev keyring),
    # and a name-only cache would hand out a key derived from the wrong one.
    salt = version_salt(version)
    uid = tenant_uid.encode("ascii")
    key = hkdf_sha256(master_key, salt=salt, info=KEY_INFO_LABEL + uid, length=KEY_SIZE)
    fingerprint = hkdf_sha256(master_key, salt=salt, info=KEY_ID_INFO_LABEL + uid,
                              length=FINGERPRINT_SIZE)
    return TenantKey(version, tenant_uid, fingerprint, key, AESGCM(key))


def derive(ring: keyring.Keyring, tenant_uid: str, version: str | None = None) -> TenantKey:
    """The tenant's key under `version` (default: the keyring's primary)."""
    version = ring.primary if version is None else version
    return _derive(ring.key(version), version, check_uid(tenant_uid))


def clear_cache() -> None:
    """Forget cached keys, e.g. after retiring a master version so its derivatives go too."""
    _derive.cache_clear()
