"""The webhook's certificates: a CA of its own and a serving certificate, and when to replace them.

Pure: every function takes `now`; nothing here reads a clock, a file or the cluster. `tls` does
the I/O (the Secret, the webhook configuration's caBundle, the server's SSL context).

Lifecycle, as `plan` decides it on every resync:

1. No state (first start, or an unreadable Secret): a CA and a serving certificate from it.
2. The CA is re-made when less than `renew_fraction` of its lifetime remains. The old CA stays
   in the trusted bundle (the caBundle the apiserver verifies us with) until it expires, so
   certificates it signed keep working while every replica moves on.
3. The serving certificate is re-issued (by the current CA):
   - at once when it is unusable: unreadable, key mismatch, expired, not covering the names the
     apiserver calls us by, or signed by a CA no longer trusted;
   - when less than `renew_fraction` of its lifetime remains;
   - when it was signed by an older CA and the current one has been in the bundle for at least
     `ca_propagation`: by then the apiserver trusts the new CA, so switching breaks nothing.
4. CAs past their notAfter leave the bundle.

A serving certificate never outlives the CA that signed it (its notAfter is clamped), so an old
CA can leave the bundle exactly when it expires.

On demand (a RotationPolicy with target WebhookCertificates): the operator asks for a rotation
in ConfigMap `ROTATION_CONFIGMAP` (data `REQUESTED_KEY` = a request id, `ROTATE_CA_KEY` = "true"
for a new CA too), never in the Secret: the operator's identity may not read the Secret at all,
since `get` of a Secret returns its keys (`ca-signer.key` would let a stolen operator token sign
serving certificates the apiserver trusts). A request not served yet (`SERVED_ANNOTATION` on the
Secret differs) is a forced rotation through the same steps as the scheduled one: with a CA,
step 2 happens now (and `CA_SERVED_ANNOTATION` records that it did, so later resyncs make no
second CA) and the serving certificate follows after `ca_propagation`, as in step 3; without,
the serving certificate is re-issued by the current CA now, unless it waits for a CA's
propagation anyway (then that switch serves the request). The request is marked served in the
same Secret write as the new serving certificate; then the webhook publishes the public facts in
the ConfigMap (`rotation_facts`: the served id and the certificates, never a key), from which the
operator judges the rotation. Only the webhook's identity may write those facts, and the
operator's only the request keys (manifests/webhook/operator-requests-only.yaml).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tenantry.model import common

# Certificates start this far in the past, so a peer whose clock is a little behind accepts them.
CLOCK_SKEW = datetime.timedelta(minutes=5)
# At most this many CAs in the bundle (the current one first); older ones are dropped even if
# still valid, so repeated forced rotations cannot grow the bundle without bound.
MAX_TRUSTED = 4

# The Secret's layout: a kubernetes.io/tls Secret (tls.crt, tls.key) plus the trusted bundle in
# ca.crt (what clients of the webhook should trust) and the signing CA's own pair.
SECRET_TYPE = "kubernetes.io/tls"  # noqa: S105 - a Secret type, not a secret
TLS_CERT, TLS_KEY, TRUSTED_CAS = "tls.crt", "tls.key", "ca.crt"
SIGNER_CERT, SIGNER_KEY = "ca-signer.crt", "ca-signer.key"
ROTATED_AT_ANNOTATION = f"{common.GROUP}/ca-rotated-at"
SECRET_NAME = "tenantry-webhook-tls"  # noqa: S105 - a name, not a secret
# The webhook's own record, on the Secret, of which request it served (and made a CA for).
SERVED_ANNOTATION = f"{common.GROUP}/rotated-for"
CA_SERVED_ANNOTATION = f"{common.GROUP}/ca-rotated-for"
# On-demand rotation, in a ConfigMap the webhook makes at start (it holds no secret): the
# operator writes the request keys; the webhook writes every other key (the facts).
ROTATION_CONFIGMAP = "tenantry-webhook-rotation"
REQUESTED_KEY, ROTATE_CA_KEY = "rotate-requested", "rotate-ca"
SERVED_KEY = "rotated-for"
REQUEST_KEYS = (REQUESTED_KEY, ROTATE_CA_KEY)
# The public certificates, as PEM text: the operator computes serials, notAfter, fingerprints
# and who signed whom itself, rather than trusting numbers someone wrote.
FACT_KEYS = (SERVED_KEY, TLS_CERT, TRUSTED_CAS, SIGNER_CERT)
MAX_REQUEST_ID = 253
# Replace a certificate when less than this fraction of its lifetime remains.
DEFAULT_RENEW_FRACTION = 1 / 3


@dataclasses.dataclass(frozen=True, slots=True)
class CertPolicy:
    """How long certificates live and when they are replaced."""

    ca_validity: datetime.timedelta = datetime.timedelta(days=365)
    """Lifetime of a new CA."""
    cert_validity: datetime.timedelta = datetime.timedelta(days=90)
    """Lifetime of a new serving certificate (never beyond its CA's notAfter)."""
    renew_fraction: float = DEFAULT_RENEW_FRACTION
    """Replace a certificate when less than this fraction of its lifetime remains."""
    ca_propagation: datetime.timedelta = datetime.timedelta(minutes=5)
    """How long a new CA sits in the caBundle before serving certificates signed by it are used:
    long enough for every apiserver (and every replica's resync) to have seen it."""


@dataclasses.dataclass(frozen=True, slots=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)


@dataclasses.dataclass(frozen=True, slots=True)
class Request:
    """A rotation the operator asked for (the request keys of the rotation ConfigMap)."""

    id: str
    rotate_ca: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class TlsState:
    """Everything the webhook's TLS needs, as stored in the Secret."""

    ca: KeyPair
    """The CA that signs new serving certificates."""
    trusted: tuple[bytes, ...]
    """PEM of every CA in the caBundle, the current one first."""
    serving: KeyPair
    """The serving certificate and key."""
    ca_rotated_at: datetime.datetime
    """When the current CA entered the bundle."""
    request: Request | None = None
    """The last rotation the operator asked for (served or not), from the rotation ConfigMap
    (`with_request`); never stored in the Secret."""
    served: str | None = None
    """The id of the last request whose serving certificate is in place."""
    ca_served: str | None = None
    """The id of the last request for which a new CA was made."""

    @property
    def pending(self) -> Request | None:
        """The request not served yet, if any."""
        if self.request is not None and self.request.id != self.served:
            return self.request
        return None

    def ca_bundle(self) -> bytes:
        """The caBundle for the webhook configuration: every trusted CA, concatenated."""
        return b"".join(pem if pem.endswith(b"\n") else pem + b"\n" for pem in self.trusted)


@dataclasses.dataclass(frozen=True, slots=True)
class Plan:
    """The state to have, and why it differs from the state we had (empty: it does not)."""

    state: TlsState
    reasons: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return bool(self.reasons)


# -- making certificates -------------------------------------------------------------------------

def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_key(pem: bytes) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("expected an EC private key")
    return key


def make_ca(now: datetime.datetime, validity: datetime.timedelta, *,
            key_pem: bytes | None = None, common_name: str | None = None) -> KeyPair:
    """A self-signed CA valid from `now` (minus the clock skew) for `validity`.

    `key_pem` and `common_name` re-use an existing key and name (tests use them to re-date a CA
    without changing what it signed); by default a fresh P-256 key and a name with the time.
    """
    key = _load_key(key_pem) if key_pem is not None else _new_key()
    name = x509.Name([x509.NameAttribute(
        NameOID.COMMON_NAME, common_name or f"tenantry-webhook-ca@{int(now.timestamp())}")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + validity)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def issue_serving_cert(ca: KeyPair, names: Sequence[str], now: datetime.datetime,
                       validity: datetime.timedelta) -> KeyPair:
    """A TLS server certificate for every DNS name or IP address in `names`, signed by `ca`.

    It expires after `validity` or with the CA, whichever comes first.
    """
    if not names:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    ca_cert = ca.cert
    ca_key = _load_key(ca.key_pem)
    key = _new_key()
    not_after = min(now + validity, ca_cert.not_valid_after_utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0][:64])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - CLOCK_SKEW, ca_cert.not_valid_before_utc))
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_encipherment=False, key_cert_sign=False, crl_sign=False,
            content_commitment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in names]),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


