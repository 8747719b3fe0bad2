"""Exceptions of the crypto core.

Messages name files, key versions, key ids and fingerprints (all public) and say what is wrong;
they never carry plaintext, key bytes or file contents, because exception text ends up in logs,
Events and status conditions. Every `raise` of these from a lower-level error uses `from None`
so the original exception (which might quote input) is not chained into tracebacks.
"""

from __future__ import annotations


class CryptoError(Exception):
    """Base of every error the crypto core raises on purpose."""


class KeyringError(CryptoError):
    """The keyring is missing, malformed, or an operation on it makes no sense."""


class UnknownKeyVersionError(KeyringError):
    """A master key version the keyring does not hold."""

    def __init__(self, version: str, known: tuple[str, ...]) -> None:
        self.version = version
        self.known = known
        super().__init__(
            f"master key version {version!r} is not in the keyring "
            f"(it holds: {', '.join(known) or 'nothing'})"
        )


class InvalidContextError(CryptoError, ValueError):
    """A context value (tenant UID, namespace, name, field, generation) is not acceptable."""


class ValueTooLargeError(CryptoError, ValueError):
    """A plaintext too large for where its ciphertext has to fit."""


class DecryptionError(CryptoError):
    """A ciphertext could not be opened. Catch this to handle every way opening can fail."""


class MalformedCiphertextError(DecryptionError):
    """The bytes are not a ciphertext of ours: too short, wrong magic, or a broken header."""


class UnsupportedFormatError(MalformedCiphertextError):
    """A format version this build does not know (written by a newer Tenantry, or corrupted)."""

    def __init__(self, what: str, version: int, supported: tuple[int, ...]) -> None:
        self.version = version
        super().__init__(
            f"{what} format version {version} is not supported "
            f"(this build reads: {', '.join(map(str, supported))})"
        )


class KeyVersionUnavailableError(DecryptionError):
    """The ciphertext needs a master key version that has been removed from the keyring."""

    def __init__(self, version: str, known: tuple[str, ...]) -> None:
        self.version = version
        super().__init__(
            f"ciphertext was encrypted under master key version {version!r}, which the keyring "
            f"no longer holds (it holds: {', '.join(known) or 'nothing'}); restore that version "
            "or re-encrypt from the source"
        )


class KeyMismatchError(DecryptionError):
    """The ciphertext names a key other than the one this context and keyring give."""


class AuthenticationError(DecryptionError):
    """The authentication tag did not verify: tampered, or opened under another context."""


class UnboundEnvelopeError(AuthenticationError):
    """A format 1 envelope, not bound to a Credential UID, where only a bound one will do."""


class SealingKeyError(CryptoError):
    """A sealing public or private key could not be loaded."""
