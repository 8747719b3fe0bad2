"""Who holds which role in which tenant (pure): the Tenant resource's `spec.members`, read the
way the operator's RoleBindings read it, so kubectl RBAC and the API agree by construction.

A member of kind User matches the signed-in user's login name (compared case-insensitively:
login names are stored lower-cased, see `passwords.normalise_username`); a member of kind Group
matches one of the session's groups (the identity provider's groups claim, with the provider's
prefix, exactly as the apiserver's OIDC authenticator would present them). ServiceAccount
members are workloads, not API users: they never match here. Someone matched by several
members holds the highest of their roles.

`Directory` is the API's view of every Tenant, kept current by `tenants.TenantWatch`; a role is
looked up on every request, so removing a member takes effect on that member's next request,
not when their token expires.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from tenantry.model.tenant import ROLE_RANK, Role, SubjectKind

_ROLES: Mapping[object, Role] = {role.value: role for role in Role}
RANK: Mapping[Role, int] = ROLE_RANK


def at_least(role: Role | None, minimum: Role) -> bool:
    """Whether `role` includes everything `minimum` may do."""
    return role is not None and RANK[role] >= RANK[minimum]


def lower(a: Role | None, b: Role | None) -> Role | None:
    """The lesser of two roles (None, no role, is the least)."""
    if a is None or b is None:
        return None
    return a if RANK[a] <= RANK[b] else b


@dataclasses.dataclass(frozen=True)
class Identity:
    """A signed-in user as memberships see it: login name and the session's groups."""

    username: str
    groups: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True)
class TenantMembers:
    """The part of a Tenant the API keeps: who is a member, with which role."""

    name: str
    uid: str
    """The Tenant's UID (what its Credentials' keys are bound to)."""
    users: Mapping[str, Role]
    """Lower-cased user name -> highest role granted to it by a User member."""
    groups: Mapping[str, Role]
    """Group name -> highest role granted to it by a Group member."""
    namespaces: tuple[str, ...] = ()
    """The namespaces the spec lists (held only where the namespace carries its label)."""

    def role_of(self, who: Identity) -> Role | None:
        found = [role for group, role in self.groups.items() if group in who.groups]
        as_user = self.users.get(who.username.lower())
        if as_user is not None:
            found.append(as_user)
        return max(found, key=RANK.__getitem__, default=None)


def _granted(entries: Iterable[tuple[str, Role]]) -> dict[str, Role]:
    granted: dict[str, Role] = {}
    for name, role in entries:
        if name not in granted or RANK[role] > RANK[granted[name]]:
            granted[name] = role
    return granted


def reduce_tenant(obj: Mapping[str, Any]) -> TenantMembers | None:
    """A Tenant object -> its members (None when it has no name). Members of an unknown kind
    or role are skipped (the CRD's schema refuses them; this is defence in depth)."""
    metadata = obj.get("metadata") or {}
    name, uid = metadata.get("name"), metadata.get("uid")
    if not isinstance(name, str) or not name:
        return None
    users: list[tuple[str, Role]] = []
    groups: list[tuple[str, Role]] = []
    for member in (obj.get("spec") or {}).get("members") or ():
        if not isinstance(member, Mapping):
            continue
        kind, subject, role = member.get("kind"), member.get("name"), member.get("role")
        if not isinstance(subject, str) or role not in _ROLES:
            continue
        if kind == SubjectKind.USER.value:
            users.append((subject.lower(), _ROLES[role]))
        elif kind == SubjectKind.GROUP.value:
            groups.append((subject, _ROLES[role]))
    namespaces = tuple(sorted({str(entry["name"]) for entry in (obj.get("spec") or {}).get(
        "namespaces") or () if isinstance(entry, Mapping) and isinstance(entry.get("name"), str)}))
    return TenantMembers(name=name, uid=uid if isinstance(uid, str) else "",
                         users=_granted(users), groups=_granted(groups), namespaces=namespaces)


@dataclasses.dataclass(frozen=True)
class Membership:
    tenant: str
    role: Role


class Directory:
    """Every Tenant's members, by tenant name (`items` is shared with the watch that fills it)."""

    def __init__(self, items: Mapping[str, TenantMembers] | None = None) -> None:
        self.items: Mapping[str, TenantMembers] = items if items is not None else {}

    def role(self, tenant: str, who: Identity) -> Role | None:
        members = self.items.get(tenant)
        return None if members is None else members.role_of(who)

    def memberships(self, who: Identity) -> list[Membership]:
        """Every tenant `who` holds a role in, by name."""
        found = []
        for name in sorted(self.items):
            role = self.items[name].role_of(who)
            if role is not None:
                found.append(Membership(tenant=name, role=role))
        return found

    def exists(self, tenant: str) -> bool:
        return tenant in self.items

    def get(self, tenant: str) -> TenantMembers | None:
        return self.items.get(tenant)
