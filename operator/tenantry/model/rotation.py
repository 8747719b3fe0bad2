"""The RotationPolicy resource (namespaced): what rotates, when, and how long old keys live.

Rotation runs as small steps coordinated through status conditions (add a key version, promote
it, re-encrypt, retire the old one), on a schedule and on demand (change `spec.trigger`).
Master-key and API-signing-key rotation are platform-wide, so only a policy in Tenantry's own
namespace may name them; the operator reports any other such policy in a condition.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from tenantry.model.common import Conditions, Duration, SpecModel, cel, k8s_schema

KIND = "RotationPolicy"
PLURAL = "rotationpolicies"
SINGULAR = "rotationpolicy"
SHORT_NAMES = ["rotp"]
MAX_TRIGGER = 128
# Set (by `tenantry keyring confirm-backup`) to `<version>:<check value>` once the keyring holding
# a new master key version is backed up: only then is that version promoted.
BACKUP_ANNOTATION = "tenantry.dev/backup-confirmed"

# Standard 5-field cron (minute hour day-of-month month day-of-week) or a macro.
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|hourly)|"
    r"([0-9*,/\-]+|\?)\s+([0-9*,/\-]+)\s+([0-9*,/\-?LW]+)\s+([0-9A-Za-z*,/\-]+)\s+"
    r"([0-9A-Za-z*,/\-?L#]+))$"
)


class Target(StrEnum):
    MASTER_KEY = "MasterKey"
    CREDENTIALS = "Credentials"
    API_SIGNING_KEYS = "ApiSigningKeys"
    WEBHOOK_CERTIFICATES = "WebhookCertificates"


class LabelSelector(SpecModel):
    match_labels: Annotated[dict[str, Annotated[str, Field(max_length=63)]], Field(
        default_factory=dict, max_length=16)]


class WebhookCertificatesSpec(SpecModel):
    """How a WebhookCertificates rotation goes."""

    rotate_ca: Annotated[bool, Field(
        alias="rotateCA",
        description="Also replace the webhook's CA: the new CA joins the caBundle first, the "
                    "serving certificate moves to it after the webhook's --ca-propagation, and "
                    "the old CA stays trusted until it expires.")] = False


class RotationPolicySpec(SpecModel):
    targets: Annotated[list[Target], Field(
        min_length=1, max_length=4, description="What this policy rotates.",
        json_schema_extra=k8s_schema(**{"x-kubernetes-list-type": "set"}))]
    schedule: Annotated[str | None, Field(
        max_length=128, pattern=CRON_PATTERN,
        description="Cron schedule (5 fields, UTC) or @daily/@weekly/@monthly...; "
                    "omit for on-demand only.")] = None
    trigger: Annotated[str | None, Field(
        max_length=MAX_TRIGGER,
        description="Change this value (e.g. to a timestamp) to rotate now.")] = None
    credential_selector: Annotated[LabelSelector | None, Field(
        description="Credentials (in this namespace) to re-encrypt; all when omitted.")] = None
    retain_previous: Annotated[int, Field(
        ge=0, le=10, description="MasterKey: how many of the newest old versions are kept "
                                 "even once unused; older ones are retired once no Credential "
                                 "uses them and the grace period has passed.")] = 1
    grace_period: Annotated[Duration, Field(
        description="MasterKey: how long an old version stays in the keyring, at least, after "
                    "it stopped being primary (and it stays while anything uses it).")] \
        = "24h"
    signing_key_overlap: Annotated[Duration, Field(
        description="ApiSigningKeys: how long the old signing key keeps verifying (and stays "
                    "in JWKS) once every API replica signs with the new one, then it is "
                    "removed. Keep it at least the longest token lifetime plus clock skew: "
                    "61m covers access tokens (15m), participant tokens (1h) and 60s of skew."
    )] = "61m"
    suspend: Annotated[bool, Field(description="Pause scheduled rotations.")] = False
    webhook_certificates: Annotated[WebhookCertificatesSpec | None, Field(
        description="WebhookCertificates: what to rotate besides the serving certificate.")] \
        = None


SPEC_VALIDATIONS = [
    cel("has(self.schedule) || has(self.trigger)",
        "set spec.schedule, spec.trigger or both: a policy with neither never rotates",
        reason="FieldValueRequired"),
    cel("!has(self.credentialSelector) || 'Credentials' in self.targets",
        "spec.credentialSelector needs 'Credentials' in spec.targets",
        reason="FieldValueInvalid", field_path=".credentialSelector"),
    cel("!has(self.webhookCertificates) || 'WebhookCertificates' in self.targets",
        "spec.webhookCertificates needs 'WebhookCertificates' in spec.targets",
        reason="FieldValueInvalid", field_path=".webhookCertificates"),
]


class RotationRecord(SpecModel):
    time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    target: Target
    from_version: Annotated[str | None, Field(max_length=128)] = None
    to_version: Annotated[str | None, Field(max_length=128)] = None
    result: Annotated[str, Field(max_length=64)]
    reencrypted: Annotated[int, Field(ge=0)] = 0
    message: Annotated[str, Field(max_length=1024)] = ""


class Progress(SpecModel):
    """How far the current (or last) rotation got: `reencrypted/total`, and how many failed."""

    reencrypted: Annotated[int, Field(ge=0)] = 0
    total: Annotated[int, Field(ge=0)] = 0
    failed: Annotated[int, Field(ge=0)] = 0
    skipped: Annotated[int, Field(
        ge=0, description="Already under the target version: not rewritten.")] = 0


class CredentialFailure(SpecModel):
    """A Credential a rotation could not re-encrypt (it does not block the others)."""

    name: Annotated[str, Field(max_length=253)]
    reason: Annotated[str, Field(max_length=128)]
    message: Annotated[str, Field(max_length=1024)] = ""


class ActiveRotation(SpecModel):
    """The rotation in progress: its checkpoint, so a restarted operator resumes it."""

    id: Annotated[str, Field(max_length=192, description="trigger:<value> or schedule:<time>.")]
    target: Target
    started_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    to_version: Annotated[str, Field(max_length=128)]
    from_versions: Annotated[list[Annotated[str, Field(max_length=32)]], Field(
        default_factory=list, max_length=16,
        description="Versions the selected Credentials were under when it started.")]
    checkpoint: Annotated[str | None, Field(
        max_length=253,
        description="Name of the last Credential handled (they are handled in name order).")] \
        = None


class KeyStep(StrEnum):
    """Where a master key rotation stands before its re-encryption."""

    ADDING = "Adding"
    AWAITING_BACKUP = "AwaitingBackup"
    PROMOTING = "Promoting"


VersionName = Annotated[str, Field(max_length=32)]
Time = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class KeyRotation(SpecModel):
    """A MasterKey rotation's key steps: add a version, wait for its backup, promote it (the
    re-encryption that follows is `status.rotation`)."""

    id: Annotated[str, Field(max_length=192, description="trigger:<value> or schedule:<time>.")]
    step: KeyStep
    started_time: Time
    from_version: VersionName
    new_version: VersionName
    check_value: Annotated[str | None, Field(
        max_length=64, description="Key check value of the new version (not the key): what "
                                   "`tenantry keyring confirm-backup` compares a backup with.")] \
        = None


class MasterKeyStatus(SpecModel):
    """The keyring as a MasterKey policy sees it (versions and check values, never keys)."""

    rotation: Annotated[KeyRotation | None, Field(
        description="The key steps in progress, absent when none are.")] = None
    primary: Annotated[str | None, Field(max_length=32)] = None
    versions: Annotated[list[VersionName], Field(
        default_factory=list, max_length=32,
        description="Versions in the keyring Secret, oldest first.")]
    check_values: Annotated[dict[str, Annotated[str, Field(max_length=64)]], Field(
        default_factory=dict, max_length=32, description="Version -> key check value.")]
    demoted: Annotated[dict[str, Time], Field(
        default_factory=dict, max_length=32,
        description="Version -> when it was first seen no longer primary (its grace period "
                    "starts then).")]
    retiring: Annotated[dict[str, Annotated[str, Field(max_length=256)]], Field(
        default_factory=dict, max_length=32,
        description="Old version -> why it is not retired yet.")]


Fingerprint = Annotated[str, Field(max_length=80)]


class WebhookCertStep(StrEnum):
    """Where a WebhookCertificates rotation stands."""

    REQUESTED = "Requested"
    AWAITING_CA_PROPAGATION = "AwaitingCaPropagation"


class WebhookCertRotation(SpecModel):
    """A WebhookCertificates rotation in progress: what the webhook was asked, and what it
    served from (serials and fingerprints, never keys)."""

    id: Annotated[str, Field(max_length=192, description="trigger:<value> or schedule:<time>.")]
    request: Annotated[str, Field(
        max_length=253,
        description="The request id written to ConfigMap tenantry-webhook-rotation.")]
    started_time: Time
    step: WebhookCertStep = WebhookCertStep.REQUESTED
    rotate_ca: Annotated[bool, Field(alias="rotateCA")] = False
    from_serial: Annotated[str, Field(max_length=64)]
    from_ca: Annotated[Fingerprint, Field(alias="fromCA")]
    requests: Annotated[int, Field(
        ge=1, description="How many times it was asked (again when the webhook claimed it "
                          "served without a new certificate).")] = 1


class WebhookCertificatesStatus(SpecModel):
    """The webhook's certificates as it publishes them (public facts only)."""

    rotation: Annotated[WebhookCertRotation | None, Field(
        description="The rotation in progress, absent when none is.")] = None
    serving_serial: Annotated[str | None, Field(
        max_length=64, description="Serial of the serving certificate (openssl's hex).")] = None
    serving_not_after: Time | None = None
    ca: Annotated[Fingerprint | None, Field(
        description="SHA-256 fingerprint of the CA that signs serving certificates.")] = None
    trusted: Annotated[list[Fingerprint], Field(
        default_factory=list, max_length=8,
        description="Fingerprints of every CA in the caBundle, the signing one first.")]


