"""Canonical byte encodings for what gets authenticated (AAD) and derived (HKDF info).

Every variable part is length-prefixed, so two different contexts can never encode to the same
bytes: joining strings ("ns-a" + "b" vs "ns-" + "ab") would be ambiguous, a prefix is not.
"""

from __future__ import annotations

import struct

from tenantry.crypto import errors

# Kubernetes names are at most 253 bytes; the limit only has to keep the u16 prefix honest.
MAX_TEXT_BYTES = 253
# metadata.generation and our encryption generation are int64 on the wire and never negative.
MAX_GENERATION = 2**63 - 1


def text(what: str, value: str) -> bytes:
    """One non-empty UTF-8 string, prefixed with its length (u16, big-endian)."""
    if not isinstance(value, str) or not value:
        raise errors.InvalidContextError(f"{what} must be a non-empty string")
    raw = value.encode("utf-8")
    if len(raw) > MAX_TEXT_BYTES:
        raise errors.InvalidContextError(
            f"{what} is {len(raw)} bytes long; at most {MAX_TEXT_BYTES} are allowed")
    return struct.pack(">H", len(raw)) + raw


def generation(value: int) -> bytes:
    """A generation counter as a fixed-width u64, big-endian."""
    # bool is an int subclass; True as a generation is certainly a bug at the call site.
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.InvalidContextError("generation must be an integer")
    if not 0 <= value <= MAX_GENERATION:
        raise errors.InvalidContextError(
            f"generation must be between 0 and {MAX_GENERATION}, got {value}")
    return struct.pack(">Q", value)
