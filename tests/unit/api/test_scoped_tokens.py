"""Scoped tokens (tickets, participant tokens): each kind only for itself, never an access
token, and every signature and lifetime rule of the access tokens."""

from __future__ import annotations

import time

import jwt
import pytest

from tenantry.api import participants
from tenantry.api.tokens import rfc7517, rfc9068, scoped

POLICY = rfc9068.Policy(issuer="tenantry-api", audience="tenantry-api")


@pytest.fixture(scope="module")
def keys() -> rfc7517.KeySet:
    return rfc7517.KeySet(signing=rfc7517.generate())


def test_each_kind_verifies_only_as_itself(keys: rfc7517.KeySet) -> None:
    now = int(time.time())
    ticket, _, _ = scoped.issue(keys, POLICY, scoped.TICKET, subject="u", ttl=30, now=now,
                                claims={"path": "/x"})
    token, _, _ = scoped.issue(keys, POLICY, scoped.PARTICIPANT, subject="u", ttl=60, now=now,
                               claims={"tenant": "t", "resource": "credentials/n/c",
                                       "role": "member"})
    assert scoped.verify(ticket, keys.verification_keys(), POLICY, scoped.TICKET)["path"] == "/x"
    for kind, wrong in ((scoped.PARTICIPANT, ticket), (scoped.TICKET, token)):
        with pytest.raises(rfc9068.TokenInvalid, match="type"):
            scoped.verify(wrong, keys.verification_keys(), POLICY, kind)
    for not_access in (ticket, token):
        with pytest.raises(rfc9068.TokenInvalid, match="typ"):
            rfc9068.verify(not_access, keys.verification_keys(), POLICY)


def test_lifetimes_are_bounded_and_expiry_enforced(keys: rfc7517.KeySet) -> None:
    with pytest.raises(ValueError, match="ttl"):
        scoped.issue(keys, POLICY, scoped.TICKET, subject="u", ttl=31, now=0, claims={})
    old, _, _ = scoped.issue(keys, POLICY, scoped.TICKET, subject="u", ttl=30,
                             now=int(time.time()) - 120, claims={})
    with pytest.raises(rfc9068.TokenInvalid, match="expired"):
        scoped.verify(old, keys.verification_keys(), POLICY, scoped.TICKET)
    # Hand-signed with a lifetime longer than the kind allows: refused even if unexpired.
    now = int(time.time())
    long = jwt.encode({"iss": POLICY.issuer, "aud": POLICY.audience, "sub": "u", "jti": "j",
                       "iat": now, "nbf": now, "exp": now + 7200},
                      keys.signing, algorithm="EdDSA",
                      headers={"typ": scoped.PARTICIPANT, "kid": keys.kid})
    with pytest.raises(rfc9068.TokenInvalid, match="lifetime"):
        scoped.verify(long, keys.verification_keys(), POLICY, scoped.PARTICIPANT)


def test_another_key_or_alg_none_is_refused(keys: rfc7517.KeySet) -> None:
    other = rfc7517.KeySet(signing=rfc7517.generate())
    now = int(time.time())
    foreign, _, _ = scoped.issue(other, POLICY, scoped.TICKET, subject="u", ttl=30, now=now,
                                 claims={})
    with pytest.raises(rfc9068.TokenInvalid, match="unknown key"):
        scoped.verify(foreign, keys.verification_keys(), POLICY, scoped.TICKET)
    unsigned = jwt.encode({"sub": "u"}, None, algorithm="none",
                          headers={"typ": scoped.TICKET, "kid": keys.kid})
    with pytest.raises(rfc9068.TokenInvalid, match="algorithm"):
        scoped.verify(unsigned, keys.verification_keys(), POLICY, scoped.TICKET)


@pytest.mark.parametrize(("resource", "parsed"), [
    ("credentials/acme/db", ("acme", "db")), ("credentials/acme/a.b-c", ("acme", "a.b-c")),
    ("credentials/Acme/db", None), ("secrets/acme/db", None), ("credentials/acme", None),
    ("credentials/acme/db/extra", None), ("credentials/../db", None)])
def test_resources_name_one_credential(resource: str, parsed: tuple[str, str] | None) -> None:
    assert participants.parse_resource(resource) == parsed
