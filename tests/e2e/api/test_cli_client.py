"""`tenantry login | logout | audit | api-keys` as a user runs them: the real command in a child
process, against a real `tenantry api run` over HTTP, with its own config directory.

What a user would notice is what is checked: the token file is 0600 in a 0700 directory and no
token is ever printed; an expired or rejected access token is refreshed without a word and the
rotated refresh token stored; a session that ended says to sign in again with exit 1; `--output
json` is the API's JSON; `audit verify` exits 1 on a tampered chain; `audit tail` prints new
entries as they are appended; exit codes 0/1/2 as documented.

This module runs its own API server (same database, same Tenants) with a generous per-address
sign-in limit: every command here comes from 127.0.0.1 and would otherwise share that address's
10 sign-ins a minute with nothing to tell them apart.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO_ROOT
from tests.e2e.api.conftest import PASSWORD, ApiDatabase, ApiServer, TenantMaker
from tests.e2e.api.test_memberships import bearer, wait_role
from tests.helpers import eventually


@pytest.fixture(scope="module")
def cli_api(api_db: ApiDatabase, signing_key: Path, api_kubeconfig: Path,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = ApiServer(api_db, signing_key, tmp_path_factory.mktemp("cli-api") / "api.log",
                       ["--auth-rate-limit", "600/min"], kubeconfig=api_kubeconfig)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


class Cli:
    """`tenantry ...` with its own $XDG_CONFIG_HOME, pointed at the API."""

    def __init__(self, api: ApiServer, home: Path) -> None:
        self.api, self.home = api, home
        self.env = {key: value for key, value in os.environ.items()
                    if not key.startswith("TENANTRY_")}
        self.env.update({"XDG_CONFIG_HOME": str(home / "config"), "HOME": str(home),
                         "TENANTRY_API_URL": api.url})

    @property
    def token_file(self) -> Path:
        return self.home / "config" / "tenantry" / "credentials.json"

    def __call__(self, *args: str, stdin: str = "", env: dict[str, str] | None = None,
                 ) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "tenantry", *args], input=stdin,
                              capture_output=True, text=True, cwd=REPO_ROOT, check=False,
                              timeout=60, env={**self.env, **(env or {})})

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "tenantry", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                cwd=REPO_ROOT, env=self.env)

    def login(self, username: str) -> None:
        result = self("login", "--username", username, stdin=PASSWORD + "\n")
        assert result.returncode == 0, result.stderr

    def stored(self) -> dict[str, Any]:
        session: dict[str, Any] = json.loads(self.token_file.read_text())["sessions"][
            self.api.url]
        return session

    def store(self, **changes: Any) -> None:
        data = json.loads(self.token_file.read_text())
        data["sessions"][self.api.url].update(changes)
        self.token_file.write_text(json.dumps(data))

    def json(self, *args: str) -> Any:
        result = self(*args, "--output", "json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)


@pytest.fixture
def cli(cli_api: ApiServer, tmp_path: Path) -> Cli:
    return Cli(cli_api, tmp_path)


@pytest.fixture
def admin_of(cli: Cli, api_db: ApiDatabase, tenant: TenantMaker,
             cli_api: ApiServer) -> tuple[str, str]:
    """A signed-in user (through `tenantry login`) who is admin of a new tenant."""
    username = api_db.add_user()
    name = tenant({username: "admin"})
    cli.login(username)
    with httpx.Client(base_url=cli_api.url) as http:
        wait_role(http, cli.stored()["accessToken"], name, "admin")
    return username, name


def test_login_keeps_the_tokens_private_and_never_prints_them(
        cli: Cli, api_db: ApiDatabase) -> None:
    username = api_db.add_user()
    result = cli("login", "--username", username, "--output", "json", stdin=PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["user"] == username
    session = cli.stored()
    assert session["user"] == username and session["expiresAt"] > time.time() + 600
    assert stat.S_IMODE(cli.token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(cli.token_file.parent.stat().st_mode) == 0o700
    for secret in (session["accessToken"], session["refreshToken"], PASSWORD):
        assert secret not in result.stdout + result.stderr
    # The same from a password file; a wrong password is exit 1 and replaces nothing.
    password_file = cli.home / "pw"
    password_file.write_text(PASSWORD + "\n")
    assert cli("login", "--username", username, "--password-file",
               str(password_file)).returncode == 0
    before = cli.stored()
    wrong = cli("login", "--username", username, stdin="not the password\n")
    assert wrong.returncode == 1 and "401" in wrong.stderr
    assert "not the password" not in wrong.stdout + wrong.stderr
    assert cli.stored() == before


def test_a_token_file_others_can_read_is_refused(cli: Cli, admin_of: tuple[str, str]) -> None:
    _, name = admin_of
    cli.token_file.chmod(0o644)
    result = cli("api-keys", "list", name)
    assert result.returncode == 2 and "chmod 600" in result.stderr
    cli.token_file.chmod(0o600)
    assert cli("api-keys", "list", name).returncode == 0


def test_an_expired_access_token_is_refreshed_silently_and_the_new_pair_kept(
        cli: Cli, admin_of: tuple[str, str], cli_api: ApiServer) -> None:
    _, name = admin_of
    first = cli.stored()
    cli.store(expiresAt=time.time() - 60)
    result = cli("api-keys", "list", name, "--output", "json")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    second = cli.stored()
    assert second["refreshToken"] != first["refreshToken"]
    assert second["accessToken"] != first["accessToken"]
    assert second["expiresAt"] > time.time() + 600

    # A token the API refuses although it looks current (here: garbage) is refreshed once and
    # the request retried; the stored pair rotates again.
    cli.store(accessToken="not-a-token")
    assert cli("api-keys", "list", name).returncode == 0
    third = cli.stored()
    assert third["refreshToken"] not in (first["refreshToken"], second["refreshToken"])
    with httpx.Client(base_url=cli_api.url) as http:
        assert http.get("/v1/me", headers=bearer(third["accessToken"])).status_code == 200


def test_logout_ends_the_session_at_the_api_and_here(cli: Cli, admin_of: tuple[str, str],
                                                     cli_api: ApiServer) -> None:
    _, name = admin_of
    session = cli.stored()
    result = cli("logout")
    assert result.returncode == 0 and "signed out" in result.stdout
    assert cli_api.url not in json.loads(cli.token_file.read_text())["sessions"]
    with httpx.Client(base_url=cli_api.url) as http:
        assert http.get("/v1/me", headers=bearer(session["accessToken"])).status_code == 401
        assert http.post("/v1/auth/refresh", json={"refresh_token": session["refreshToken"]}
                         ).status_code == 401
    after = cli("api-keys", "list", name)
    assert after.returncode == 1 and "tenantry login" in after.stderr
    assert cli("logout").stdout.startswith("not signed in")


def test_a_session_the_api_ended_says_sign_in_again(cli: Cli, admin_of: tuple[str, str],
                                                    cli_api: ApiServer) -> None:
    _, name = admin_of
    session = cli.stored()
    with httpx.Client(base_url=cli_api.url) as http:  # signed out elsewhere (another tool)
        assert http.post("/v1/auth/logout",
                         headers=bearer(session["accessToken"])).status_code == 204
    result = cli("api-keys", "list", name)
    assert result.returncode == 1 and "run `tenantry login`" in result.stderr
    assert session["refreshToken"] not in result.stderr
    assert cli_api.url not in json.loads(cli.token_file.read_text())["sessions"]


def test_api_keys_create_list_revoke(cli: Cli, admin_of: tuple[str, str],
                                     cli_api: ApiServer) -> None:
    _, name = admin_of
    created = cli("api-keys", "create", name, "--role", "viewer", "--name", "ci")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("tnt_") and "\n" not in key and "shown only now" in created.stderr
    listing = cli.json("api-keys", "list", name)
    (entry,) = listing["items"]
    assert entry["prefix"].startswith(key[:12]) and key not in json.dumps(listing)
    table = cli("api-keys", "list", name)
    assert entry["id"] in table.stdout and "live" in table.stdout

    # The key works as a viewer, and the CLI uses it from $TENANTRY_API_KEY: a viewer may not
    # read the ledger (exit 1, the API's 403).
    viewer_read = cli("audit", "list", name, env={"TENANTRY_API_KEY": key})
    assert viewer_read.returncode == 1 and "403" in viewer_read.stderr
    revoked = cli.json("api-keys", "revoke", name, entry["id"])
    assert revoked == {"id": entry["id"], "revoked": True}
    with httpx.Client(base_url=cli_api.url) as http:
        assert http.get(f"/v1/tenants/{name}/api-keys",
                        headers=bearer(key)).status_code == 401
    assert cli.json("api-keys", "list", name)["items"][0]["revokedAt"]
    missing = cli("api-keys", "revoke", name, "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "404" in missing.stderr
    assert cli("api-keys", "create", name, "--role", "root").returncode == 2


def test_an_admin_api_key_reads_the_ledger_without_signing_in(
        cli: Cli, admin_of: tuple[str, str], tmp_path: Path) -> None:
    username, name = admin_of
    key = cli("api-keys", "create", name, "--role", "admin").stdout.strip()
    key_file = tmp_path / "key"
    key_file.write_text(key + "\n")
    assert cli("logout").returncode == 0

    def created() -> list[dict[str, Any]] | None:
        page = cli.json("audit", "list", name, "--api-key-file", str(key_file))
        assert page["chain"] == name
        return page["items"] or None

    (entry,) = eventually(created, timeout=30, what="the key's creation in the ledger")
    assert entry["action"] == "apikey.created" and entry["actor"] == username


def _chain_with_entries(cli: Cli, name: str, count: int) -> list[dict[str, Any]]:
    for _ in range(count):
        assert cli("api-keys", "create", name, "--role", "viewer").returncode == 0

    def landed() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = cli.json("audit", "list", name)["items"]
        return items if len(items) >= count else None

    return eventually(landed, timeout=30, what=f"{count} entries on {name}")


def test_audit_list_pages_and_verify_exits_1_on_a_tampered_chain(
        cli: Cli, admin_of: tuple[str, str], api_db: ApiDatabase) -> None:
    username, name = admin_of
    items = _chain_with_entries(cli, name, 3)
    assert [e["seq"] for e in items] == [1, 2, 3]
    assert {e["actor"] for e in items} == {username}
    newest = cli.json("audit", "list", name, "--order", "desc", "--limit", "1")
    assert [e["seq"] for e in newest["items"]] == [3] and newest["next"] == 3
    table = cli("audit", "list", name, "--limit", "2")
    assert table.returncode == 0 and "apikey.created" in table.stdout
    assert "--after 2" in table.stderr

    sound = cli("audit", "verify", name)
    assert sound.returncode == 0 and "valid, 3 entries" in sound.stdout

    with api_db.tampered(name, 2):
        broken = cli("audit", "verify", name)
        assert broken.returncode == 1 and "BROKEN at seq 2" in broken.stdout
        as_json = cli("audit", "verify", name, "--output", "json")
        assert as_json.returncode == 1
        assert json.loads(as_json.stdout)["firstBreak"]["seq"] == 2


def test_audit_tail_prints_new_entries_as_they_are_appended(
        cli: Cli, admin_of: tuple[str, str]) -> None:
    _, name = admin_of
    start = _chain_with_entries(cli, name, 1)[-1]["seq"]
    tail = cli.popen("audit", "tail", name, "--after", str(start), "--interval", "0.5",
                     "--count", "2", "--output", "json")
    try:
        time.sleep(1.0)  # it is polling, caught up
        for role in ("viewer", "member"):
            assert cli("api-keys", "create", name, "--role", role).returncode == 0
        out, err = tail.communicate(timeout=30)
    finally:
        tail.kill()
    assert tail.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [e["seq"] for e in lines] == [start + 1, start + 2]
    assert [e["changes"]["role"] for e in lines] == ["viewer", "member"]


def test_usage_errors_exit_2_and_refusals_exit_1(cli: Cli, admin_of: tuple[str, str],
                                                 tenant: TenantMaker) -> None:
    _, name = admin_of
    assert cli("audit", "list").returncode == 2  # neither a tenant nor --platform
    both = cli("audit", "list", name, "--platform")
    assert both.returncode == 2 and "not both" in both.stderr
    no_url = cli("audit", "list", name, env={"TENANTRY_API_URL": ""})
    assert no_url.returncode == 2 and "TENANTRY_API_URL" in no_url.stderr
    elsewhere = cli("audit", "list", name, "--api-url", "http://127.0.0.1:9")
    assert elsewhere.returncode == 1 and "not signed in to http://127.0.0.1:9" in elsewhere.stderr
    down = cli("audit", "list", name, "--api-url", "http://127.0.0.1:9",
               env={"TENANTRY_API_KEY": "tnt_" + "x" * 38})
    assert down.returncode == 2 and "cannot reach the API" in down.stderr
    assert cli("audit", "list", name, "--api-url", "ftp://x").returncode == 2
    other = tenant({})
    refused = cli("audit", "list", other)
    assert refused.returncode == 1 and "403" in refused.stderr
    platform = cli("audit", "verify", "--platform")
    assert platform.returncode == 1 and "platform-admin" in platform.stderr
