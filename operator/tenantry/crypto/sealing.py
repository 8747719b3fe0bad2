"""Sealing for GitOps: encrypt a value offline to the operator's public key, safe to commit.

Hybrid encryption in the manner of HPKE (RFC 9180), from `cryptography`'s primitives:

    ephemeral X25519 key pair per value;  shared = X25519(ephemeral, operator public key)
    key || nonce = HKDF-SHA256(shared, info = label || ephemeral pub || operator pub, 44 bytes)
    ciphertext = AES-256-GCM(key, nonce, plaintext, AAD = header || namespace, name, field)

Every value gets its own ephemeral key and so its own AES key, which is why the nonce can be
derived rather than random: a key is used exactly once. Both public keys go into the derivation,
binding the value to the operator key it was sealed for. The target namespace, Credential name
and field go into the AAD (length-prefixed), so a sealed value pasted into another namespace,
another Credential or another field does not open.

Sealed format version 1, then standard padded base64 (what `spec.sealed.encryptedData` takes)::

    offset  size  content
    0       2     magic "TS"
    2       1     format version (1)
    3       8     recipient hint: first 8 bytes of SHA-256(operator public key)
    11      32    ephemeral X25519 public key
    43      ...   ciphertext, then the 16-byte GCM tag

The recipient hint lets the operator say "sealed for another key" (e.g. another cluster's)
instead of a bare authentication failure, and pick among several keys after a key rotation.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import functools
import hashlib
import hmac

from cryptography.exceptions import InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tenantry.crypto import errors, framing, tenant_keys

MAGIC = b"TS"
FORMAT_V1 = 1
SUPPORTED_FORMATS = (FORMAT_V1,)
HINT_SIZE = 8
PUBLIC_KEY_SIZE = 32
TAG_SIZE = 16
HEADER_SIZE = len(MAGIC) + 1 + HINT_SIZE + PUBLIC_KEY_SIZE
KDF_INFO_LABEL = b"tenantry/seal-key/v1\x00"
AAD_LABEL = b"tenantry/seal-aad/v1\x00"
_KEY_SIZE = 32
_NONCE_SIZE = 12
# The CRD caps each `spec.sealed.encryptedData` value at 65536 base64 characters.
MAX_SEALED_CHARS = 65536
MAX_PLAINTEXT = MAX_SEALED_CHARS // 4 * 3 - HEADER_SIZE - TAG_SIZE


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a sealed value may be applied: one field of one Credential in one namespace."""

    namespace: str
    name: str
    """The Credential's name."""
    field: str
    """The key in `spec.sealed.encryptedData`."""

    def __post_init__(self) -> None:
        self.encoded  # noqa: B018 - validate every part now, not at first use

    @functools.cached_property
    def encoded(self) -> bytes:
        """The canonical, length-prefixed encoding that goes into the AAD."""
        return b"".join((
            AAD_LABEL,
            framing.text("namespace", self.namespace),
            framing.text("credential name", self.name),
            framing.text("field name", self.field),
        ))


# -- keys --------------------------------------------------------------------------------------

def generate_private_key() -> x25519.X25519PrivateKey:
    """A new operator sealing key."""
    return x25519.X25519PrivateKey.generate()


