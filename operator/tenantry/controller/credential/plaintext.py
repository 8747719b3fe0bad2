"""A plaintext credential value in memory, wrapped so it cannot leak by accident (pure).

`repr()` and `str()` say only how long it is, so a Plaintext that ends up in a log line, an
exception, a dataclass repr or a pytest assertion message shows no content. Equality is
constant-time. `reveal()` is the one way to the bytes, and only encryption calls it.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping


class Plaintext:
    """One credential value. Immutable; never printable."""

    __slots__ = ("_value",)

    _value: bytes

    def __init__(self, value: bytes | bytearray | memoryview) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError("a plaintext is bytes")
        object.__setattr__(self, "_value", bytes(value))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Plaintext is immutable")

    def reveal(self) -> bytes:
        """The bytes themselves: for encryption only, never for messages."""
        return self._value

    def __len__(self) -> int:
        return len(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Plaintext):
            return NotImplemented
        return hmac.compare_digest(self._value, other._value)

    def __hash__(self) -> int:
        # Hashing would make the value guessable through dict timing; nobody needs it.
        raise TypeError("Plaintext is not hashable")

    def __repr__(self) -> str:
        return f"Plaintext(<{len(self._value)} bytes>)"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("Plaintext cannot be pickled")


Fields = Mapping[str, Plaintext]
"""Field name -> value, as a Credential holds them."""


def same(a: Fields, b: Fields) -> bool:
    """Whether two sets of fields hold the same names and values (values compared in constant
    time; names are public)."""
    if set(a) != set(b):
        return False
    # Compare every field even after a mismatch: how many fields match is nobody's business.
    return all([a[name] == b[name] for name in sorted(a)])
