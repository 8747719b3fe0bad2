"""Which local user an external identity signs in as. Pure; `store.oauth_user` applies it.

An identity is (provider name, `sub`): once linked, it always signs in as the same user, whatever
its e-mail becomes. A first sign-in links it, by the provider's `users` setting:

- `email` (default): the provider must say the e-mail is verified (`email_verified: true`);
  the user whose login name is that address is linked (created if absent, without a password).
  An unverified or missing e-mail is refused, never linked, never used to create a user: at a
  provider that lets anyone claim any address, it would be an account takeover or a squatted
  name. A user holds at most one identity per provider (a second `sub` presenting the same
  address, e.g. a recycled mailbox, is refused, `store.IdentityConflict`).
- `sub`: the address is not trusted at all; the user is `{provider}:{sub}` (a new, separate
  account, never an existing one), the sub hashed when it is not a lower-case login name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re

from tenantry.api import passwords
from tenantry.api.oauth.id_token import Identity
from tenantry.api.oauth.providers import Provider

_PLAIN_SUB = re.compile(r"^[a-z0-9._@+-]{1,200}$")


class NotLinkable(Exception):
    """This identity may not sign in; the message is safe to show."""


@dataclasses.dataclass(frozen=True)
class Plan:
    provider: str
    subject: str
    username: str
    """The user to link a new identity to (created if absent)."""


def plan(provider: Provider, identity: Identity) -> Plan:
    if provider.users == "sub":
        sub = identity.subject
        local = sub if _PLAIN_SUB.match(sub) else hashlib.sha256(sub.encode()).hexdigest()
        return Plan(provider.name, sub, f"{provider.name}:{local}")
    if identity.email is None or not identity.email_verified:
        raise NotLinkable("the identity provider did not verify an e-mail address for this "
                          "account")
    username = passwords.normalise_username(identity.email)
    if not 0 < len(username) <= 254 or any(c.isspace() for c in username) or "@" not in username:
        raise NotLinkable("the identity provider's e-mail address is not a usable login name")
    return Plan(provider.name, identity.subject, username)