# -- judging certificates ------------------------------------------------------------------------

def needs_rotation(now: datetime.datetime, cert: x509.Certificate,
                   renew_fraction: float = DEFAULT_RENEW_FRACTION) -> bool:
    """Whether less than `renew_fraction` of the certificate's lifetime remains (or it is not
    valid at all at `now`)."""
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start - CLOCK_SKEW or now >= end:
        return True
    return end - now < (end - start) * renew_fraction


def is_expired(now: datetime.datetime, cert: x509.Certificate) -> bool:
    return now >= cert.not_valid_after_utc


def covers(cert: x509.Certificate, names: Sequence[str]) -> bool:
    """Whether the certificate's subjectAltNames include every one of `names`."""
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    dns = {n.lower() for n in alt.get_values_for_type(x509.DNSName)}
    ips = set(alt.get_values_for_type(x509.IPAddress))
    for name in names:
        try:
            if ipaddress.ip_address(name) not in ips:
                return False
        except ValueError:
            if name.lower() not in dns:
                return False
    return True


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether `ca` signed `cert` (names and signature both match)."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_matches(pair: KeyPair) -> bool:
    """Whether the private key belongs to the certificate."""
    try:
        key = _load_key(pair.key_pem)
        public = pair.cert.public_key()
    except ValueError:
        return False
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo,
    ) == public.public_bytes(serialization.Encoding.DER,
                             serialization.PublicFormat.SubjectPublicKeyInfo)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def serial_text(cert: x509.Certificate) -> str:
    """The serial number as `openssl x509 -serial` shows it (upper-case hex)."""
    return f"{cert.serial_number:X}"


