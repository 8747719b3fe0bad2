"""Strip secret-looking values from a change summary before it reaches the ledger (pure).

The ledger is append-only: a secret written to it can never be removed. So the summary of what
changed is scrubbed on the way in, by two independent nets:

1. By key: a member whose name looks like it holds a secret (``password``, ``token``,
   ``apiKey``, ``clientSecret``, ``privateKey``, ``authorization``, ...) has its whole value
   replaced, whatever its type. Names that merely *refer* to a secret keep their value: those
   ending in ``id``, ``ref``, ``name``, ``prefix``, ``kind``, ``type``, ``version``, ``count``
   (``tokenId``, ``secretRef``, ``secretName``, ``apiKeyPrefix``, ``keyVersion``).
2. By value: strings that look like credentials wherever they appear — PEM private keys, JWTs,
   whole ``Bearer``/``Basic``/``token`` authorization values — are replaced, and a password
   inside a URL (``postgresql://user:pw@host``) is masked.

This is a safety net, not a licence: callers should summarise changes (field names, references,
sizes), never copy objects that may hold secret material.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

REDACTED = "[REDACTED]"

_SECRET_NAME = re.compile(
    r"pass(word|wd|phrase)?|pwd|secret|token|apikey|privatekey|accesskey|signingkey|sessionkey"
    r"|masterkey|encryptionkey|credential|authorization|cookie|plaintext|bearer"
)
_REFERENCE_SUFFIX = re.compile(r"(id|ids|ref|refs|name|names|prefix|kind|type|version|count)$")

# The value patterns run on untrusted strings up to the event size limit, so each is written to
# stay linear: a token may only start where a run of its characters starts (lookbehind), runs
# are matched possessively (no backtracking into them), and free-form parts are bounded.
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----")
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]++\.eyJ[A-Za-z0-9_-]++\.")
_AUTH_SCHEME = re.compile(r"\s*+(?:bearer|basic|token)\s++[A-Za-z0-9._~+/=-]{8,}+\s*+",
                          re.IGNORECASE)
_URL_PASSWORD = re.compile(
    r"(?P<head>(?<![a-zA-Z0-9+.-])[a-zA-Z][a-zA-Z0-9+.-]{0,31}://[^/\s:@]*+:)[^/\s@]++(?=@)")


def is_secret_key(name: str) -> bool:
    """Whether a member called `name` probably holds secret material."""
    # Compare on letters and digits only: api_key, apiKey, API-KEY and x-api-key look alike.
    folded = re.sub(r"[^a-z0-9]", "", name.lower())
    return bool(_SECRET_NAME.search(folded)) and not _REFERENCE_SUFFIX.search(folded)


def redact_string(value: str) -> str:
    """`value`, or REDACTED if it looks like a credential; URL passwords are masked."""
    if _PRIVATE_KEY.search(value) or _JWT.search(value) or _AUTH_SCHEME.fullmatch(value):
        return REDACTED
    return _URL_PASSWORD.sub(lambda m: m.group("head") + "***", value)


def redact(value: Any) -> Any:
    """A copy of the JSON value `value` with secret-looking members and strings replaced."""
    if isinstance(value, Mapping):
        return {
            key: REDACTED if isinstance(key, str) and is_secret_key(key) else redact(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact(item) for item in value]
    if isinstance(value, str):
        return redact_string(value)
    return value
