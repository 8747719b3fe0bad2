"""The server's certificate is swapped in the live SSL context: new handshakes see the new one,
with no restart. (CertKeeper's Secret and configuration sides run in the e2e tests.)"""

from __future__ import annotations

import asyncio
import datetime
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

from tenantry.webhook import certs, tls

NOW = datetime.datetime.now(datetime.UTC)
NAMES = ("127.0.0.1",)


def _keeper(cert_dir: Path) -> tls.CertKeeper:
    return tls.CertKeeper(None, namespace="n", secret_name="s",  # type: ignore[arg-type]
                          names=NAMES, cert_dir=cert_dir, policy=certs.CertPolicy(),
                          configuration=lambda bundle: {})


async def _presented(port: int, trust: bytes) -> x509.Certificate:
    context = ssl.create_default_context(cadata=trust.decode())
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    await writer.wait_closed()
    return x509.load_der_x509_certificate(der)


async def test_install_reloads_the_live_context(tmp_path: Path) -> None:
    keeper = _keeper(tmp_path / "certs")
    first = certs.plan(NOW, None, NAMES).state
    assert keeper.install(first)
    assert not keeper.install(first), "the same certificate is not loaded twice"

    async def hello(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(hello, "127.0.0.1", 0, ssl=keeper.context)
    port = server.sockets[0].getsockname()[1]
    try:
        assert await _presented(port, first.ca_bundle()) == first.serving.cert
        # A rotation: new CA, both trusted, a new serving certificate from the new CA.
        rotated = certs.initial_state(NOW, NAMES, certs.CertPolicy())
        second = certs.TlsState(ca=rotated.ca, trusted=(rotated.ca.cert_pem, first.ca.cert_pem),
                                serving=rotated.serving, ca_rotated_at=NOW)
        assert keeper.install(second)
        presented = await _presented(port, second.ca_bundle())
        assert presented == second.serving.cert
        assert certs.issued_by(presented, rotated.ca.cert)
    finally:
        server.close()
        await server.wait_closed()
    assert (tmp_path / "certs" / "ca.crt").read_bytes() == second.ca_bundle()
    assert (tmp_path / "certs" / "tls.key").stat().st_mode & 0o777 == 0o600


def test_contains_ignores_what_the_apiserver_adds() -> None:
    desired: dict[str, Any] = {"a": {"b": [{"c": 1}]}, "d": "x"}
    assert tls.contains({"a": {"b": [{"c": 1, "extra": 2}], "more": 1}, "d": "x"}, desired)
    assert not tls.contains({"a": {"b": [{"c": 2}]}, "d": "x"}, desired)
    assert not tls.contains({"a": {"b": [{"c": 1}, {"c": 1}]}, "d": "x"}, desired)
    assert not tls.contains({"a": {"b": [{"c": 1}]}}, desired)
