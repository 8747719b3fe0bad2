"""Only the apiserver may send reviews: the peer check, the CA file, and a real TLS server.

The TLS tests serve the real application (`server.make_app`) over a real TLS socket on loopback,
with the server context the webhook builds (`tls.CertKeeper`'s, client CA loaded by
`clientauth.ClientCa`), and attack it as a forger would: no certificate, a certificate of another
CA, and one of the right CA with another CN.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tenantry.devcluster import pki
from tenantry.devcluster.process import free_port
from tenantry.webhook import clientauth, review, server
from tenantry.webhook.routes import Rule, WebhookRoute
from tests.unit.admission.admission_helpers import hardened_pod
from tests.unit.webhook.webhook_unit_helpers import review_body

APISERVER = "kube-apiserver-webhook-client"
PEER = {"subject": ((("organizationName", "system:masters"),), (("commonName", APISERVER),))}


def _policy(tmp_path: Path, *names: str) -> clientauth.ClientPolicy:
    return clientauth.ClientPolicy(tmp_path / "ca.crt", frozenset(names))


# -- pure parts ----------------------------------------------------------------------------------

def test_subject_common_names() -> None:
    assert clientauth.subject_common_names(PEER) == (APISERVER,)
    assert clientauth.subject_common_names(None) == ()
    assert clientauth.subject_common_names({}) == ()


def test_no_certificate_is_401(tmp_path: Path) -> None:
    for peercert in (None, {}):
        refusal = clientauth.check_peer(peercert, _policy(tmp_path))
        assert refusal is not None and refusal.status == 401
        assert "client certificate is required" in refusal.reason
        assert refusal.body()["reason"] == "Unauthorized"


def test_a_verified_certificate_passes_unless_its_cn_is_not_allowed(tmp_path: Path) -> None:
    assert clientauth.check_peer(PEER, _policy(tmp_path)) is None
    assert clientauth.check_peer(PEER, _policy(tmp_path, APISERVER, "other")) is None
    refusal = clientauth.check_peer(PEER, _policy(tmp_path, "someone-else"))
    assert refusal is not None and refusal.status == 403
    assert f"CN ({APISERVER}) is not allowed" in refusal.reason
    assert refusal.body() == {"apiVersion": "v1", "kind": "Status", "status": "Failure",
                              "code": 403, "reason": "Forbidden", "message": refusal.reason}


def test_the_bypass_must_be_explicit(tmp_path: Path) -> None:
    with pytest.raises(clientauth.ClientAuthError, match="--insecure-no-client-auth"):
        clientauth.ClientPolicy(None)
    with pytest.raises(clientauth.ClientAuthError, match="exclude each other"):
        clientauth.ClientPolicy(tmp_path / "ca.crt", insecure=True)
    anyone = clientauth.ClientPolicy.unauthenticated()
    assert clientauth.check_peer(None, anyone) is None


def test_read_ca_bundle_keeps_only_certificates(tmp_path: Path) -> None:
    first, second = pki.make_ca("one"), pki.make_ca("two")
    path = tmp_path / "ca.crt"
    path.write_bytes(b"# a comment\n" + first.cert_pem + b"\n" + second.cert_pem)
    assert clientauth.read_ca_bundle(path) == first.cert_pem + second.cert_pem
    path.write_bytes(first.key_pem)
    with pytest.raises(clientauth.ClientAuthError, match="holds no PEM certificate"):
        clientauth.read_ca_bundle(path)


# -- over real TLS -------------------------------------------------------------------------------

class Pki:
    """A serving CA and certificate, the client CA, and client certificates, as files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        serving_ca = pki.make_ca("serving-ca")
        self.serving_ca = self._write("serving-ca.crt", serving_ca.cert_pem)
        serving = pki.make_serving_cert(serving_ca, "webhook", ["127.0.0.1"])
        self.serving = (self._write("tls.crt", serving.cert_pem),
                        self._write("tls.key", serving.key_pem))
        self.client_ca = pki.make_ca("apiserver-client-ca")
        self.client_ca_file = self._write("client-ca.crt", self.client_ca.cert_pem)

    def _write(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    def client(self, name: str, ca: pki.KeyPair | None = None) -> tuple[Path, Path]:
        pair = pki.make_client_cert(ca or self.client_ca, name)
        return self._write(f"{name}.crt", pair.cert_pem), self._write(f"{name}.key", pair.key_pem)

    def context(self, client: tuple[Path, Path] | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.serving_ca))
        if client is not None:
            context.load_cert_chain(str(client[0]), str(client[1]))
        return context