def fingerprint(cert: x509.Certificate) -> str:
    """`sha256:` and the hex SHA-256 of the certificate's DER (it names a CA, reveals no key)."""
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def describe(cert: x509.Certificate) -> str:
    """"CN (notAfter)" for messages."""
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else cert.subject.rfc4514_string()
    return f"{common_name} (notAfter {cert.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ})"


def serving_problem(now: datetime.datetime, serving: KeyPair, names: Sequence[str],
                    trusted: Sequence[x509.Certificate]) -> str | None:
    """Why a serving certificate cannot be used at all, or None if it can."""
    try:
        cert = serving.cert
    except ValueError:
        return "the serving certificate cannot be read"
    if not key_matches(serving):
        return "the serving key does not match its certificate"
    if now >= cert.not_valid_after_utc:
        return f"the serving certificate {describe(cert)} has expired"
    if now < cert.not_valid_before_utc - CLOCK_SKEW:
        return f"the serving certificate {describe(cert)} is not valid yet"
    if not covers(cert, names):
        return f"the serving certificate does not cover {', '.join(names)}"
    if not any(issued_by(cert, ca) for ca in trusted):
        return "the serving certificate is not signed by a trusted CA"
    return None


# -- deciding ------------------------------------------------------------------------------------

def initial_state(now: datetime.datetime, names: Sequence[str], policy: CertPolicy) -> TlsState:
    ca = make_ca(now, policy.ca_validity)
    return TlsState(ca=ca, trusted=(ca.cert_pem,),
                    serving=issue_serving_cert(ca, names, now, policy.cert_validity),
                    ca_rotated_at=now)


