"""The identity-provider configuration file of `tenantry api run --oauth-config FILE`.

Three kinds of entry: a generic OpenID Connect provider (by its issuer), the `google` preset
(an OIDC provider whose issuer is known) and the `github` preset (OAuth 2 and GitHub's REST
API, `github`; `baseUrl`/`apiUrl` for GitHub Enterprise Server).

YAML (or JSON), Kubernetes-style field names; secrets are never in the file, only the path of
a file holding them (a mounted Secret):

    publicUrl: https://api.tenantry.example        # where browsers reach this API
    providers:
      - name: google                               # the {provider} of /v1/auth/oidc/{provider}/...
        preset: google                             # issuer https://accounts.google.com
        clientId: 1234.apps.googleusercontent.com
        clientSecretFile: /etc/tenantry/oauth/google
      - name: corp
        issuer: https://login.corp.example         # discovery at {issuer}/.well-known/...
        clientId: tenantry
        clientSecretFile: /etc/tenantry/oauth/corp
        scopes: [openid, email, profile]           # default
        users: email                               # or: sub (see `linking`)
        algorithms: [RS256, ES256]                 # ID token algorithms accepted (allow-list)
        groupsClaim: groups                        # default; Tenant members of kind Group match
        groupsPrefix: "oidc:"                      # as the apiserver's --oidc-groups-prefix
      - name: github
        preset: github                             # OAuth 2 + the user and emails API
        baseUrl: https://github.example            # GitHub Enterprise (default github.com)
        apiUrl: https://github.example/api/v3      # default: api.github.com, or baseUrl/api/v3
        clientId: Iv1.0123456789abcdef
        clientSecretFile: /etc/tenantry/oauth/github

Every rule is checked at start-up with an error naming the field (`ConfigError`): names are
URL-safe, issuers are https (http only for loopback, for tests and `dev up`), scopes include
`openid`, and the algorithm allow-list holds only asymmetric JWS algorithms: `none` and the
HS* family are refused, since an HMAC "signature" keyed with a public key proves nothing
(RFC 8725 section 2.1).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

#: Asymmetric JWS algorithms (RFC 7518, RFC 8037) an ID token may be signed with.
ASYMMETRIC_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                         "ES256", "ES384", "ES512", "EdDSA")
DEFAULT_ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA")
DEFAULT_SCOPES = ("openid", "email", "profile")
USER_MATCHING = ("email", "sub")

#: Presets fill in what a well-known provider always is; the file can still override scopes.
PRESETS: Mapping[str, Mapping[str, Any]] = {
    "google": {"issuer": "https://accounts.google.com",
               # Google documents ID tokens whose iss lacks the scheme.
               "accepted_issuers": ("https://accounts.google.com", "accounts.google.com"),
               "algorithms": ("RS256",)},
    "github": {"kind": "github", "scopes": ("read:user", "user:email")},
}
GITHUB_COM = "https://github.com"
GITHUB_COM_API = "https://api.github.com"

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")


class ConfigError(ValueError):
    """The configuration file breaks a rule; the message names the field."""


@dataclasses.dataclass(frozen=True)
class Provider:
    name: str
    issuer: str
    client_id: str
    client_secret: str = dataclasses.field(repr=False)
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    users: str = "email"
    """How an identity finds its local user: by verified e-mail, or by subject alone."""
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    accepted_issuers: tuple[str, ...] = ()
    """`iss` values an ID token may carry (default: just `issuer`)."""
    kind: str = "oidc"
    """`oidc` (discovery, ID token) or `github` (OAuth 2 and GitHub's REST API)."""
    api_url: str = ""
    """GitHub's REST API base (`kind` github only); `issuer` is then GitHub's web base URL."""
    groups_claim: str = "groups"
    groups_prefix: str = ""

    @property
    def issuers(self) -> tuple[str, ...]:
        return self.accepted_issuers or (self.issuer,)


@dataclasses.dataclass(frozen=True)
class Config:
    public_url: str
    providers: Mapping[str, Provider]

    def redirect_uri(self, provider: str) -> str:
        return f"{self.public_url}/v1/auth/oidc/{provider}/callback"


def _loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(value: object, field: str) -> str:
    """An absolute https URL (http only on loopback), without query or fragment."""
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{field}: required, an https URL")
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("https", "http") or not parsed.hostname:
        raise ConfigError(f"{field} {value!r}: must be an absolute https URL")
    if parsed.scheme == "http" and not _loopback(parsed.hostname):
        raise ConfigError(f"{field} {value!r}: must be https (http only for loopback)")
    if parsed.query or parsed.fragment:
        raise ConfigError(f"{field} {value!r}: no query or fragment")
    return value.rstrip("/")


def _strings(value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not value or \
            not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{field}: a non-empty list of strings")
    return tuple(value)


def check_algorithms(value: object, field: str) -> tuple[str, ...]:
    algorithms = _strings(value, field)
    for alg in algorithms:
        if alg not in ASYMMETRIC_ALGORITHMS:
            raise ConfigError(f"{field}: {alg!r} refused; only asymmetric algorithms "
                              f"({', '.join(ASYMMETRIC_ALGORITHMS)}), never none or HS*")
    return algorithms


def _read_secret(path: object, field: str, base: Path) -> str:
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{field}: required, the path of a file holding the client secret")
    try:
        text = (base / path).read_text()
    except OSError as error:
        raise ConfigError(f"{field} {path}: {error.strerror}") from None
    secret = text.removesuffix("\n").removesuffix("\r")
    if not secret:
        raise ConfigError(f"{field} {path}: empty")
    return secret


_FIELDS = {"name", "preset", "issuer", "clientId", "clientSecretFile", "scopes", "users",
           "algorithms", "baseUrl", "apiUrl", "groupsClaim", "groupsPrefix"}
_GITHUB_ONLY = ("baseUrl", "apiUrl")
_CLAIM_NAME = re.compile(r"^[A-Za-z0-9_:.\-/]{1,128}$")


def parse_provider(entry: object, index: int, base: Path) -> Provider:
    where = f"providers[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: a mapping")
    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"{where}.name: required, 1-32 of a-z, 0-9 and '-'")
    preset: Mapping[str, Any] = {}
    if "preset" in entry:
        if entry["preset"] not in PRESETS:
            raise ConfigError(f"{where}.preset {entry['preset']!r}: one of "
                              f"{', '.join(PRESETS)}")
        preset = PRESETS[entry["preset"]]
        if "issuer" in entry:
            raise ConfigError(f"{where}.issuer: set by preset {entry['preset']}; remove it")
    kind = preset.get("kind", "oidc")
    for field in _GITHUB_ONLY:
        if field in entry and kind != "github":
            raise ConfigError(f"{where}.{field}: only for preset github")
    api_url = ""
    if kind == "github":
        issuer = check_url(entry.get("baseUrl", GITHUB_COM), f"{where}.baseUrl")
        api_url = check_url(entry.get("apiUrl", GITHUB_COM_API if issuer == GITHUB_COM
                                      else f"{issuer}/api/v3"), f"{where}.apiUrl")
    else:
        issuer = check_url(entry.get("issuer", preset.get("issuer")), f"{where}.issuer")
    client_id = entry.get("clientId")
    if not isinstance(client_id, str) or not client_id:
        raise ConfigError(f"{where}.clientId: required")
    scopes = _strings(entry.get("scopes", list(preset.get("scopes", DEFAULT_SCOPES))),
                      f"{where}.scopes")
    if kind == "oidc" and "openid" not in scopes:
        raise ConfigError(f"{where}.scopes: must include openid")
    users = entry.get("users", "email")
    if users not in USER_MATCHING:
        raise ConfigError(f"{where}.users {users!r}: one of {', '.join(USER_MATCHING)}")
    algorithms = check_algorithms(
        entry.get("algorithms", list(preset.get("algorithms", DEFAULT_ALGORITHMS))),
        f"{where}.algorithms")
    groups_claim = entry.get("groupsClaim", "groups")
    if not isinstance(groups_claim, str) or not _CLAIM_NAME.match(groups_claim):
        raise ConfigError(f"{where}.groupsClaim: a claim name (letters, digits, _ - : .)")
    groups_prefix = entry.get("groupsPrefix", "")
    if not isinstance(groups_prefix, str) or len(groups_prefix) > 64:
        raise ConfigError(f"{where}.groupsPrefix: a string of at most 64 characters")
    return Provider(
        name=name, issuer=issuer, client_id=client_id,
        client_secret=_read_secret(entry.get("clientSecretFile"), f"{where}.clientSecretFile",
                                   base),
        scopes=scopes, users=users, algorithms=algorithms,
        accepted_issuers=tuple(preset.get("accepted_issuers", ())), kind=kind, api_url=api_url,
        groups_claim=groups_claim, groups_prefix=groups_prefix)


def parse(document: object, base: Path) -> Config:
    """The configuration from a parsed document; secret file paths are relative to `base`."""
    if not isinstance(document, dict):
        raise ConfigError("oauth config: a mapping with publicUrl and providers")
    unknown = sorted(set(document) - {"publicUrl", "providers"})
    if unknown:
        raise ConfigError(f"oauth config: unknown field(s) {', '.join(unknown)}")
    public_url = check_url(document.get("publicUrl"), "publicUrl")
    entries = document.get("providers")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("providers: a non-empty list")
    providers: dict[str, Provider] = {}
    for index, entry in enumerate(entries):
        provider = parse_provider(entry, index, base)
        if provider.name in providers:
            raise ConfigError(f"providers[{index}].name {provider.name!r}: duplicate")
        providers[provider.name] = provider
    return Config(public_url=public_url, providers=providers)


def load(path: Path) -> Config:
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"--oauth-config {path}: {error.strerror}") from None
    try:
        document = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        raise ConfigError(f"--oauth-config {path}: not valid YAML/JSON "
                          f"({type(error).__name__})") from None
    return parse(document, path.parent)
