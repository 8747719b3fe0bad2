"""A real OpenID Connect provider on loopback: panva's `oidc-provider` (npm), run by node.

`install()` runs `npm ci` from the committed, pinned `oidc-provider/package-lock.json` into
`~/.cache/tenantry/oidc-provider-<hash of the lock>/` once per lock (so CI on a fresh machine
repeats it; the machine's Node.js and npm are used, `.ci/run` installs them if missing).
`OidcProvider` is `node provider.mjs PORT CLIENTS` as a child process; `restart()` keeps the
port and gets a fresh signing key (a key rollover). `sign_in_at_provider` plays the browser:
it follows the provider's redirects and submits its development login and consent forms over
plain HTTP, stopping at the first redirect back to the API (the callback URL, not followed).
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import httpx
import pytest

from tenantry.devcluster.process import ManagedProcess, free_port, wait_until

SOURCE = Path(__file__).parent / "oidc-provider"
CACHE = Path(os.environ.get("TENANTRY_CACHE", Path.home() / ".cache" / "tenantry"))


def install() -> Path:
    """The directory holding node_modules/oidc-provider and provider.mjs."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed for the OIDC provider of the e2e tests "
                    "(`.ci/run` installs Debian's nodejs and npm when missing)")
    lock = (SOURCE / "package-lock.json").read_bytes()
    target = CACHE / f"oidc-provider-{hashlib.sha256(lock).hexdigest()[:16]}"
    if not (target / "node_modules" / "oidc-provider" / "package.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copyfile(SOURCE / name, target / name)
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts", "--loglevel=error"],
            cwd=target, capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0:
            pytest.fail(f"npm ci of oidc-provider failed:\n{result.stdout}\n{result.stderr}")
    shutil.copyfile(SOURCE / "provider.mjs", target / "provider.mjs")
    return target


class OidcProvider:
    def __init__(self, home: Path, clients: list[dict[str, Any]], state: Path) -> None:
        self.home = home
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.clients_file = state / "clients.json"
        self.clients_file.write_text(json.dumps(clients))
        self.log_path = state / "oidc-provider.log"
        self.process: ManagedProcess | None = None
        self.start()

    def start(self) -> None:
        self.process = ManagedProcess(
            "oidc-provider", ["node", str(self.home / "provider.mjs"), str(self.port),
                              str(self.clients_file)], self.log_path, cwd=self.home)

        def ready() -> bool:
            url = f"{self.issuer}/.well-known/openid-configuration"
            return httpx.get(url, timeout=2).status_code == 200

        wait_until(ready, timeout=30, what="the OIDC provider's discovery document",
                   process=self.process)

    def restart(self) -> None:
        self.stop()
        self.start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def jwks_fetches(self) -> int:
        return self.log().count("GET /jwks\n")


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"')
_PROMPT = re.compile(r'name="prompt" value="(\w+)"')


def sign_in_at_provider(browser: httpx.Client, url: str, login: str, api_url: str) -> str:
    """Follow the authorization request through login and consent; the callback URL."""
    response = browser.get(url)
    for _ in range(12):
        if response.is_redirect:
            url = urllib.parse.urljoin(url, response.headers["location"])
            if url.startswith(api_url):
                return url
            response = browser.get(url)
            continue
        assert response.status_code == 200, response.text
        form, prompt = _FORM.search(response.text), _PROMPT.search(response.text)
        assert form and prompt, response.text
        data = {"prompt": prompt.group(1)}
        if data["prompt"] == "login":
            data |= {"login": login, "password": "any password: dev interactions"}
        url = urllib.parse.urljoin(url, html.unescape(form.group(1)))
        response = browser.post(url, data=data)
    raise AssertionError(f"no redirect back to the API; last response {response.status_code}")


def query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def with_query(url: str, **changes: str | None) -> str:
    parts = urllib.parse.urlsplit(url)
    params = {**query(url), **changes}
    return parts._replace(query=urllib.parse.urlencode(
        {k: v for k, v in params.items() if v is not None})).geturl()
