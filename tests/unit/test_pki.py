"""The control plane's PKI: what Kubernetes will read from our certificates."""

from __future__ import annotations

import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tenantry.devcluster import pki


def _load(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_client_certificate_carries_user_and_groups_signed_by_ca() -> None:
    ca = pki.make_ca()
    pair = pki.make_client_cert(ca, "alice", ["team-a", "system:authenticated"])
    cert = _load(pair.cert_pem)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    groups = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    assert groups == ["team-a", "system:authenticated"]
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert ExtendedKeyUsageOID.SERVER_AUTH not in usage
    cert.verify_directly_issued_by(_load(ca.cert_pem))


def test_serving_certificate_names_ips_and_dns() -> None:
    ca = pki.make_ca()
    cert = _load(pki.make_serving_cert(ca, "api", ["127.0.0.1", "localhost"]).cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    cert.verify_directly_issued_by(_load(ca.cert_pem))


def test_certificate_from_another_ca_does_not_verify() -> None:
    ca, other = pki.make_ca(), pki.make_ca()
    cert = _load(pki.make_client_cert(other, "mallory").cert_pem)
    try:
        cert.verify_directly_issued_by(_load(ca.cert_pem))
    except Exception:  # any verification failure is the point
        return
    raise AssertionError("a certificate from a foreign CA verified")


def test_ca_is_a_ca_and_keys_are_ec() -> None:
    ca = pki.make_ca()
    constraints = _load(ca.cert_pem).extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.value.ca is True
    leaf = _load(pki.make_client_cert(ca, "bob").cert_pem)
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