def plan(now: datetime.datetime, state: TlsState | None, names: Sequence[str],
         policy: CertPolicy = CertPolicy()) -> Plan:
    """The TLS state to have at `now` for a server called by `names`, starting from `state`."""
    if state is None:
        return Plan(initial_state(now, names, policy),
                    ("no certificates yet: made a CA and a serving certificate",))
    reasons: list[str] = []
    ca, rotated_at = state.ca, state.ca_rotated_at
    request, ca_served = state.pending, state.ca_served
    ca_asked = (request.id if request is not None and request.rotate_ca
                and ca_served != request.id else None)
    try:
        ca_cert: x509.Certificate | None = ca.cert
    except ValueError:
        ca_cert = None
    if ca_cert is None or not _is_ca(ca_cert) or not key_matches(ca):
        ca = make_ca(now, policy.ca_validity)
        rotated_at = now
        reasons.append("the signing CA was unreadable or inconsistent: made a new CA")
    elif needs_rotation(now, ca_cert, policy.renew_fraction):
        old = describe(ca_cert)
        ca = make_ca(now, policy.ca_validity)
        rotated_at = now
        reasons.append(f"CA {old} is due for rotation: new CA {describe(ca.cert)}; the old one "
                       "stays trusted until it expires")
    elif ca_asked is not None:
        old = describe(ca_cert)
        ca = make_ca(now, policy.ca_validity)
        rotated_at = now
        reasons.append(f"rotation {ca_asked} asked for a new CA: new CA {describe(ca.cert)}; "
                       f"the old one {old} stays trusted until it expires")
    if ca_asked is not None:
        ca_served = ca_asked  # whichever branch above made the new CA, it is the one asked for
    ca_cert = ca.cert

    trusted: list[bytes] = [ca.cert_pem]
    for pem in state.trusted:
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError:
            reasons.append("dropped an unreadable CA from the bundle")
            continue
        if cert == ca_cert or pem in trusted:
            continue
        if is_expired(now, cert):
            reasons.append(f"dropped expired CA {describe(cert)} from the bundle")
            continue
        if len(trusted) >= MAX_TRUSTED:
            reasons.append(f"dropped CA {describe(cert)}: at most {MAX_TRUSTED} CAs are trusted")
            continue
        trusted.append(pem)
    trusted_certs = [x509.load_pem_x509_certificate(pem) for pem in trusted]
    if tuple(trusted) != state.trusted and not reasons:
        reasons.append("the CA bundle did not list the current CA first")

    serving = state.serving
    problem = serving_problem(now, serving, names, trusted_certs)
    if problem is not None:
        serving = issue_serving_cert(ca, names, now, policy.cert_validity)
        reasons.append(f"{problem}: issued a new one")
    elif not issued_by(serving.cert, ca_cert):
        # Also where a requested rotation waits, with or without a CA of its own: switching
        # before the apiserver trusts the current CA would fail its calls.
        if now - rotated_at >= policy.ca_propagation:
            serving = issue_serving_cert(ca, names, now, policy.cert_validity)
            reasons.append("the serving certificate was signed by the previous CA, and the "
                           "current CA has been trusted long enough: re-issued by the current CA")
    elif needs_rotation(now, serving.cert, policy.renew_fraction):
        old = describe(serving.cert)
        serving = issue_serving_cert(ca, names, now, policy.cert_validity)
        reasons.append(f"the serving certificate {old} is due for renewal: re-issued")
    elif request is not None:
        old = describe(serving.cert)
        serving = issue_serving_cert(ca, names, now, policy.cert_validity)
        reasons.append(f"rotation {request.id} asked for a new serving certificate: {old} "
                       "re-issued by the current CA")
    served = state.served
    if request is not None and serving is not state.serving \
            and (not request.rotate_ca or ca_served == request.id):
        served = request.id
        reasons.append(f"rotation {request.id} served: serving certificate serial "
                       f"{serial_text(serving.cert)}")
    new_state = TlsState(ca=ca, trusted=tuple(trusted), serving=serving, ca_rotated_at=rotated_at,
                         request=state.request, served=served, ca_served=ca_served)
    return Plan(new_state, tuple(reasons))


def next_check(now: datetime.datetime, state: TlsState, policy: CertPolicy) -> datetime.datetime:
    """The earliest time `plan` could decide something new for `state` (for logs and sleeps)."""
    moments = []
    for cert in (state.ca.cert, state.serving.cert):
        start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
        moments.append(end - (end - start) * policy.renew_fraction)
    if not issued_by(state.serving.cert, state.ca.cert):
        moments.append(state.ca_rotated_at + policy.ca_propagation)
    for pem in state.trusted[1:]:
        moments.append(x509.load_pem_x509_certificate(pem).not_valid_after_utc)
    return max(now, min(moments))


# -- the Secret ----------------------------------------------------------------------------------

def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def split_pems(bundle: bytes) -> tuple[bytes, ...]:
    """Each certificate of a PEM bundle, as its own PEM."""
    marker = b"-----END CERTIFICATE-----"
    parts = []
    for chunk in bundle.split(marker):
        begin = chunk.find(b"-----BEGIN CERTIFICATE-----")
        if begin >= 0:
            parts.append(chunk[begin:] + marker + b"\n")
    return tuple(parts)


