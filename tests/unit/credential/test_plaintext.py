"""Plaintext values cannot be printed, hashed or pickled by accident; they compare by value."""

from __future__ import annotations

import pickle

import pytest

from tenantry.controller.credential.plaintext import Plaintext, same
from tests.unit.credential.conftest import OTHER_PLAINTEXT, PLAINTEXT


def test_repr_and_str_show_only_the_length() -> None:
    value = Plaintext(PLAINTEXT)

    for shown in (repr(value), str(value), f"{value}", repr({"token": value}),
                  repr([value])):
        assert PLAINTEXT.decode() not in shown
    assert repr(value) == f"Plaintext(<{len(PLAINTEXT)} bytes>)"


def test_reveal_gives_the_bytes_back() -> None:
    assert Plaintext(bytearray(PLAINTEXT)).reveal() == PLAINTEXT


def test_equality_is_by_value() -> None:
    assert Plaintext(PLAINTEXT) == Plaintext(PLAINTEXT)
    assert Plaintext(PLAINTEXT) != Plaintext(OTHER_PLAINTEXT)


def test_cannot_be_hashed_pickled_or_changed() -> None:
    value = Plaintext(PLAINTEXT)
    with pytest.raises(TypeError):
        hash(value)
    with pytest.raises(TypeError):
        pickle.dumps(value)
    with pytest.raises(AttributeError):
        value._value = b"x"


def test_only_bytes_are_accepted() -> None:
    with pytest.raises(TypeError):
        Plaintext("text")  # type: ignore[arg-type]


def test_same_compares_names_and_values() -> None:
    a = {"user": Plaintext(b"u"), "token": Plaintext(PLAINTEXT)}

    assert same(a, {"token": Plaintext(PLAINTEXT), "user": Plaintext(b"u")})
    assert not same(a, {"token": Plaintext(PLAINTEXT)})
    assert not same(a, {"user": Plaintext(b"u"), "token": Plaintext(OTHER_PLAINTEXT)})