def private_key_to_pem(key: x25519.X25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: for a Secret, never for Git."""
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def load_private_key(data: bytes | str) -> x25519.X25519PrivateKey:
    """The operator's sealing key from unencrypted PKCS#8 PEM."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    try:
        key = serialization.load_pem_private_key(raw, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # The underlying message can quote the input; say only what was expected.
        raise errors.SealingKeyError(
            "not an unencrypted PEM (PKCS#8) X25519 private key") from None
    if not isinstance(key, x25519.X25519PrivateKey):
        raise errors.SealingKeyError(
            f"the PEM holds a {type(key).__name__}; sealing uses an X25519 key")
    return key


def public_key_to_pem(key: x25519.X25519PublicKey) -> bytes:
    """SubjectPublicKeyInfo PEM: what the operator publishes and `tenantry seal` reads."""
    return key.public_bytes(serialization.Encoding.PEM,
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def public_key_to_base64(key: x25519.X25519PublicKey) -> str:
    """The raw 32-byte public key in standard base64: one line, handy for env vars and flags."""
    return base64.b64encode(_raw_public(key)).decode("ascii")


def load_public_key(data: bytes | str) -> x25519.X25519PublicKey:
    """An operator public key from PEM or from base64 of the raw 32 bytes."""
    raw = data.encode("ascii", "replace") if isinstance(data, str) else data
    raw = raw.strip()
    if raw.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(raw)
        except (ValueError, UnsupportedAlgorithm):
            raise errors.SealingKeyError("not a valid PEM public key") from None
        if not isinstance(key, x25519.X25519PublicKey):
            raise errors.SealingKeyError(
                f"the PEM holds a {type(key).__name__}; sealing uses an X25519 key")
        return key
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        decoded = b""
    if len(decoded) != PUBLIC_KEY_SIZE:
        raise errors.SealingKeyError(
            "not a PEM public key, nor base64 of a 32-byte X25519 public key")
    return x25519.X25519PublicKey.from_public_bytes(decoded)


def _raw_public(key: x25519.X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _hint(key: x25519.X25519PublicKey) -> bytes:
    return hashlib.sha256(_raw_public(key)).digest()[:HINT_SIZE]


def fingerprint(key: x25519.X25519PublicKey | x25519.X25519PrivateKey) -> str:
    """`sha256:<hex>` of the raw public key: compare it before trusting a fetched key."""
    public = key.public_key() if isinstance(key, x25519.X25519PrivateKey) else key
    return "sha256:" + hashlib.sha256(_raw_public(public)).hexdigest()


# -- sealing -----------------------------------------------------------------------------------

def _key_and_nonce(shared: bytes, ephemeral: bytes, recipient: bytes) -> tuple[bytes, bytes]:
    okm = tenant_keys.hkdf_sha256(shared, salt=None, info=KDF_INFO_LABEL + ephemeral + recipient,
                                  length=_KEY_SIZE + _NONCE_SIZE)
    return okm[:_KEY_SIZE], okm[_KEY_SIZE:]


def seal(public_key: x25519.X25519PublicKey, target: Target, plaintext: bytes) -> str:
    """Encrypt `plaintext` for the holder of `public_key`, to be applied only at `target`."""
    if not isinstance(plaintext, bytes | bytearray | memoryview):
        raise TypeError("plaintext must be bytes")
    if len(plaintext) > MAX_PLAINTEXT:
        raise errors.ValueTooLargeError(
            f"value is {len(plaintext)} bytes; a sealed Credential field holds at most "
            f"{MAX_PLAINTEXT} bytes")
    ephemeral = x25519.X25519PrivateKey.generate()
    ephemeral_public = _raw_public(ephemeral.public_key())
    key, nonce = _key_and_nonce(ephemeral.exchange(public_key), ephemeral_public,
                                _raw_public(public_key))
    header = MAGIC + bytes((FORMAT_V1,)) + _hint(public_key) + ephemeral_public
    sealed = header + AESGCM(key).encrypt(nonce, bytes(plaintext), header + target.encoded)
    return base64.b64encode(sealed).decode("ascii")


def _decode(sealed: str | bytes) -> bytes:
    text = sealed.decode("ascii", "replace") if isinstance(sealed, bytes) else sealed
    text = text.strip()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = None
    # Only the canonical encoding is accepted, so any edit of the text is an edit of the bytes.
    if raw is None or base64.b64encode(raw).decode("ascii") != text:
        raise errors.MalformedCiphertextError("sealed value is not standard padded base64")
    return raw


def recipient_hint(sealed: str | bytes) -> str:
    """Hex prefix of the fingerprint of the key a value was sealed for (no key needed)."""
    raw = _decode(sealed)
    _check_header(raw)
    return raw[len(MAGIC) + 1:len(MAGIC) + 1 + HINT_SIZE].hex()


def _check_header(raw: bytes) -> None:
    if len(raw) < len(MAGIC) + 1 or raw[:len(MAGIC)] != MAGIC:
        raise errors.MalformedCiphertextError(
            "not a value sealed by `tenantry seal` (wrong magic bytes)")
    if raw[len(MAGIC)] not in SUPPORTED_FORMATS:
        raise errors.UnsupportedFormatError("sealed value", raw[len(MAGIC)], SUPPORTED_FORMATS)
    if len(raw) < HEADER_SIZE + TAG_SIZE:
        raise errors.MalformedCiphertextError(
            f"sealed value is truncated: {len(raw)} bytes, at least {HEADER_SIZE + TAG_SIZE} "
            "expected")


def unseal(private_key: x25519.X25519PrivateKey, target: Target, sealed: str | bytes) -> bytes:
    """Decrypt a sealed value applied at `target`; any `DecryptionError` means refuse it."""
    raw = _decode(sealed)
    _check_header(raw)
    hint_at = len(MAGIC) + 1
    public = private_key.public_key()
    if not hmac.compare_digest(raw[hint_at:hint_at + HINT_SIZE], _hint(public)):
        raise errors.KeyMismatchError(
            f"value was sealed for key {raw[hint_at:hint_at + HINT_SIZE].hex()}..., not for this "
            f"operator's key {fingerprint(public)}; seal it again with this cluster's key "
            "(`tenantry seal --fetch-key`)")
    ephemeral_public = raw[hint_at + HINT_SIZE:HEADER_SIZE]
    try:
        shared = private_key.exchange(x25519.X25519PublicKey.from_public_bytes(ephemeral_public))
    except ValueError:
        # A low-order point gives an all-zero secret, which `cryptography` refuses.
        raise errors.MalformedCiphertextError("sealed value holds an invalid ephemeral key") \
            from None
    key, nonce = _key_and_nonce(shared, ephemeral_public, _raw_public(public))
    try:
        return AESGCM(key).decrypt(nonce, raw[HEADER_SIZE:], raw[:HEADER_SIZE] + target.encoded)
    except InvalidTag:
        raise errors.AuthenticationError(
            f"sealed value does not open as field {target.field!r} of Credential "
            f"{target.namespace}/{target.name}: it was sealed for another namespace, name or "
            "field, or it was modified") from None