class Served:
    """The webhook application on a TLS port, and how many reviews reached its handler."""

    def __init__(self, files: Pki, port: int, client_ca: clientauth.ClientCa) -> None:
        self.files = files
        self.url = f"https://127.0.0.1:{port}"
        self.client_ca = client_ca
        self.handled = 0

    async def post(self, client: tuple[Path, Path] | None) -> tuple[int, Any]:
        body = json.dumps(review_body(hardened_pod())).encode()
        async with aiohttp.ClientSession() as session, session.post(
                f"{self.url}/validate/ok", data=body, ssl=self.files.context(client),
                headers={"Content-Type": "application/json"}) as response:
            return response.status, await response.json()


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    files = Pki(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*files.serving)
    client_ca = clientauth.ClientCa(context, files.client_ca_file)
    client_ca.load()
    port = free_port()
    box = Served(files, port, client_ca)

    async def allow(request: review.AdmissionRequest) -> review.Verdict:
        box.handled += 1
        return review.Verdict.allow()

    app = server.make_app(
        [WebhookRoute("ok.test.tenantry.dev", "/validate/ok", allow,
                      rules=(Rule(("",), ("v1",), ("pods",)),))],
        ready=lambda: True,
        clients=clientauth.ClientPolicy(files.client_ca_file, frozenset({APISERVER})))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        yield box
    finally:
        await runner.cleanup()


async def test_the_apiservers_certificate_is_admitted(served: Served) -> None:
    status, answer = await served.post(served.files.client(APISERVER))
    assert status == 200
    assert answer["response"] == {"uid": "705ab4f5-6393-11e8-b7cc-42010a800002", "allowed": True}
    assert served.handled == 1


async def test_a_review_without_a_certificate_is_refused_401_but_health_answers(
        served: Served, caplog: pytest.LogCaptureFixture) -> None:
    status, answer = await served.post(None)
    assert status == 401 and answer["reason"] == "Unauthorized"
    assert served.handled == 0
    assert "refused a review from 127.0.0.1 (HTTP 401)" in caplog.text
    async with aiohttp.ClientSession() as session:
        for path in ("/healthz", "/readyz"):
            async with session.get(f"{served.url}{path}",
                                   ssl=served.files.context()) as response:
                assert response.status == 200


async def test_a_certificate_of_the_right_ca_with_another_cn_is_refused_403(
        served: Served) -> None:
    status, answer = await served.post(served.files.client("tenantry-admin"))
    assert status == 403 and "CN (tenantry-admin) is not allowed" in answer["message"]
    assert served.handled == 0


async def test_a_certificate_of_another_ca_fails_the_handshake(served: Served) -> None:
    forged = served.files.client(APISERVER, ca=pki.make_ca("apiserver-client-ca"))
    with pytest.raises(aiohttp.ClientError):
        await served.post(forged)
    assert served.handled == 0


async def test_a_new_client_ca_is_trusted_after_a_reload_without_a_restart(
        served: Served) -> None:
    rotated = pki.make_ca("apiserver-client-ca-2")
    client = served.files.client(APISERVER, ca=rotated)
    with pytest.raises(aiohttp.ClientError):
        await served.post(client)
    ca_file = served.files.client_ca_file
    ca_file.write_bytes(ca_file.read_bytes() + rotated.cert_pem)
    served.client_ca.reload()
    status, _ = await served.post(client)
    assert status == 200 and served.handled == 1


def test_a_broken_ca_file_keeps_the_trusted_cas(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    files = Pki(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client_ca = clientauth.ClientCa(context, files.client_ca_file)
    client_ca.load()
    assert context.verify_mode == ssl.CERT_OPTIONAL
    assert len(context.get_ca_certs()) == 1
    files.client_ca_file.write_bytes(b"")
    client_ca.reload()
    assert "client CA not reloaded, keeping the trusted ones" in caplog.text
    assert len(context.get_ca_certs()) == 1
