"""The envelope: how one credential field is stored, AES-256-GCM under the tenant's key.

Format version 2 (1 differs only in its AAD, below), all integers big-endian::

    offset  size  content
    0       2     magic "TE"
    2       1     format version (2)
    3       1     n = length of the master key version name
    4       n     master key version name (ASCII, e.g. "v2")
    4+n     8     tenant key fingerprint (the hex part of the key id)
    12+n    12    random nonce
    24+n    ...   ciphertext, then the 16-byte GCM tag

The associated data is the whole header (bytes 0 to 24+n) followed by the canonical encoding of
the context: tenant UID, Credential UID, namespace, credential name, field name and encryption
generation. So an envelope copied to another tenant, namespace, credential or field, or an old
envelope replayed after the generation moved on, does not open, and neither does one whose header
was edited to point at another key version. Nor does one of a Credential that was deleted and
re-created under the same name: the new object has a new metadata.uid (the Tenant key is bound to
the Tenant's UID the same way, `tenant_keys`).

Format 1 (before Credential UIDs were bound) has no Credential UID in its AAD. It opens only when
the caller says the envelope comes from the Credential it was written for (`allow_unbound`: the
operator does so only while the Credential's own status already records the ciphertext, which a
re-created object never has), and the operator then re-encrypts it as format 2. The format byte
is part of the AAD, so a format 2 envelope relabelled as format 1 does not open either.

`parse_header` reads the key version and key id without any key, which is what rotation needs to
find envelopes still under an old version.
"""

from __future__ import annotations

import dataclasses
import functools
import hmac
import os
from typing import NamedTuple

from cryptography.exceptions import InvalidTag

from tenantry.crypto import errors, framing, keyring, tenant_keys

MAGIC = b"TE"
FORMAT_V1 = 1
"""Legacy: no Credential UID in the AAD (read, never written)."""
FORMAT_V2 = 2
SUPPORTED_FORMATS = (FORMAT_V1, FORMAT_V2)
NONCE_SIZE = 12
TAG_SIZE = 16
# Domain separation: these AAD bytes can never be mistaken for a sealed value's AAD.
AAD_LABEL = b"tenantry/envelope-aad/v1\x00"
AAD_LABEL_V2 = b"tenantry/envelope-aad/v2\x00"
_FIXED_HEADER = len(MAGIC) + 2  # magic, format version, version-name length


@dataclasses.dataclass(frozen=True)
class Context:
    """Where an envelope belongs; all of it is authenticated, none of it is secret."""

    tenant_uid: str
    """The owning Tenant's metadata.uid (not its name)."""
    namespace: str
    credential: str
    """The Credential's name."""
    field: str
    """The key within the Credential's data (e.g. `password`)."""
    generation: int
    """The encryption generation; bumping it makes every older envelope of the field stale."""
    credential_uid: str | None = None
    """The Credential's metadata.uid. Required to seal; None opens format 1 envelopes only."""

    def __post_init__(self) -> None:
        self.encoded  # noqa: B018 - validate every part now, not at first use
        if self.credential_uid is not None:
            self.encoded_v2  # noqa: B018

    @functools.cached_property
    def encoded(self) -> bytes:
        """The format 1 encoding that goes into the AAD (no Credential UID)."""
        return b"".join((AAD_LABEL, self._tenant_uid(), self._names()))

    @functools.cached_property
    def encoded_v2(self) -> bytes:
        """The format 2 encoding that goes into the AAD: format 1's parts plus the UID."""
        if self.credential_uid is None:
            raise errors.InvalidContextError(
                "this envelope is bound to a Credential UID: the context must give the "
                "Credential's metadata.uid")
        return b"".join((AAD_LABEL_V2, self._tenant_uid(),
                         framing.text("credential UID",
                                      tenant_keys.check_uid(self.credential_uid, "Credential")),
                         self._names()))

    def _tenant_uid(self) -> bytes:
        return framing.text("tenant UID", tenant_keys.check_uid(self.tenant_uid))

    def _names(self) -> bytes:
        return b"".join((
            framing.text("namespace", self.namespace),
            framing.text("credential name", self.credential),
            framing.text("field name", self.field),
            framing.generation(self.generation),
        ))

    def describe(self) -> str:
        """For error messages: the context in words (all public values)."""
        uid = f" (UID {self.credential_uid})" if self.credential_uid else ""
        return (f"{self.namespace}/{self.credential}{uid} field {self.field!r} generation "
                f"{self.generation} of tenant {self.tenant_uid}")

    def aad(self, format_version: int) -> bytes:
        return self.encoded if format_version == FORMAT_V1 else self.encoded_v2


# A NamedTuple rather than a frozen dataclass: one is built on every decryption, and a frozen
# dataclass's __init__ costs several times more.
class Header(NamedTuple):
    """What an envelope says about itself, readable without a key."""

    format_version: int
    master_version: str
    fingerprint: bytes
    nonce: bytes
    size: int
    """Length of the header in bytes; the ciphertext and tag follow."""

    @property
    def key_id(self) -> str:
        """The tenant key id, as `status.secretRef.keyId` shows it."""
        return tenant_keys.format_key_id(self.master_version, self.fingerprint)


