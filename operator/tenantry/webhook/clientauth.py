"""Who may send the webhook reviews: the apiserver, proven by its client certificate.

Without this, anyone who can reach the webhook's port can POST an AdmissionReview claiming any
`userInfo`, and the audit route appends that claim to the ledger as fact. Kubernetes lets the
apiserver present a client certificate to webhooks (an AdmissionConfiguration whose
WebhookAdmissionConfiguration names a kubeconfig; README, "Webhook client authentication"), so
the webhook asks for one in the TLS handshake and refuses admission POSTs without it.

Why `CERT_OPTIONAL` and not `CERT_REQUIRED`: /healthz and /readyz share the TLS port, and kubelet
probes present no certificate. The handshake still rejects a certificate that does not verify
against the client CA (a certificate of another CA never gets an HTTP answer at all); a
connection without one gets answers from the health routes only and HTTP 401 from every
admission route, and a verified certificate whose CN is not allowed gets HTTP 403.

The client CA file is re-read at every resync (with the serving certificate). OpenSSL can add
trusted CAs to a live context but not remove them, so a new CA is trusted at once, without a
restart; a CA removed from the file stays trusted until the process restarts (a rolling
restart of the Deployment).

The pure parts (`check_peer`, `read_ca_bundle`) are apart from the one stateful class,
`ClientCa`, which owns the SSL context's trust store.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography import x509

from tenantry.webhook import certs

logger = logging.getLogger(__name__)

REQUIRED = ("the apiserver must authenticate to the webhook: give --client-ca-file FILE (the CA "
            "that signs the apiserver's webhook client certificate; see the README, 'Webhook "
            "client authentication'), or --insecure-no-client-auth to accept reviews from "
            "anyone who can reach the webhook (forged reviews then reach the audit ledger)")


class ClientAuthError(ValueError):
    """Client authentication is misconfigured (the message says which option, and how)."""


@dataclasses.dataclass(frozen=True, slots=True)
class ClientPolicy:
    """Which peers may POST admission reviews."""

    ca_file: Path | None
    """The CA bundle client certificates must verify against; None only when insecure."""
    common_names: frozenset[str] = frozenset()
    """Allowed subject CNs; empty: any certificate the CA verifies."""
    insecure: bool = False
    """--insecure-no-client-auth: no client certificate is asked for or checked."""

    def __post_init__(self) -> None:
        if self.ca_file is None and not self.insecure:
            raise ClientAuthError(REQUIRED)
        if self.ca_file is not None and self.insecure:
            raise ClientAuthError("--client-ca-file and --insecure-no-client-auth exclude each "
                                  "other")
        if self.insecure and self.common_names:
            raise ClientAuthError("--client-cn needs --client-ca-file: without a CA nothing is "
                             "verified, so a CN would prove nothing")

    @classmethod
    def unauthenticated(cls) -> ClientPolicy:
        """The explicit bypass (--insecure-no-client-auth)."""
        return cls(ca_file=None, insecure=True)

    def describe(self) -> str:
        """For the start-up log (no secrets: a path and names)."""
        if self.insecure:
            return "client certificates NOT CHECKED (--insecure-no-client-auth)"
        names = ", ".join(sorted(self.common_names)) or "any"
        return f"client certificates required (CA {self.ca_file}, CN: {names})"


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why a peer may not send reviews: an HTTP status (401 or 403) and a message."""

    status: int
    reason: str

    def body(self) -> dict[str, Any]:
        """A metav1.Status, which is what Kubernetes tools read."""
        return {"apiVersion": "v1", "kind": "Status", "status": "Failure", "code": self.status,
                "reason": "Unauthorized" if self.status == 401 else "Forbidden",
                "message": self.reason}


def subject_common_names(peercert: Mapping[str, Any] | None) -> tuple[str, ...]:
    """Every commonName of the subject of `ssl.SSLSocket.getpeercert()`'s answer."""
    subject = (peercert or {}).get("subject") or ()
    return tuple(str(value) for rdn in subject for key, value in rdn if key == "commonName")


def check_peer(peercert: Mapping[str, Any] | None, policy: ClientPolicy) -> Refusal | None:
    """None if the peer may send reviews, else why not.

    `peercert` is the verified peer certificate as `getpeercert()` gives it: None or empty when
    the peer presented none (the handshake already refused one that did not verify)."""
    if policy.insecure:
        return None
    if not peercert:
        return Refusal(401, "a client certificate is required: only the apiserver may send "
                            "admission reviews to this webhook")
    if policy.common_names:
        names = subject_common_names(peercert)
        if not policy.common_names.intersection(names):
            shown = ", ".join(names) or "none"
            return Refusal(403, f"client certificate CN ({shown}) is not allowed to send "
                                "admission reviews (--client-cn)")
    return None


def read_ca_bundle(path: Path) -> bytes:
    """The PEM certificates in `path`, each checked to parse; `ClientAuthError` naming the
    file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ClientAuthError(f"--client-ca-file {path}: cannot read it: "
                              f"{error.strerror}") from None
    pems = certs.split_pems(data)
    if not pems:
        raise ClientAuthError(f"--client-ca-file {path}: holds no PEM certificate")
    for pem in pems:
        try:
            x509.load_pem_x509_certificate(pem)
        except ValueError as error:
            raise ClientAuthError(f"--client-ca-file {path}: not a certificate ({error})") from None
    return b"".join(pems)


class ClientCa:
    """The client CA in a server SSL context: loaded at start, re-read on `reload()`."""

    def __init__(self, context: ssl.SSLContext, path: Path) -> None:
        self._context = context
        self._path = path
        self._loaded: set[bytes] = set()  # every CA ever trusted (OpenSSL cannot forget one)
        self._seen: set[bytes] = set()  # the file's CAs when last read
        context.verify_mode = ssl.CERT_OPTIONAL

    def load(self) -> None:
        """Trust the file's CAs; `ClientAuthError` (naming the file) if it holds none."""
        pems = certs.split_pems(read_ca_bundle(self._path))
        if set(pems) == self._seen:
            return
        self._seen = set(pems)
        if self._loaded - self._seen:
            logger.warning("client CA %s: a CA was removed from the file; it stays trusted "
                           "until the webhook restarts", self._path)
        new = [pem for pem in pems if pem not in self._loaded]
        if new:
            self._context.load_verify_locations(cadata=b"".join(new).decode("ascii"))
            first = not self._loaded
            self._loaded.update(new)
            logger.info("client CA %s: %s %d certificate(s)", self._path,
                        "loaded" if first else "added", len(new))

    def reload(self) -> None:
        """`load()`, logging instead of raising: a bad file keeps the CAs already trusted."""
        try:
            self.load()
        except ClientAuthError as error:
            logger.warning("client CA not reloaded, keeping the trusted ones: %s", error)
