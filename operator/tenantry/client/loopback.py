"""`tenantry login --oidc PROVIDER`: sign in in a browser, tokens to the command (RFC 8252).

The command listens on a random port of 127.0.0.1 for one request to `/callback`, makes a PKCE
verifier and its S256 challenge, and sends the browser to the API's
`/v1/auth/oidc/{provider}/start?cli_redirect=...&cli_challenge=...`. After the identity
provider, the API redirects the browser back to the loopback address with a one-time code (no
token ever passes through the browser) and the command redeems it, with the verifier, at
`POST /v1/auth/oidc/cli/token`. A code intercepted on the way is useless without the verifier,
which never leaves this process.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import secrets
import threading
import urllib.parse
from typing import Any


def pkce_pair() -> tuple[str, str]:
    """(verifier, S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


class CodeReceiver:
    """A one-shot HTTP server on 127.0.0.1 that waits for `/callback?code=...`."""

    def __init__(self) -> None:
        self.code: str | None = None
        self._got = threading.Event()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                parsed = urllib.parse.urlsplit(self.path)
                codes = urllib.parse.parse_qs(parsed.query).get("code") or []
                if parsed.path != "/callback" or not codes:
                    self.send_response(404)
                    self.end_headers()
                    return
                receiver.code = codes[0]
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.end_headers()
                self.wfile.write(b"Signed in. You can close this window and return to the "
                                 b"terminal.\n")
                receiver._got.set()

            def log_message(self, *_: Any) -> None:  # never print the code
                return

        self._server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def redirect_uri(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/callback"

    def wait(self, timeout: float) -> str | None:
        self._got.wait(timeout)
        return self.code

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def start_url(api_url: str, provider: str, redirect_uri: str, challenge: str) -> str:
    query = urllib.parse.urlencode({"cli_redirect": redirect_uri, "cli_challenge": challenge})
    return f"{api_url}/v1/auth/oidc/{urllib.parse.quote(provider, safe='')}/start?{query}"