def _as_bytes(envelope: bytes) -> bytes:
    if not isinstance(envelope, bytes | bytearray | memoryview):
        raise TypeError("an envelope is bytes")
    return bytes(envelope)


def parse_header(envelope: bytes) -> Header:
    """Read an envelope's header; `MalformedCiphertextError` if it is not an envelope of ours."""
    return _parse(_as_bytes(envelope))


def _parse(envelope: bytes) -> Header:
    if len(envelope) < _FIXED_HEADER:
        raise errors.MalformedCiphertextError(
            f"{len(envelope)} bytes is too short to be a Tenantry envelope")
    if envelope[:len(MAGIC)] != MAGIC:
        raise errors.MalformedCiphertextError("not a Tenantry envelope (wrong magic bytes)")
    format_version = envelope[len(MAGIC)]
    if format_version not in SUPPORTED_FORMATS:
        raise errors.UnsupportedFormatError("envelope", format_version, SUPPORTED_FORMATS)
    name_end = _FIXED_HEADER + envelope[len(MAGIC) + 1]
    size = name_end + tenant_keys.FINGERPRINT_SIZE + NONCE_SIZE
    if len(envelope) < size + TAG_SIZE:
        raise errors.MalformedCiphertextError(
            f"envelope is truncated: {len(envelope)} bytes, at least {size + TAG_SIZE} expected")
    name = envelope[_FIXED_HEADER:name_end].decode("ascii", "replace")
    if not keyring.VERSION_PATTERN.match(name):
        raise errors.MalformedCiphertextError("envelope header holds an invalid key version name")
    return Header(format_version, name, envelope[name_end:name_end + tenant_keys.FINGERPRINT_SIZE],
                  envelope[size - NONCE_SIZE:size], size)


def _header_bytes(master_version: str, fingerprint: bytes, nonce: bytes) -> bytes:
    name = master_version.encode("ascii")
    return MAGIC + bytes((FORMAT_V2, len(name))) + name + fingerprint + nonce


def seal_value(ring: keyring.Keyring, context: Context, plaintext: bytes) -> bytes:
    """Encrypt one value under the tenant's key from the keyring's primary version, bound to
    the whole context including the Credential's UID (format 2)."""
    if not isinstance(plaintext, bytes | bytearray | memoryview):
        # No implicit str encoding: the caller decides (and knows) how text becomes bytes.
        raise TypeError("plaintext must be bytes")
    aad = context.encoded_v2  # refuses a context without the Credential UID, before any work
    key = tenant_keys.derive(ring, context.tenant_uid)
    # A fresh random 96-bit nonce per envelope. Each tenant key sees few encryptions (one per
    # field per rotation), far below the ~2**32 at which random GCM nonces start to collide.
    nonce = os.urandom(NONCE_SIZE)
    header = _header_bytes(key.master_version, key.fingerprint, nonce)
    return header + key.aead.encrypt(nonce, bytes(plaintext), header + aad)


def open_value(ring: keyring.Keyring, context: Context, envelope: bytes, *,
               allow_unbound: bool = False) -> bytes:
    """Decrypt an envelope under `context`; any `DecryptionError` means it cannot be trusted.

    A format 1 envelope (not bound to a Credential UID) is refused with `UnboundEnvelopeError`
    unless `allow_unbound` says the caller knows it comes from the Credential it was written for.
    """
    envelope = _as_bytes(envelope)
    header = _parse(envelope)
    if header.format_version == FORMAT_V1 and not allow_unbound:
        raise errors.UnboundEnvelopeError(
            f"envelope is format 1, not bound to a Credential UID, so it may belong to an "
            f"earlier Credential of the same name; it is not accepted as {context.describe()}")
    try:
        key = tenant_keys.derive(ring, context.tenant_uid, header.master_version)
    except errors.UnknownKeyVersionError:
        raise errors.KeyVersionUnavailableError(header.master_version, ring.versions) from None
    if not hmac.compare_digest(key.fingerprint, header.fingerprint):
        raise errors.KeyMismatchError(
            f"envelope is under key {header.key_id}, but tenant {context.tenant_uid} has key "
            f"{key.key_id} under master version {header.master_version!r}: it was encrypted "
            "for another tenant, or with a different keyring")
    try:
        return key.aead.decrypt(
            header.nonce, envelope[header.size:],
            envelope[:header.size] + context.aad(header.format_version))
    except InvalidTag:
        raise errors.AuthenticationError(
            f"envelope does not authenticate as {context.describe()}: it belongs to another "
            "namespace, credential (or an earlier one of the same name), field or generation, "
            "or it was modified") from None


def reencrypt(ring: keyring.Keyring, old_context: Context, new_context: Context,
              envelope: bytes, *, allow_unbound: bool = False) -> bytes:
    """Open under `old_context`, seal under `new_context` with the current primary version.

    Used by rotation (new master version, bumped generation, format 1 to 2) and nothing else
    needs it; the plaintext exists only for the duration of this call.
    """
    return seal_value(ring, new_context,
                      open_value(ring, old_context, envelope, allow_unbound=allow_unbound))