class SigningStep(StrEnum):
    """Where an ApiSigningKeys rotation stands."""

    PUBLISHING = "Publishing"
    PROMOTING = "Promoting"


class SigningRotation(SpecModel):
    """An ApiSigningKeys rotation in progress: a new key published, then signing."""

    id: Annotated[str, Field(max_length=192, description="trigger:<value> or schedule:<time>.")]
    step: SigningStep
    started_time: Time
    from_version: VersionName
    new_version: VersionName
    new_kid: Annotated[str | None, Field(
        max_length=64, description="The new key's kid (RFC 7638 thumbprint), once published.")] \
        = None


class SigningKeysStatus(SpecModel):
    """The API's signing keyring as an ApiSigningKeys policy sees it (versions and kids, never
    keys) and what the API replicas hold."""

    rotation: Annotated[SigningRotation | None, Field(
        description="The rotation in progress, absent when none is.")] = None
    signing: Annotated[str | None, Field(max_length=32)] = None
    kids: Annotated[dict[str, Annotated[str, Field(max_length=64)]], Field(
        default_factory=dict, max_length=32,
        description="Version in Secret tenantry-api-signing-keys -> kid, oldest first.")]
    demoted: Annotated[dict[str, Time], Field(
        default_factory=dict, max_length=32,
        description="Version -> when every API replica was first seen signing with another "
                    "(its spec.signingKeyOverlap starts then).")]
    retiring: Annotated[dict[str, Annotated[str, Field(max_length=256)]], Field(
        default_factory=dict, max_length=32,
        description="Old version -> why it is not removed yet.")]
    replicas: Annotated[int, Field(
        ge=0, description="API replicas with a fresh identity Lease at the last step.")] = 0


