"""The webhook's certificate decisions (pure): when to make, renew, rotate and drop."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress

import pytest
from cryptography import x509

from tenantry.webhook import certs

NOW = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
DAY = datetime.timedelta(days=1)
NAMES = ("tenantry-webhook.tenantry-system.svc", "127.0.0.1")
POLICY = certs.CertPolicy(ca_validity=365 * DAY, cert_validity=90 * DAY,
                          ca_propagation=datetime.timedelta(minutes=5))


def fresh(at: datetime.datetime = NOW) -> certs.TlsState:
    plan = certs.plan(at, None, NAMES, POLICY)
    assert plan.changed
    return plan.state


# -- needs_rotation ------------------------------------------------------------------------------

@pytest.mark.parametrize(("elapsed_days", "due"), [
    (0, False), (59, False), (60.5, True), (89, True), (90, True), (120, True)])
def test_needs_rotation_in_the_last_third(elapsed_days: float, due: bool) -> None:
    ca = certs.make_ca(NOW, 365 * DAY)
    cert = certs.issue_serving_cert(ca, NAMES, NOW, 90 * DAY).cert
    # Lifetime 90 days plus the 5 minutes of back-dating: renewal from day 60 on.
    assert certs.needs_rotation(NOW + elapsed_days * DAY, cert) is due


def test_needs_rotation_when_not_valid_yet() -> None:
    cert = certs.make_ca(NOW, 365 * DAY).cert
    assert certs.needs_rotation(NOW - DAY, cert)
    assert not certs.needs_rotation(NOW - datetime.timedelta(minutes=4), cert)


def test_renew_fraction_is_a_knob() -> None:
    cert = certs.make_ca(NOW, 100 * DAY).cert
    assert not certs.needs_rotation(NOW + 85 * DAY, cert, renew_fraction=0.1)
    assert certs.needs_rotation(NOW + 91 * DAY, cert, renew_fraction=0.1)


# -- making certificates -------------------------------------------------------------------------

def test_serving_certificate_covers_dns_names_and_ips() -> None:
    ca = certs.make_ca(NOW, 365 * DAY)
    cert = certs.issue_serving_cert(ca, NAMES, NOW, 90 * DAY).cert
    alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert alt.get_values_for_type(x509.DNSName) == ["tenantry-webhook.tenantry-system.svc"]
    assert alt.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert certs.covers(cert, NAMES)
    assert not certs.covers(cert, ("other.svc",))
    assert certs.issued_by(cert, ca.cert)
    assert not certs.issued_by(cert, certs.make_ca(NOW, 365 * DAY).cert)
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_serving_certificate_never_outlives_its_ca() -> None:
    ca = certs.make_ca(NOW, 30 * DAY)
    cert = certs.issue_serving_cert(ca, NAMES, NOW, 90 * DAY).cert
    assert cert.not_valid_after_utc == ca.cert.not_valid_after_utc


def test_a_serving_certificate_needs_a_name() -> None:
    with pytest.raises(ValueError, match="at least one"):
        certs.issue_serving_cert(certs.make_ca(NOW, DAY), (), NOW, DAY)


def test_key_matches() -> None:
    state = fresh()
    assert certs.key_matches(state.serving)
    assert not certs.key_matches(certs.KeyPair(state.serving.cert_pem, state.ca.key_pem))


# -- plan ----------------------------------------------------------------------------------------

def test_first_plan_makes_a_ca_and_a_serving_certificate() -> None:
    state = fresh()
    assert state.trusted == (state.ca.cert_pem,)
    assert certs.issued_by(state.serving.cert, state.ca.cert)
    assert certs.covers(state.serving.cert, NAMES)
    assert state.ca_rotated_at == NOW


def test_steady_state_changes_nothing() -> None:
    state = fresh()
    plan = certs.plan(NOW + 30 * DAY, state, NAMES, POLICY)
    assert not plan.changed
    assert plan.state == state


def test_serving_certificate_is_renewed_before_it_expires() -> None:
    state = fresh()
    plan = certs.plan(NOW + 61 * DAY, state, NAMES, POLICY)
    assert plan.changed and "due for renewal" in plan.reasons[0]
    assert plan.state.ca == state.ca and plan.state.trusted == state.trusted
    assert plan.state.serving.cert.not_valid_after_utc > state.serving.cert.not_valid_after_utc


def test_new_names_get_a_new_serving_certificate_at_once() -> None:
    plan = certs.plan(NOW + DAY, fresh(), (*NAMES, "tenantry-webhook.tenantry-system"), POLICY)
    assert plan.changed and "does not cover" in plan.reasons[0]
    assert certs.covers(plan.state.serving.cert, (*NAMES, "tenantry-webhook.tenantry-system"))


def aged(at: datetime.datetime, state: certs.TlsState | None = None,
         since: datetime.datetime = NOW) -> certs.TlsState:
    """The state a webhook has at `at` after resyncs every day since `since`."""
    state, when = state or fresh(), since
    while when + DAY <= at:
        when += DAY
        state = certs.plan(when, state, NAMES, POLICY).state
    return certs.plan(at, state, NAMES, POLICY).state


# The first daily resync at which the first CA (365 days) has less than a third of its life left.
ROTATION_DAY = NOW + 244 * DAY


def test_ca_rotation_overlaps_old_and_new_ca() -> None:
    due = ROTATION_DAY
    state = aged(due - DAY)
    assert len(state.trusted) == 1
    assert certs.issued_by(state.serving.cert, state.ca.cert)
    rotated = certs.plan(due, state, NAMES, POLICY)
    assert rotated.changed and "due for rotation" in rotated.reasons[0]
    new = rotated.state
    assert new.ca != state.ca
    assert new.trusted == (new.ca.cert_pem, state.ca.cert_pem), "both CAs trusted, new first"
    assert new.serving == state.serving, "keep serving until the new CA has propagated"
    assert new.ca_rotated_at == due
    assert certs.split_pems(new.ca_bundle()) == new.trusted

    # Still propagating: nothing to do.
    assert not certs.plan(due + datetime.timedelta(minutes=4), new, NAMES, POLICY).changed
    # Propagated: the serving certificate moves to the new CA; the old CA stays trusted.
    switched = certs.plan(due + datetime.timedelta(minutes=6), new, NAMES, POLICY)
    assert switched.changed and "previous CA" in switched.reasons[0]
    assert certs.issued_by(switched.state.serving.cert, new.ca.cert)
    assert switched.state.trusted == new.trusted

    # The old CA leaves the bundle when it expires, not before.
    later = aged(NOW + 364 * DAY, switched.state, since=due)
    assert later.trusted == new.trusted
    dropped = certs.plan(NOW + 366 * DAY, later, NAMES, POLICY)
    assert any("dropped expired CA" in reason for reason in dropped.reasons)
    assert dropped.state.trusted == (new.ca.cert_pem,)


def test_three_years_of_resyncs_never_serve_an_untrusted_certificate() -> None:
    """Every 12 hours for three years: the serving certificate is always valid, covers the names
    and is signed by a trusted, unexpired CA; a new CA signs it only after it has been trusted
    for `ca_propagation`; the bundle never holds an expired CA."""
    state, when = fresh(), NOW
    first_trusted: dict[bytes, datetime.datetime] = {state.ca.cert_pem: NOW - DAY}
    cas = {state.ca.cert_pem}
    while when < NOW + 3 * 365 * DAY:
        when += datetime.timedelta(hours=12)
        previous = state
        state = certs.plan(when, state, NAMES, POLICY).state
        for pem in state.trusted:
            first_trusted.setdefault(pem, when)
            assert not certs.is_expired(when, x509.load_pem_x509_certificate(pem))
        serving = state.serving.cert
        assert certs.serving_problem(when, state.serving, NAMES,
                                     [x509.load_pem_x509_certificate(p) for p in state.trusted]
                                     ) is None
        issuer = next(p for p in state.trusted
                      if certs.issued_by(serving, x509.load_pem_x509_certificate(p)))
        if state.serving != previous.serving:
            assert when - first_trusted[issuer] >= POLICY.ca_propagation
        cas.add(state.ca.cert_pem)
    assert len(cas) >= 3, "the CA rotated"


def test_unusable_serving_certificate_is_replaced_at_once_even_mid_rotation() -> None:
    rotated = certs.plan(ROTATION_DAY, aged(ROTATION_DAY - DAY), NAMES, POLICY).state
    assert len(rotated.trusted) == 2
    broken = dataclasses.replace(rotated, serving=certs.KeyPair(rotated.serving.cert_pem,
                                                                rotated.ca.key_pem))
    plan = certs.plan(ROTATION_DAY, broken, NAMES, POLICY)
    assert "does not match" in plan.reasons[0]
    assert certs.issued_by(plan.state.serving.cert, rotated.ca.cert)


def test_expired_everything_starts_over_with_a_new_ca() -> None:
    state = fresh()
    plan = certs.plan(NOW + 400 * DAY, state, NAMES, POLICY)
    assert plan.state.ca != state.ca
    assert plan.state.trusted == (plan.state.ca.cert_pem,)
    assert certs.issued_by(plan.state.serving.cert, plan.state.ca.cert)


def test_an_inconsistent_ca_is_replaced() -> None:
    state = fresh()
    other = certs.make_ca(NOW, 365 * DAY)
    broken = dataclasses.replace(state, ca=certs.KeyPair(state.ca.cert_pem, other.key_pem))
    plan = certs.plan(NOW + DAY, broken, NAMES, POLICY)
    assert "unreadable or inconsistent" in plan.reasons[0]
    assert certs.key_matches(plan.state.ca)


def test_the_bundle_is_bounded() -> None:
    state = fresh()
    extra = tuple(certs.make_ca(NOW, 365 * DAY).cert_pem for _ in range(6))
    plan = certs.plan(NOW + DAY, dataclasses.replace(state, trusted=(*state.trusted, *extra)),
                      NAMES, POLICY)
    assert len(plan.state.trusted) == certs.MAX_TRUSTED
    assert plan.state.trusted[0] == state.ca.cert_pem


def test_next_check() -> None:
    state = fresh()
    assert NOW + 59 * DAY < certs.next_check(NOW, state, POLICY) < NOW + 61 * DAY
    rotated = certs.plan(ROTATION_DAY, aged(ROTATION_DAY - DAY), NAMES, POLICY).state
    assert certs.next_check(ROTATION_DAY, rotated, POLICY) == \
        ROTATION_DAY + POLICY.ca_propagation


# -- the Secret ----------------------------------------------------------------------------------

def test_secret_round_trip() -> None:
    state = aged(ROTATION_DAY)
    assert len(state.trusted) == 2
    secret = certs.to_secret(state, name="tenantry-webhook-tls", namespace="tenantry-system",
                             labels={"a": "b"}, resource_version="42")
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["resourceVersion"] == "42"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt", "ca-signer.crt",
                                   "ca-signer.key"}
    restored, problem = certs.from_secret(secret)
    assert problem is None
    assert restored == state


def test_secret_without_our_keys_holds_no_state() -> None:
    assert certs.from_secret({"data": {"tls.crt": "AAAA"}}) == (
        None, "the Secret has no tls.key")
    secret = certs.to_secret(fresh(), name="s", namespace="n")
    secret["data"]["ca.crt"] = "%%%"
    assert certs.from_secret(secret) == (None, "the Secret's data is not valid base64")


def test_secret_without_rotation_time_counts_the_ca_as_established() -> None:
    secret = certs.to_secret(fresh(), name="s", namespace="n")
    del secret["metadata"]["annotations"]
    state, _ = certs.from_secret(secret)
    assert state is not None
    assert state.ca_rotated_at == datetime.datetime.fromtimestamp(0, datetime.UTC)
