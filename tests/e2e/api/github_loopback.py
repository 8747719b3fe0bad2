"""A loopback server speaking GitHub's documented OAuth app and REST endpoints, for the GitHub
preset's e2e tests (github.com itself cannot be reached from the test machines).

    python -m tests.e2e.api.github_loopback PORT CONFIG_JSON

CONFIG_JSON: {"client_id", "client_secret", "redirect_uri", "users": {login: {"id", "email",
"emails": [{"email", "primary", "verified"}]}}}, re-read on every request so a test can add
users. What it implements, as GitHub documents it (docs.github.com, "Authorizing OAuth apps"
and the REST "users" and "emails" endpoints):

- `GET /login/oauth/authorize`: client_id and redirect_uri must be the app's; the account is
  the `login` parameter (GitHub's "suggest a specific account"; the user's consent is implied);
  a `code_challenge` must use S256; redirects to redirect_uri with `code` and `state`;
- `POST /login/oauth/access_token`: client_id + client_secret (form fields or HTTP Basic), the
  code (once, 10 minutes), redirect_uri, and the PKCE `code_verifier` checked against the
  challenge; errors are HTTP 200 with an `error` field (`bad_verification_code`,
  `incorrect_client_credentials`), JSON when `Accept: application/json`;
- `GET /api/v3/user` and `GET /api/v3/user/emails` with `Authorization: Bearer|token`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

CODES: dict[str, dict[str, Any]] = {}
TOKENS: dict[str, str] = {}
LOCK = threading.Lock()


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


class Handler(BaseHTTPRequestHandler):
    config_path: Path

    def config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.config_path.read_text())
        return loaded

    def reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def token_reply(self, body: dict[str, str]) -> None:
        if "application/json" in self.headers.get("Accept", ""):
            self.reply(200, body)
            return
        data = urllib.parse.urlencode(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-www-form-urlencoded")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(url.query))
        config = self.config()
        if url.path == "/login/oauth/authorize":
            if params.get("client_id") != config["client_id"] or \
                    params.get("redirect_uri", config["redirect_uri"]) != config["redirect_uri"]:
                self.reply(400, {"error": "redirect_uri_mismatch"})
                return
            if params.get("login") not in config["users"]:
                self.reply(404, {"message": "sign in: unknown login"})
                return
            if "code_challenge" in params and params.get("code_challenge_method") != "S256":
                self.reply(400, {"error": "invalid_request"})
                return
            code = secrets.token_hex(10)
            with LOCK:
                CODES[code] = {"login": params["login"], "at": time.time(),
                               "challenge": params.get("code_challenge"),
                               "redirect_uri": params.get("redirect_uri")}
            query = urllib.parse.urlencode({"code": code, "state": params.get("state", "")})
            self.send_response(302)
            self.send_header("Location", f"{config['redirect_uri']}?{query}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if url.path in ("/api/v3/user", "/api/v3/user/emails"):
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            with LOCK:
                login = TOKENS.get(token) if scheme.lower() in ("bearer", "token") else None
            if login is None:
                self.reply(401, {"message": "Requires authentication"})
                return
            user = config["users"][login]
            if url.path == "/api/v3/user":
                self.reply(200, {"login": login, "id": user["id"], "email": user.get("email")})
            else:
                self.reply(200, user.get("emails", []))
            return
        self.reply(404, {"message": "Not Found"})

    def do_POST(self) -> None:
        if urllib.parse.urlsplit(self.path).path != "/login/oauth/access_token":
            self.reply(404, {"message": "Not Found"})
            return
        length = int(self.headers.get("Content-Length", "0"))
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        scheme, _, basic = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            client_id, _, client_secret = base64.b64decode(basic).decode().partition(":")
            form.setdefault("client_id", urllib.parse.unquote_plus(client_id))
            form.setdefault("client_secret", urllib.parse.unquote_plus(client_secret))
        config = self.config()
        if form.get("client_id") != config["client_id"] or not hmac.compare_digest(
                form.get("client_secret", ""), config["client_secret"]):
            self.token_reply({"error": "incorrect_client_credentials"})
            return
        with LOCK:
            grant = CODES.pop(form.get("code", ""), None)
        if grant is None or time.time() - grant["at"] > 600 or (
                grant["redirect_uri"] and form.get("redirect_uri") != grant["redirect_uri"]):
            self.token_reply({"error": "bad_verification_code"})
            return
        if grant["challenge"] and not hmac.compare_digest(
                s256(form.get("code_verifier", "")), grant["challenge"]):
            self.token_reply({"error": "bad_verification_code",
                              "error_description": "code_verifier does not match"})
            return
        token = "gho_" + secrets.token_hex(18)
        with LOCK:
            TOKENS[token] = grant["login"]
        self.token_reply({"access_token": token, "token_type": "bearer",
                          "scope": "read:user,user:email"})

    def log_message(self, format: str, *args: Any) -> None:
        print(f"{self.command} {urllib.parse.urlsplit(self.path).path}", flush=True)


def main() -> None:
    port, config = int(sys.argv[1]), Path(sys.argv[2])
    Handler.config_path = config
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"github loopback on http://127.0.0.1:{port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
