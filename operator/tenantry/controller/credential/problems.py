"""Why a Credential is not Ready: the reasons its Ready condition can give (pure).

Reasons are CamelCase (metav1.Condition); messages say what is wrong and what to do, built only
from public values. Some problems go away without a spec change (a keyring file fixed, a Tenant
created, a source Secret applied after its Credential): the handler retries those with backoff.
The others wait for the spec to change, or for a person.
"""

from __future__ import annotations

import dataclasses
import enum


class Reason(enum.StrEnum):
    # Ready=True
    ENCRYPTED = "Encrypted"
    RESTORED = "Restored"
    # Ready=False
    KEYRING_UNAVAILABLE = "KeyringUnavailable"
    SEALING_KEY_UNAVAILABLE = "SealingKeyUnavailable"
    NAMESPACE_NOT_OWNED = "NamespaceNotOwned"
    UNKNOWN_TENANT = "UnknownTenant"
    INVALID_SPEC = "InvalidSpec"
    INVALID_SCOPE = "InvalidScope"
    BAD_SEAL = "BadSeal"
    SEAL_TARGET_MISMATCH = "SealTargetMismatch"
    SOURCE_SECRET_MISSING = "SourceSecretMissing"  # noqa: S105 - reasons, not secrets
    SOURCE_KEY_MISSING = "SourceKeyMissing"
    SOURCE_SECRET_REFUSED = "SourceSecretRefused"  # noqa: S105
    SOURCE_NOT_REMOVED = "SourceNotRemoved"
    TAMPER_DETECTED = "TamperDetected"
    KEY_VERSION_UNAVAILABLE = "KeyVersionUnavailable"
    TENANT_CHANGED = "TenantChanged"
    SECRET_CONFLICT = "SecretConflict"  # noqa: S105
    APPLY_FAILED = "ApplyFailed"
    SECRET_UNREADABLE = "SecretUnreadable"  # noqa: S105


# Problems that can resolve without a spec change; retried with backoff.
RETRYABLE = frozenset({
    Reason.KEYRING_UNAVAILABLE, Reason.SEALING_KEY_UNAVAILABLE, Reason.NAMESPACE_NOT_OWNED,
    Reason.UNKNOWN_TENANT, Reason.SOURCE_SECRET_MISSING, Reason.SOURCE_KEY_MISSING,
    Reason.SOURCE_NOT_REMOVED, Reason.KEY_VERSION_UNAVAILABLE, Reason.APPLY_FAILED,
    Reason.SECRET_UNREADABLE,
})


@dataclasses.dataclass(frozen=True)
class Problem:
    """Why the Credential is not Ready: a reason and a message naming only public values."""

    reason: Reason
    message: str

    @property
    def retry(self) -> bool:
        return self.reason in RETRYABLE
