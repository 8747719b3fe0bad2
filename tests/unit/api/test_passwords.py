"""Password hashing: Argon2id (OWASP), bcrypt imports re-hashed, 72-byte rule, unknown users."""

from __future__ import annotations

from typing import Any

import argon2
import bcrypt
import pytest

from tenantry.api import passwords

PASSWORD = "correct horse battery staple"


class SpyHasher(argon2.PasswordHasher):
    """The OWASP hasher, recording which hashes it verified against."""

    def __init__(self) -> None:
        base = passwords.owasp_hasher()
        super().__init__(time_cost=base.time_cost, memory_cost=base.memory_cost,
                         parallelism=base.parallelism, hash_len=base.hash_len,
                         salt_len=base.salt_len, type=base.type)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified.append(hash if isinstance(hash, str) else hash.decode())
        return bool(super().verify(hash, password))


@pytest.fixture(scope="module")
def spy() -> SpyHasher:
    return SpyHasher()


@pytest.fixture(scope="module")
def pw(spy: SpyHasher) -> passwords.Passwords:
    return passwords.Passwords(spy)


def test_new_hashes_are_argon2id_with_owasp_parameters(pw: passwords.Passwords) -> None:
    hashed = pw.hash(PASSWORD)
    params = argon2.extract_parameters(hashed)
    assert hashed.startswith("$argon2id$")
    assert (params.memory_cost, params.time_cost, params.parallelism) == (19456, 2, 1)
    assert pw.verify(hashed, PASSWORD) == passwords.Verdict(ok=True, rehash=False)


def test_wrong_password_is_refused(pw: passwords.Passwords) -> None:
    assert not pw.verify(pw.hash(PASSWORD), PASSWORD + "!").ok


def test_unknown_user_takes_the_full_argon2_path(pw: passwords.Passwords,
                                                 spy: SpyHasher) -> None:
    """No stored hash still costs one Argon2id verification (of the start-up dummy)."""
    spy.verified.clear()
    assert pw.verify(None, PASSWORD) == passwords.Verdict(ok=False)
    assert len(spy.verified) == 1
    params = argon2.extract_parameters(spy.verified[0])
    assert (params.memory_cost, params.time_cost) == (19456, 2)


def test_weaker_argon2_hash_verifies_and_asks_for_a_rehash(pw: passwords.Passwords) -> None:
    weak = argon2.PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORD)
    assert pw.verify(weak, PASSWORD) == passwords.Verdict(ok=True, rehash=True)


@pytest.mark.parametrize("prefix", ["2a", "2b", "2y"])
def test_imported_bcrypt_hash_verifies_and_asks_for_a_rehash(pw: passwords.Passwords,
                                                            prefix: str) -> None:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    hashed = f"${prefix}${hashed[4:]}"
    assert pw.verify(hashed, PASSWORD) == passwords.Verdict(ok=True, rehash=True)
    assert not pw.verify(hashed, "wrong password!").ok
    assert pw.rehash(PASSWORD).startswith("$argon2id$")


def test_bcrypt_over_72_bytes_is_refused_not_truncated(pw: passwords.Passwords,
                                                      spy: SpyHasher) -> None:
    """A truncating bcrypt would accept any password sharing the first 72 bytes."""
    first72 = "x" * 72
    truncating_hash = bcrypt.hashpw(first72.encode(), bcrypt.gensalt(rounds=4)).decode()
    assert pw.verify(truncating_hash, first72).ok
    spy.verified.clear()
    assert pw.verify(truncating_hash, first72 + "anything") == passwords.Verdict(ok=False)
    assert len(spy.verified) == 1, "the refusal costs the same work as a check"


def test_multibyte_password_counts_bytes_for_bcrypt(pw: passwords.Passwords) -> None:
    password = "é" * 37  # 37 characters, 74 UTF-8 bytes
    hashed = bcrypt.hashpw(password.encode()[:72], bcrypt.gensalt(rounds=4)).decode()
    assert not pw.verify(hashed, password).ok


def test_argon2_has_no_72_byte_limit(pw: passwords.Passwords) -> None:
    long = "y" * 100
    hashed = pw.hash(long)
    assert pw.verify(hashed, long).ok
    assert not pw.verify(hashed, "y" * 72).ok


def test_overlong_password_is_refused_with_the_same_work(pw: passwords.Passwords,
                                                        spy: SpyHasher) -> None:
    spy.verified.clear()
    assert not pw.verify(pw.hash(PASSWORD), "z" * (passwords.MAX_PASSWORD_BYTES + 1)).ok
    assert len(spy.verified) == 1


def test_malformed_stored_hashes_are_a_refusal(pw: passwords.Passwords) -> None:
    for broken in ("$2b$04$short", "$argon2id$v=19$garbage", "plain"):
        assert not pw.verify(broken, PASSWORD).ok


def test_passwords_are_nfkc_normalised(pw: passwords.Passwords) -> None:
    composed, decomposed = "caf\u00e9 au lait!", "cafe\u0301 au lait!"
    assert pw.verify(pw.hash(composed), decomposed).ok


@pytest.mark.parametrize(("password", "rule"), [
    ("short", "at least 12"), ("a" * 1025, "at most 1024"), ("twelve chars\n", "control")])
def test_new_passwords_must_follow_the_rules(pw: passwords.Passwords, password: str,
                                             rule: str) -> None:
    with pytest.raises(passwords.WeakPassword, match=rule):
        pw.hash(password)


def test_usernames_are_normalised() -> None:
    assert passwords.normalise_username("  Alice@ACME.example ") == "alice@acme.example"


def test_hash_never_contains_the_password(pw: passwords.Passwords) -> None:
    hashed: Any = pw.hash(PASSWORD)
    assert PASSWORD not in hashed
