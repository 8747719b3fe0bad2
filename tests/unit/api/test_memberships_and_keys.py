"""Pure parts of who-may-do-what: roles from Tenant members, and the API key format."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tenantry.api import apikeys, memberships
from tenantry.api.memberships import Identity
from tenantry.model.tenant import Role


def tenant(*members: dict[str, str], name: str = "acme") -> memberships.TenantMembers:
    reduced = memberships.reduce_tenant({"metadata": {"name": name},
                                         "spec": {"members": list(members)}})
    assert reduced is not None
    return reduced


def test_user_and_group_members_give_the_highest_role() -> None:
    acme = tenant({"kind": "User", "name": "Alice@Acme.Example", "role": "viewer"},
                  {"kind": "Group", "name": "oidc:devs", "role": "admin"},
                  {"kind": "User", "name": "alice@acme.example", "role": "member"})
    assert acme.role_of(Identity("alice@acme.example")) is Role.MEMBER
    assert acme.role_of(Identity("alice@acme.example", frozenset({"oidc:devs"}))) is Role.ADMIN
    assert acme.role_of(Identity("bob@acme.example", frozenset({"oidc:devs"}))) is Role.ADMIN
    assert acme.role_of(Identity("bob@acme.example", frozenset({"devs"}))) is None


def test_service_accounts_and_unknown_members_never_match_api_users() -> None:
    acme = tenant({"kind": "ServiceAccount", "name": "ci", "namespace": "acme", "role": "owner"},
                  {"kind": "User", "name": "ci", "role": "superuser"},
                  {"kind": "Robot", "name": "ci", "role": "owner"})
    assert acme.role_of(Identity("ci")) is None
    assert acme.role_of(Identity("system:serviceaccount:acme:ci")) is None


def test_a_group_named_like_a_user_is_not_that_user() -> None:
    acme = tenant({"kind": "Group", "name": "alice@acme.example", "role": "owner"})
    assert acme.role_of(Identity("alice@acme.example")) is None


def test_directory_lists_memberships_by_tenant_name() -> None:
    directory = memberships.Directory({
        "b": tenant({"kind": "User", "name": "u", "role": "owner"}, name="b"),
        "a": tenant({"kind": "User", "name": "u", "role": "viewer"}, name="a"),
        "c": tenant({"kind": "User", "name": "v", "role": "owner"}, name="c")})
    assert [(m.tenant, m.role) for m in directory.memberships(Identity("u"))] == [
        ("a", Role.VIEWER), ("b", Role.OWNER)]
    assert directory.role("c", Identity("u")) is None
    assert directory.role("missing", Identity("u")) is None


def test_role_order() -> None:
    assert memberships.at_least(Role.OWNER, Role.ADMIN)
    assert not memberships.at_least(Role.MEMBER, Role.ADMIN)
    assert not memberships.at_least(None, Role.VIEWER)
    assert memberships.lower(Role.ADMIN, Role.VIEWER) is Role.VIEWER
    assert memberships.lower(Role.OWNER, None) is None


def test_a_tenant_without_a_name_is_not_kept() -> None:
    assert memberships.reduce_tenant({"metadata": {}, "spec": {}}) is None


def test_new_keys_are_well_formed_unique_and_prefixed() -> None:
    keys = [apikeys.new_key() for _ in range(200)]
    assert len({k.key for k in keys}) == 200
    for new in keys:
        assert new.key.startswith("tnt_") and len(new.key) == apikeys.LENGTH
        assert apikeys.well_formed(new.key)
        assert new.prefix == new.key[:12] and new.hash == apikeys.key_hash(new.key)
        assert new.key not in repr(new)


@given(st.integers(min_value=4, max_value=apikeys.LENGTH - 1),
       st.sampled_from(apikeys.ALPHABET))
def test_any_single_character_change_breaks_the_checksum(position: int, char: str) -> None:
    key = apikeys.new_key().key
    if key[position] == char:
        return
    changed = key[:position] + char + key[position + 1:]
    # CRC32 detects every single-character substitution.
    assert not apikeys.well_formed(changed)


@pytest.mark.parametrize("text", ["", "tnt_", "tnt_short", "ghp_" + "a" * 38,
                                  "tnt_" + "!" * 38, "tnt_" + "a" * 39])
def test_malformed_keys_are_refused(text: str) -> None:
    assert not apikeys.well_formed(text)