def to_secret(state: TlsState, *, name: str, namespace: str,
              labels: Mapping[str, str] | None = None,
              resource_version: str | None = None) -> dict[str, Any]:
    """The Secret that stores `state` (with `resource_version`, an update precondition)."""
    annotations = {ROTATED_AT_ANNOTATION: state.ca_rotated_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    # The request is not the Secret's: it lives in the rotation ConfigMap (`request_of`).
    if state.served is not None:
        annotations[SERVED_ANNOTATION] = state.served
    if state.ca_served is not None:
        annotations[CA_SERVED_ANNOTATION] = state.ca_served
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "annotations": annotations}
    if labels:
        metadata["labels"] = dict(labels)
    if resource_version:
        metadata["resourceVersion"] = resource_version
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": SECRET_TYPE,
        "data": {
            TLS_CERT: _b64(state.serving.cert_pem),
            TLS_KEY: _b64(state.serving.key_pem),
            TRUSTED_CAS: _b64(state.ca_bundle()),
            SIGNER_CERT: _b64(state.ca.cert_pem),
            SIGNER_KEY: _b64(state.ca.key_pem),
        },
    }


def from_secret(secret: Mapping[str, Any]) -> tuple[TlsState | None, str | None]:
    """The state a Secret holds, or (None, why it holds none we can use)."""
    data = secret.get("data") or {}
    try:
        fields = {key: base64.b64decode(data[key], validate=True)
                  for key in (TLS_CERT, TLS_KEY, TRUSTED_CAS, SIGNER_CERT, SIGNER_KEY)}
    except KeyError as missing:
        return None, f"the Secret has no {missing.args[0]}"
    except (ValueError, TypeError):
        return None, "the Secret's data is not valid base64"
    annotations = (secret.get("metadata") or {}).get("annotations") or {}
    try:
        rotated_at = datetime.datetime.strptime(
            annotations[ROTATED_AT_ANNOTATION], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except (KeyError, TypeError, ValueError):
        # Unknown: treat the CA as long established, which only hastens the switch to it.
        rotated_at = datetime.datetime.fromtimestamp(0, datetime.UTC)
    trusted = split_pems(fields[TRUSTED_CAS])
    return TlsState(
        ca=KeyPair(fields[SIGNER_CERT], fields[SIGNER_KEY]),
        trusted=trusted,
        serving=KeyPair(fields[TLS_CERT], fields[TLS_KEY]),
        ca_rotated_at=rotated_at,
        served=request_id(annotations.get(SERVED_ANNOTATION)),
        ca_served=request_id(annotations.get(CA_SERVED_ANNOTATION)),
    ), None


def request_id(value: object) -> str | None:
    """A request id as written, or None if it is not one: printable ASCII without spaces, at
    most `MAX_REQUEST_ID` characters (it goes into logs and Events)."""
    if isinstance(value, str) and 0 < len(value) <= MAX_REQUEST_ID \
            and all("!" <= c <= "~" for c in value):
        return value
    return None


def request_of(configmap: Mapping[str, Any] | None) -> Request | None:
    """The rotation the operator asked for in the rotation ConfigMap, or None."""
    data = (configmap or {}).get("data") or {}
    asked = request_id(data.get(REQUESTED_KEY))
    if asked is None:
        return None
    return Request(asked, rotate_ca=data.get(ROTATE_CA_KEY) == "true")


def with_request(state: TlsState, configmap: Mapping[str, Any] | None) -> TlsState:
    """`state` (read from the Secret) with the request the rotation ConfigMap holds."""
    return dataclasses.replace(state, request=request_of(configmap))


def pending_request(configmap: Mapping[str, Any] | None) -> Request | None:
    """The request the rotation ConfigMap holds and does not say was served (its data alone:
    what the webhook checks between resyncs; a stale or forged `SERVED_KEY` only makes a resync
    sooner or later, the Secret's own record decides)."""
    request = request_of(configmap)
    data = (configmap or {}).get("data") or {}
    if request is not None and request.id != request_id(data.get(SERVED_KEY)):
        return request
    return None


def rotation_facts(state: TlsState) -> dict[str, str | None]:
    """The public facts the webhook publishes in the rotation ConfigMap: the request it served
    and its certificates (PEM), never a key. None removes a key (nothing served yet)."""
    return {SERVED_KEY: state.served, TLS_CERT: state.serving.cert_pem.decode(),
            TRUSTED_CAS: state.ca_bundle().decode(), SIGNER_CERT: state.ca.cert_pem.decode()}


def rotation_configmap(state: TlsState, *, name: str, namespace: str,
                       labels: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The rotation ConfigMap as the webhook makes it and applies it: the facts only (server-side
    apply owns what it sends, so the operator's request keys are left alone)."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if labels:
        metadata["labels"] = dict(labels)
    data = {key: value for key, value in rotation_facts(state).items() if value is not None}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data}
