"""The pure parts of OpenID Connect sign-in, each rule its own test, with locally signed tokens.

ID token validation (OpenID Connect Core 1.0 section 3.1.3.7) attacked by every forgery the real
provider of the e2e tests cannot be made to produce: a wrong nonce, audience or issuer, expiry,
`alg: none`, HS256 keyed with the provider's public key, an unknown kid. Then the JWKS cache's
kid rollover and its rate limit, the provider configuration's rules, discovery's issuer check,
and which user an identity links to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tenantry.api.oauth import client, github, id_token, jwks, linking, openid_discovery, providers
from tenantry.api.oauth.id_token import Expected, IdTokenInvalid

ISSUER = "https://idp.example"
CLIENT = "tenantry"
NONCE = "n-0S6_WzA2Mj-the-nonce-of-this-sign-in"
KEY = RSAKey.generate_key(2048, parameters={"kid": "k1", "use": "sig"}, private=True)
EXPECTED = Expected(issuers=(ISSUER,), client_id=CLIENT, nonce=NONCE,
                    algorithms=providers.DEFAULT_ALGORITHMS)


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": ISSUER, "aud": CLIENT, "sub": "248289761001", "iat": now, "exp": now + 300,
            "nonce": NONCE, "email": "alice@acme.example", "email_verified": True}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(payload: dict[str, Any], key: Any = KEY, **header: Any) -> str:
    return jwt.encode({"alg": "RS256", "kid": "k1", **header}, payload, key,
                      algorithms=[header.get("alg", "RS256")])


def verify(token: str, expected: Expected = EXPECTED) -> id_token.Identity:
    public = RSAKey.import_key(KEY.as_dict(private=False))
    return id_token.verify(token, public, expected, int(time.time()))


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


# -- ID token ------------------------------------------------------------------------------------

def test_a_valid_id_token_gives_the_identity() -> None:
    identity = verify(sign(claims()))
    assert identity == id_token.Identity(issuer=ISSUER, subject="248289761001",
                                         email="alice@acme.example", email_verified=True)


def test_wrong_nonce_is_refused() -> None:
    with pytest.raises(IdTokenInvalid, match="wrong nonce"):
        verify(sign(claims(nonce="the nonce of another sign-in")))


def test_missing_nonce_is_refused() -> None:
    with pytest.raises(IdTokenInvalid, match="wrong nonce"):
        verify(sign(claims(nonce=None)))


def test_wrong_audience_is_refused() -> None:
    with pytest.raises(IdTokenInvalid, match="wrong audience"):
        verify(sign(claims(aud="another-client")))


def test_several_audiences_need_azp_naming_us() -> None:
    with pytest.raises(IdTokenInvalid, match="azp"):
        verify(sign(claims(aud=[CLIENT, "another-client"])))
    assert verify(sign(claims(aud=[CLIENT, "another-client"], azp=CLIENT))).subject


def test_wrong_issuer_is_refused() -> None:
    with pytest.raises(IdTokenInvalid, match="wrong issuer"):
        verify(sign(claims(iss="https://attacker.example")))


def test_expired_token_is_refused() -> None:
    past = int(time.time()) - 3600
    with pytest.raises(IdTokenInvalid, match="expired"):
        verify(sign(claims(iat=past - 300, exp=past)))


def test_missing_exp_is_refused() -> None:
    with pytest.raises(IdTokenInvalid, match="exp missing"):
        verify(sign(claims(exp=None)))


def test_token_issued_in_the_future_is_refused() -> None:
    with pytest.raises(IdTokenInvalid, match="future"):
        verify(sign(claims(iat=int(time.time()) + 3600, exp=int(time.time()) + 7200)))


def test_alg_none_is_refused() -> None:
    token = f"{b64({'alg': 'none', 'kid': 'k1'})}.{b64(claims())}."
    with pytest.raises(IdTokenInvalid, match="alg 'none' not allowed"):
        verify(token)


def test_hs256_keyed_with_the_public_key_is_refused() -> None:
    """Algorithm confusion (RFC 8725 section 2.1): an HMAC keyed with the published key."""
    public_pem = RSAKey.import_key(KEY.as_dict(private=False)).as_pem(private=False)
    signing_input = f"{b64({'alg': 'HS256', 'kid': 'k1'})}.{b64(claims())}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    with pytest.raises(IdTokenInvalid, match="alg 'HS256' not allowed"):
        verify(forged)
    # Even when a misconfigured allow-list listed HS256, the RSA key would not verify it.
    with pytest.raises(IdTokenInvalid):
        verify(forged, Expected(issuers=(ISSUER,), client_id=CLIENT, nonce=NONCE,
                                algorithms=("HS256",)))


def test_alg_not_on_the_providers_allow_list_is_refused() -> None:
    ec = ECKey.generate_key("P-256", parameters={"kid": "k1"})
    token = jwt.encode({"alg": "ES256", "kid": "k1"}, claims(), ec, algorithms=["ES256"])
    with pytest.raises(IdTokenInvalid, match="not allowed"):
        verify(token, Expected(issuers=(ISSUER,), client_id=CLIENT, nonce=NONCE,
                               algorithms=("RS256",)))


def test_signature_by_another_key_is_refused() -> None:
    other = RSAKey.generate_key(2048, parameters={"kid": "k1"})
    with pytest.raises(IdTokenInvalid, match="bad signature"):
        verify(sign(claims(), other))


def test_crit_header_is_refused() -> None:
    with pytest.raises(IdTokenInvalid, match="crit"):
        id_token.read_header(f"{b64({'alg': 'RS256', 'crit': ['exp']})}.e30.sig",
                             providers.DEFAULT_ALGORITHMS)


def test_email_verified_must_be_the_boolean_true() -> None:
    assert verify(sign(claims(email_verified="true"))).email_verified is False
    assert verify(sign(claims(email_verified=None))).email_verified is False


# -- JWKS cache ----------------------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def jwks_document(*keys: RSAKey) -> dict[str, Any]:
    return {"keys": [k.as_dict(private=False) for k in keys]}


async def test_unknown_kid_triggers_one_refetch_then_the_new_key_is_used() -> None:
    new = RSAKey.generate_key(2048, parameters={"kid": "k2", "use": "sig"})
    documents = [jwks_document(KEY), jwks_document(KEY, new)]
    fetched: list[int] = []

    async def fetch() -> dict[str, Any]:
        fetched.append(1)
        return documents[min(len(fetched) - 1, 1)]

    cache = jwks.JwksCache(fetch, clock=FakeClock())
    assert (await cache.key("k1", "RS256")).kid == "k1"
    assert (await cache.key("k2", "RS256")).kid == "k2"  # rollover: one refetch
    assert (await cache.key("k2", "RS256")).kid == "k2"
    assert cache.fetches == 2


async def test_made_up_kids_refetch_at_most_once_per_interval() -> None:
    clock = FakeClock()

    async def fetch() -> dict[str, Any]:
        return jwks_document(KEY)

    cache = jwks.JwksCache(fetch, min_refetch_interval=60, clock=clock)
    await cache.key("k1", "RS256")
    for attempt in range(5):
        with pytest.raises(IdTokenInvalid, match="unknown kid"):
            await cache.key(f"made-up-{attempt}", "RS256")
    assert cache.fetches == 2  # the first load, then one refetch for all five
    clock.now += 61
    with pytest.raises(IdTokenInvalid, match="unknown kid"):
        await cache.key("made-up-again", "RS256")
    assert cache.fetches == 3


async def test_stale_key_set_is_reloaded() -> None:
    clock = FakeClock()

    async def fetch() -> dict[str, Any]:
        return jwks_document(KEY)

    cache = jwks.JwksCache(fetch, max_age=3600, clock=clock)
    await cache.key("k1", "RS256")
    clock.now += 3601
    await cache.key("k1", "RS256")
    assert cache.fetches == 2


def test_key_type_must_fit_the_algorithm_and_odd_keys_are_skipped() -> None:
    document = jwks_document(KEY)
    document["keys"] += [{"kty": "oct", "k": "c2VjcmV0", "kid": "k1"},
                         {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
                         {**KEY.as_dict(private=False), "kid": "enc", "use": "enc"}]
    keys = jwks.usable_keys(document)
    assert [k.kid for k in keys] == ["k1"]
    assert jwks.pick(keys, "k1", "ES256") is None
    assert jwks.pick(keys, None, "RS256") is not None  # a single key: no kid needed


# -- configuration -------------------------------------------------------------------------------

def config(tmp_path: Path, **entry: Any) -> providers.Config:
    (tmp_path / "secret").write_text("s3cret\n")
    base = {"name": "corp", "issuer": "https://login.corp.example", "clientId": "tenantry",
            "clientSecretFile": "secret"}
    merged = {k: v for k, v in {**base, **entry}.items() if v is not None}
    return providers.parse({"publicUrl": "https://api.example", "providers": [merged]},
                           tmp_path)


def test_generic_provider_defaults(tmp_path: Path) -> None:
    parsed = config(tmp_path)
    corp = parsed.providers["corp"]
    assert corp.client_secret == "s3cret" and "s3cret" not in repr(corp)
    assert corp.scopes == ("openid", "email", "profile") and corp.users == "email"
    assert parsed.redirect_uri("corp") == "https://api.example/v1/auth/oidc/corp/callback"


def test_google_preset(tmp_path: Path) -> None:
    google = config(tmp_path, name="google", issuer=None, preset="google").providers["google"]
    assert google.issuer == "https://accounts.google.com"
    assert google.issuers == ("https://accounts.google.com", "accounts.google.com")
    assert google.algorithms == ("RS256",)


@pytest.mark.parametrize(("entry", "message"), [
    ({"algorithms": ["RS256", "none"]}, r"providers\[0\].algorithms: 'none' refused"),
    ({"algorithms": ["HS256"]}, r"providers\[0\].algorithms: 'HS256' refused"),
    ({"issuer": "http://login.corp.example"}, r"providers\[0\].issuer .* must be https"),
    ({"scopes": ["email"]}, r"providers\[0\].scopes: must include openid"),
    ({"users": "username"}, r"providers\[0\].users 'username'"),
    ({"name": "Bad Name"}, r"providers\[0\].name"),
    ({"clientSecretFile": "missing"}, r"providers\[0\].clientSecretFile missing"),
    ({"clientSecret": "inline"}, r"providers\[0\]: unknown field\(s\) clientSecret"),
    ({"preset": "google"}, r"providers\[0\].issuer: set by preset google"),
])
def test_configuration_rules_name_the_field(tmp_path: Path, entry: dict[str, Any],
                                            message: str) -> None:
    with pytest.raises(providers.ConfigError, match=message):
        config(tmp_path, **entry)


def test_loopback_http_issuer_is_allowed_for_tests(tmp_path: Path) -> None:
    assert config(tmp_path, issuer="http://127.0.0.1:9000").providers["corp"].issuer


# -- discovery -----------------------------------------------------------------------------------

DISCOVERY = {"issuer": ISSUER, "authorization_endpoint": f"{ISSUER}/auth",
             "token_endpoint": f"{ISSUER}/token", "jwks_uri": f"{ISSUER}/jwks",
             "code_challenge_methods_supported": ["S256"]}


def test_discovery_for_another_issuer_is_refused() -> None:
    with pytest.raises(openid_discovery.DiscoveryError, match="is not"):
        openid_discovery.parse({**DISCOVERY, "issuer": "https://attacker.example"}, ISSUER)


def test_discovery_without_s256_is_refused() -> None:
    with pytest.raises(openid_discovery.DiscoveryError, match="S256"):
        openid_discovery.parse({**DISCOVERY, "code_challenge_methods_supported": ["plain"]},
                               ISSUER)


def test_discovery_endpoints_must_be_https() -> None:
    with pytest.raises(openid_discovery.DiscoveryError, match="token_endpoint"):
        openid_discovery.parse({**DISCOVERY, "token_endpoint": "http://idp.example/t"}, ISSUER)


# -- linking -------------------------------------------------------------------------------------

def identity(**changes: Any) -> id_token.Identity:
    base: dict[str, Any] = {"issuer": ISSUER, "subject": "Sub-1", "email": "Alice@Acme.example",
                            "email_verified": True}
    return id_token.Identity(**{**base, **changes})


def test_verified_email_is_the_login_name(tmp_path: Path) -> None:
    corp = config(tmp_path).providers["corp"]
    assert linking.plan(corp, identity()) == linking.Plan("corp", "Sub-1", "alice@acme.example")


@pytest.mark.parametrize("changes", [{"email_verified": False}, {"email": None}])
def test_unverified_or_missing_email_is_not_linkable(tmp_path: Path,
                                                     changes: dict[str, Any]) -> None:
    with pytest.raises(linking.NotLinkable, match="did not verify"):
        linking.plan(config(tmp_path).providers["corp"], identity(**changes))


def test_users_by_sub_never_use_the_email(tmp_path: Path) -> None:
    corp = config(tmp_path, users="sub").providers["corp"]
    plan = linking.plan(corp, identity(email_verified=False))
    assert plan.username.startswith("corp:") and "alice" not in plan.username
    assert plan.username == plan.username.lower()
    assert linking.plan(corp, identity(subject="12345")).username == "corp:12345"


# -- GitHub preset -------------------------------------------------------------------------------

def test_github_preset_defaults_and_enterprise_urls(tmp_path: Path) -> None:
    com = config(tmp_path, name="github", issuer=None, preset="github").providers["github"]
    assert (com.kind, com.issuer, com.api_url) == ("github", "https://github.com",
                                                   "https://api.github.com")
    assert com.scopes == ("read:user", "user:email")
    ghe = config(tmp_path, name="ghe", issuer=None, preset="github",
                 baseUrl="https://ghe.example").providers["ghe"]
    assert ghe.api_url == "https://ghe.example/api/v3"


def test_github_fields_only_with_the_github_preset(tmp_path: Path) -> None:
    with pytest.raises(providers.ConfigError, match=r"providers\[0\].baseUrl: only for preset"):
        config(tmp_path, baseUrl="https://ghe.example")


def test_github_identity_is_the_numeric_id_and_the_verified_primary_email() -> None:
    user = {"login": "octocat", "id": 583231, "email": "public@anything.example"}
    emails = [{"email": "other@acme.example", "primary": False, "verified": True},
              {"email": "octo@acme.example", "primary": True, "verified": True}]
    assert github.identity_from(user, emails, "https://github.com") == id_token.Identity(
        issuer="https://github.com", subject="583231", email="octo@acme.example",
        email_verified=True)


def test_github_unverified_primary_or_public_email_is_not_verified() -> None:
    user = {"login": "mallory", "id": 7, "email": "victim@acme.example"}
    unverified = github.identity_from(
        user, [{"email": "m@mallory.example", "primary": True, "verified": False}], "gh")
    assert unverified.email == "m@mallory.example" and not unverified.email_verified
    assert github.identity_from(user, [], "gh").email is None


def test_github_user_without_a_numeric_id_is_refused() -> None:
    with pytest.raises(client.IdpError, match="numeric id"):
        github.identity_from({"login": "octocat", "id": "583231"}, [], "gh")