class RotationPolicyStatus(SpecModel):
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    conditions: Conditions
    rotation: Annotated[ActiveRotation | None, Field(
        description="The rotation in progress, absent when none is.")] = None
    progress: Annotated[Progress | None, Field(
        description="Progress of the current or last rotation.")] = None
    failures: Annotated[list[CredentialFailure], Field(
        default_factory=list, max_length=50,
        description="Credentials the current or last rotation could not re-encrypt.")]
    versions_in_use: Annotated[dict[str, Annotated[int, Field(ge=0)]], Field(
        default_factory=dict, max_length=32,
        description="Master key version -> how many selected Credentials are under it.")]
    last_rotation_time: Annotated[str | None, Field(json_schema_extra={"format": "date-time"})] \
        = None
    next_rotation_time: Annotated[str | None, Field(json_schema_extra={"format": "date-time"})] \
        = None
    last_handled_trigger: Annotated[str | None, Field(max_length=128)] = None
    current_versions: Annotated[dict[str, Annotated[str, Field(max_length=128)]], Field(
        default_factory=dict, max_length=8, description="Target -> active version.")]
    history: Annotated[list[RotationRecord], Field(
        default_factory=list, max_length=20, description="Most recent rotations, newest first.")]
    master_key: Annotated[MasterKeyStatus | None, Field(
        description="MasterKey target: key steps, versions, retirement.")] = None
    signing_keys: Annotated[SigningKeysStatus | None, Field(
        description="ApiSigningKeys target: key steps, versions, replicas, retirement.")] = None
    webhook_certificates: Annotated[WebhookCertificatesStatus | None, Field(
        description="WebhookCertificates target: the rotation in progress, the certificates.")] \
        = None


PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Ready", "type": "string",
     "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "Targets", "type": "string", "jsonPath": ".spec.targets"},
    {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
    {"name": "Reencrypted", "type": "integer", "jsonPath": ".status.progress.reencrypted",
     "priority": 1},
    {"name": "Total", "type": "integer", "jsonPath": ".status.progress.total", "priority": 1},
    {"name": "Last-Rotation", "type": "date", "jsonPath": ".status.lastRotationTime"},
    {"name": "Next-Rotation", "type": "date", "jsonPath": ".status.nextRotationTime",
     "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
