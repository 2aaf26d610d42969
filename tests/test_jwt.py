"""JWTAuth against a real JWKS/discovery server on 127.0.0.1, tokens minted by joserfc."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from joserfc.jwk import OctKey
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from asgi_auth import AuthMiddleware, Identity, JWTAuth
from asgi_auth.authenticator import RequestInfo
from asgi_auth.errors import AuthError, ServiceUnavailable
from asgi_auth.flow import AsyncDriver, SyncDriver
from asgi_auth.jose import TokenError
from tests.idp import IdP, mint, new_key, public_jwk, running_idp

REQ = RequestInfo("GET", "/", "http", "127.0.0.1")
ASYMMETRIC = [
    "RS256",
    "RS384",
    "RS512",
    "PS256",
    "PS384",
    "PS512",
    "ES256",
    "ES384",
    "ES512",
    "ES256K",
    "EdDSA",
    "Ed25519",
]

pytestmark = pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def idp() -> Iterator[IdP]:
    with running_idp() as server:
        yield server


@pytest.fixture
def clock(idp: IdP) -> Clock:
    c = Clock()
    idp.clock = c  # tokens are minted at the authenticator's time
    return c


def check(auth: JWTAuth, token: str) -> Identity:
    cached = auth.cached(token)
    return cached if cached is not None else SyncDriver().run(auth.flow(token, REQ))


def rejects(auth: JWTAuth, token: str) -> AuthError:
    with pytest.raises(AuthError) as info:
        check(auth, token)
    err = info.value
    # The middleware tries `quick` (no I/O) before the flow: it must refuse the token the
    # same way, or hand it to the flow; never accept it.
    again: AuthError | None = None
    try:
        got = auth.quick(token)
    except AuthError as exc:
        again, got = exc, None
    assert got is None
    if again is not None:
        assert (type(again), again.reason) == (type(err), err.reason)
    return err


# -- algorithms ------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ASYMMETRIC)
def test_every_asymmetric_algorithm_via_discovery(idp: IdP, alg: str) -> None:
    idp.add_key(alg)
    auth = JWTAuth(idp.issuer, "api", algorithms=[alg])
    ident = check(auth, idp.token())
    assert ident.subject == "user-1"
    assert ident.scopes == {"read", "write"}
    assert ident.method == "jwt"
    assert ident.issuer == idp.issuer
    assert idp.fetches == 1


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_with_a_static_secret(alg: str) -> None:
    key = new_key(alg)
    now = int(time.time())
    token = mint(key, {"iss": "svc", "aud": "api", "sub": "s", "exp": now + 60}, alg=alg)
    auth = JWTAuth("svc", "api", algorithms=[alg], keys=key.raw_value)
    assert check(auth, token).subject == "s"


def test_hmac_is_never_taken_from_a_url(idp: IdP) -> None:
    with pytest.raises(ValueError, match="static secret"):
        JWTAuth(idp.issuer, "api", algorithms=["HS256"])


@pytest.mark.parametrize("form", ["pem", "jwk", "jwks", "cert"])
def test_static_public_keys(form: str) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = new_key("RS256")
    now = int(time.time())
    token = mint(key, {"iss": "i", "aud": "api", "sub": "s", "exp": now + 60}, alg="RS256")
    private = key.private_key
    if form == "pem":
        material: Any = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    elif form == "jwk":
        material = public_jwk(key, "k1")
    elif form == "jwks":
        material = {"keys": [public_jwk(key, "k1")]}
    else:
        import datetime as dt

        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private.public_key())
            .serial_number(1)
            .not_valid_before(dt.datetime(2020, 1, 1))
            .not_valid_after(dt.datetime(2040, 1, 1))
            .sign(private, hashes.SHA256())
        )
        material = cert.public_bytes(serialization.Encoding.PEM)
    auth = JWTAuth("i", "api", algorithms=["RS256"], keys=material)
    assert check(auth, token).subject == "s"


def test_rfc8414_discovery_fallback(idp: IdP) -> None:
    idp.discovery = "rfc8414"
    idp.add_key("ES256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"])
    assert check(auth, idp.token()).subject == "user-1"


def test_discovery_naming_another_issuer_is_refused(idp: IdP) -> None:
    idp.discovery = "wrong-issuer"
    idp.add_key("ES256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"])
    err = rejects(auth, idp.token())
    assert isinstance(err, ServiceUnavailable)
    assert idp.fetches == 0


# -- claims ----------------------------------------------------------------------------


@pytest.fixture
def es(idp: IdP, clock: Clock) -> JWTAuth:
    idp.add_key("ES256")
    return JWTAuth(
        idp.issuer,
        ["api", "other"],
        algorithms=["ES256"],
        jwks_uri=idp.jwks_uri,
        clock=clock,
        leeway=10,
    )


@pytest.mark.parametrize(
    ("claims", "description"),
    [
        ({"exp": None}, "token has no exp"),
        ({"exp": "tomorrow"}, "malformed exp"),
        # Times relative to the authenticator's clock, resolved in the test:
        # values computed at collection would drift into validity on a slow run.
        ({"exp": -60}, "token expired"),
        ({"nbf": 120}, "token not yet valid"),
        ({"iat": 120}, "token issued in the future"),
        ({"aud": "someone-else"}, "invalid audience"),
        ({"aud": ["x", "y"]}, "invalid audience"),
        ({"aud": None}, "invalid audience"),
        ({"aud": 5}, "invalid audience"),
        ({"iss": "https://evil.example"}, "invalid issuer"),
        ({"iss": None}, "invalid issuer"),
        ({"sub": None, "client_id": None}, "token has no subject"),
    ],
)
def test_claims_are_checked(
    idp: IdP, es: JWTAuth, clock: Clock, claims: dict[str, Any], description: str
) -> None:
    for name in ("exp", "nbf", "iat"):
        if type(claims.get(name)) is int:
            claims = {**claims, name: int(clock.now) + claims[name]}
    err = rejects(es, idp.token(**claims))
    assert err.status == 401
    assert err.error == "invalid_token"
    assert err.description == description


def test_leeway_applies(idp: IdP, es: JWTAuth, clock: Clock) -> None:
    assert check(es, idp.token(exp=int(clock.now) - 5)).subject == "user-1"
    assert check(es, idp.token(nbf=int(clock.now) + 5)).subject == "user-1"


def test_audience_list_and_required_claims(idp: IdP, clock: Clock) -> None:
    idp.add_key("ES256")
    auth = JWTAuth(
        idp.issuer,
        "api",
        algorithms=["ES256"],
        jwks_uri=idp.jwks_uri,
        required_claims=["jti"],
        clock=clock,
    )
    assert rejects(auth, idp.token(aud=["x", "api"])).description == "token has no jti"
    assert check(auth, idp.token(aud=["x", "api"], jti="1")).subject == "user-1"


def test_scopes_from_scp_list_and_custom_claims(idp: IdP) -> None:
    idp.add_key("ES256")
    auth = JWTAuth(
        idp.issuer,
        "api",
        algorithms=["ES256"],
        jwks_uri=idp.jwks_uri,
        scope_claims=["scp", "realm_access.roles", lambda c: c.get("roles", [])],
    )
    ident = check(
        auth, idp.token(scope=None, scp=["a", "b"], realm_access={"roles": ["admin"]}, roles=["r1"])
    )
    assert ident.scopes == {"a", "b", "admin", "r1"}
    ident = check(auth, idp.token(scope=None, scp="x y"))
    assert ident.scopes == {"x", "y"}


@pytest.mark.parametrize(
    ("claims", "scopes"),
    [
        ({"scope": "a b  c"}, {"a", "b", "c"}),
        ({"scope": None, "scp": ["a", "b", 7]}, {"a", "b"}),
        ({"scope": None, "scp": "x y"}, {"x", "y"}),
        ({"scope": "a", "scp": ["b"]}, {"a", "b"}),  # both: the union
        ({"scope": None}, set()),
        ({"scope": 5}, set()),
        ({"scope": ["a", {"b": 1}]}, {"a"}),
        ({"scope": ""}, set()),
    ],
)
def test_scopes_with_the_default_claims(
    idp: IdP, es: JWTAuth, claims: dict[str, Any], scopes: set[str]
) -> None:
    assert check(es, idp.token(**claims)).scopes == scopes


@pytest.mark.parametrize(
    ("subject_claim", "claims", "subject"),
    [
        ("oid", {"oid": "o-1"}, "o-1"),
        ("ext.uid", {"ext": {"uid": "u-9"}}, "u-9"),
        ("ext.uid", {"ext": "flat", "client_id": "c-1"}, "c-1"),
    ],
)
def test_subject_from_a_configured_claim(
    idp: IdP, es: JWTAuth, subject_claim: str, claims: dict[str, Any], subject: str
) -> None:
    auth = JWTAuth(
        idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, subject_claim=subject_claim
    )
    assert check(auth, idp.token(**claims)).subject == subject


def test_subject_falls_back_to_client_id(idp: IdP, es: JWTAuth) -> None:
    ident = check(es, idp.token(sub=None, client_id="machine-7"))
    assert ident.subject == "machine-7"
    assert ident.client_id == "machine-7"


def test_typ_enforced_when_configured(idp: IdP) -> None:
    key = idp.add_key("ES256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, typ="at+jwt")
    now = int(time.time())
    claims = {"iss": idp.issuer, "aud": "api", "sub": "u", "exp": now + 60}
    assert rejects(auth, mint(key, claims, alg="ES256", typ="JWT")).description == (
        "wrong token type"
    )
    assert rejects(auth, mint(key, claims, alg="ES256")).description == "wrong token type"
    assert check(auth, mint(key, claims, alg="ES256", typ="at+jwt")).subject == "u"
    assert check(auth, mint(key, claims, alg="ES256", typ="application/at+JWT")).subject == "u"


# -- attacks ---------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, Any], claims: dict[str, Any], sig: bytes = b"") -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(sig)}"


@pytest.fixture
def rsa_idp(idp: IdP) -> IdP:
    idp.add_key("RS256")
    return idp


def _claims(idp: IdP) -> dict[str, Any]:
    return {"iss": idp.issuer, "aud": "api", "sub": "admin", "exp": int(time.time()) + 600}


@pytest.mark.parametrize("none", ["none", "None", "NONE", "nOnE"])
def test_alg_none_in_any_case(rsa_idp: IdP, none: str) -> None:
    auth = JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"])
    for sig in (b"", b"x"):
        err = rejects(auth, _forge({"alg": none, "kid": "k1"}, _claims(rsa_idp), sig))
        assert err.status == 401


def test_hs256_signed_with_the_rsa_public_key(rsa_idp: IdP) -> None:
    import hashlib
    import hmac

    from cryptography.hazmat.primitives import serialization

    key = rsa_idp.keys["k1"][0]
    pem = key.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_text = json.dumps(public_jwk(key, "k1")).encode()
    # HS256 is not allowed for this issuer: refused before any key is looked at. (With
    # HS256 allowed beside a secret, the key-type check refuses it: test_jwt_keys.py.)
    auth = JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"])
    for secret in (pem, jwk_text):
        head = _b64(json.dumps({"alg": "HS256", "kid": "k1"}).encode())
        body = _b64(json.dumps(_claims(rsa_idp)).encode())
        sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        err = rejects(auth, f"{head}.{body}.{_b64(sig)}")
        assert err.description == "token algorithm not allowed"
    # And a JWKS-backed issuer can never be configured for HS256 at all.
    with pytest.raises(ValueError):
        JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256", "HS256"])


@pytest.mark.parametrize("field", ["jwk", "jku", "x5u", "x5c"])
def test_embedded_key_headers_never_choose_the_key(rsa_idp: IdP, field: str) -> None:
    evil = new_key("RS256")
    evil_jwk = public_jwk(evil, "k1")
    value: Any = {
        "jwk": evil_jwk,
        "jku": "http://127.0.0.1:1/evil-jwks",
        "x5u": "http://127.0.0.1:1/evil.pem",
        "x5c": ["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"],
    }[field]
    token = mint(evil, _claims(rsa_idp), alg="RS256", kid="k1", **{field: value})
    auth = JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"])
    assert rejects(auth, token).description == "invalid signature"


@pytest.mark.parametrize(
    "kid",
    [
        "../../etc/passwd",
        "' OR 1=1 --",
        "k1\x00",
        "/dev/null",
        "http://evil/",
        "x" * 300,
        "k1/../k1",
    ],
)
def test_kid_injection_strings(rsa_idp: IdP, kid: str) -> None:
    auth = JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"])
    key = rsa_idp.keys["k1"][0]
    err = rejects(auth, mint(key, _claims(rsa_idp), alg="RS256", kid=kid))
    assert err.status == 401
    assert err.description in ("unknown signing key", "malformed kid")


def test_crit_header_rejected(rsa_idp: IdP) -> None:
    key = rsa_idp.keys["k1"][0]
    auth = JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"])
    token = mint(key, _claims(rsa_idp), alg="RS256", crit=["b64"], b64=True)
    assert rejects(auth, token).description == "unsupported critical header"


def test_signature_stripped_payload_swapped_and_one_byte_changed(rsa_idp: IdP) -> None:
    auth = JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"])
    good = rsa_idp.token()
    head, body, sig = good.split(".")
    assert check(auth, good).subject == "user-1"
    swapped = _b64(json.dumps({**_claims(rsa_idp), "scope": "admin"}).encode())
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    for token in (
        f"{head}.{body}.",
        f"{head}.{body}",
        f"{head}.{swapped}.{sig}",
        f"{head}.{body}.{flipped}",
    ):
        err = rejects(auth, token)
        assert err.status == 401, token


@pytest.mark.parametrize(
    "token",
    [
        "a.b.c.d.e",  # JWE-shaped
        "not-a-token",
        "eyJhbGciOiJSUzI1NiJ9.%%%.abc",
        "e30.e30.",  # {}.{}.
        "W10.e30.AA",  # header is a JSON array
        "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOj.AA",  # truncated JSON
        "eyJhbGciOiJSUzI1NiJ9==.e30.AA",  # padding
        "eyJhbGciOiJSUzI1NiJ9.e30+.AA",  # standard alphabet: '+'
        "eyJhbGciOiJSUzI1NiJ9.e30/.AA",  # standard alphabet: '/'
    ],
)
def test_malformed_tokens(rsa_idp: IdP, token: str) -> None:
    auth = JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"])
    err = rejects(auth, token)
    assert err.status == 401
    assert rsa_idp.fetches == 0  # junk never causes a key fetch


def test_oversized_token_is_refused_by_the_middleware(rsa_idp: IdP) -> None:
    app = AuthMiddleware(
        _app(), authenticators=[JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"])]
    )
    big = rsa_idp.token(padding="x" * 50_000)
    with _client(app) as c:
        r = c.get("/", headers={"Authorization": f"Bearer {big}"})
    assert r.status_code == 401
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert rsa_idp.fetches == 0  # refused before any parsing or key fetch


def test_a_token_respelled_in_the_standard_alphabet_is_refused(rsa_idp: IdP) -> None:
    # '+' and '/' decode to the same bytes as '-' and '_' in a lenient decoder, so a
    # re-spelled signature would still verify: the token must be refused as malformed.
    auth = JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"])
    app = AuthMiddleware(_app(), authenticators=[auth])
    # A signature with a '-' or '_' to re-spell (the payload's would be another error).
    token = next(
        t for t in (rsa_idp.token(n=i) for i in range(50)) if {"-", "_"} & set(t.split(".")[2])
    )
    i = max(token.rfind("-"), token.rfind("_"))
    respelled = token[:i] + {"-": "+", "_": "/"}[token[i]] + token[i + 1 :]
    with _client(app) as c:
        bad = c.get("/", headers={"Authorization": f"Bearer {respelled}"})
        good = c.get("/", headers={"Authorization": f"Bearer {token}"})
        again = c.get("/", headers={"Authorization": f"Bearer {respelled}"})  # token cached
    assert (bad.status_code, good.status_code, again.status_code) == (401, 200, 401)
    assert bad.json()["error_description"] == "malformed token signature"
    assert rejects(auth, respelled).status == 401


@pytest.mark.parametrize("char", [" ", "\t", "\x7f", "\x00", "é"])
def test_a_token_with_invisible_or_non_ascii_characters_is_a_bad_request(
    rsa_idp: IdP, char: str
) -> None:
    # JWTAuth parses strictly, so the middleware leaves the visible-ASCII check to it:
    # the answer must stay what it is for every other credential, 400 invalid_request.
    auth = JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"])
    app = AuthMiddleware(_app(), authenticators=[auth])
    token = rsa_idp.token()
    for bad in (token[:20] + char + token[20:], token[:-5] + char + token[-5:]):
        err = rejects(auth, bad)
        assert (err.status, err.reason) == (400, "malformed_header")
        with _client(app) as c:
            r = c.get("/", headers={b"Authorization": f"Bearer {bad}".encode()})
        assert r.status_code == 400, repr(char)
        assert 'error="invalid_request"' in r.headers["www-authenticate"]
    assert rsa_idp.fetches == 0


def test_a_refused_token_is_not_reachable_through_the_error_chain(rsa_idp: IdP) -> None:
    # Error hooks and error trackers walk __context__ and __cause__; a UnicodeEncodeError
    # there would carry the whole credential.
    auth = JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"])
    token = rsa_idp.token()
    for bad in (token[:30] + "é" + token[30:], token[:-4] + "é" + token[-4:]):
        for run in (check, JWTAuth.quick):
            with pytest.raises(AuthError) as info:
                run(auth, bad)
            seen: list[BaseException] = []
            exc: BaseException | None = info.value
            while exc is not None and len(seen) < 10:
                seen.append(exc)
                exc = exc.__cause__ or exc.__context__
            assert info.value.status == 400
            for e in seen:
                assert not any(bad in str(a) or token[:30] in str(a) for a in e.args), e
                assert not isinstance(e, UnicodeError), seen


@pytest.mark.parametrize(
    "segment",
    [
        b"\xff\xfe not utf-8 at all",  # UnicodeDecodeError holds the bytes
        b'{"iss": "https://idp", "secret-looking": ',  # JSONDecodeError holds the text
        b"[" * 5000,  # RecursionError
    ],
)
def test_a_malformed_segment_leaves_no_exception_context(rsa_idp: IdP, segment: bytes) -> None:
    # `raise ... from None` only hides the context: it stays on __context__, where an
    # error hook or tracker can read the decoded segment of an opaque credential.
    auth = JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"])
    head, _, sig = rsa_idp.token().split(".")
    for token in (f"{head}.{_b64(segment)}.{sig}", f"{_b64(segment)}.{_b64(segment)}.{sig}"):
        for run in (check, JWTAuth.quick):
            with pytest.raises(AuthError) as info:
                run(auth, token)
            assert info.value.__context__ is None and info.value.__cause__ is None
            assert info.value.reason == "malformed_token"


def test_json_whitespace_around_a_segment_is_json() -> None:
    # RFC 8259 allows whitespace around a value, before as well as after it: both parse
    # (and the signature still decides).
    secret = b"s" * 32
    auth = JWTAuth("svc", "api", algorithms=["HS256"], keys=secret)
    claims = json.dumps({"iss": "svc", "aud": "api", "sub": "u", "exp": int(time.time()) + 60})
    for payload in (f" {claims}", f"{claims}\n", f"\t{claims} "):
        head = _b64(b'{"alg":"HS256"}')
        body = _b64(payload.encode())
        sig = hmac.digest(secret, f"{head}.{body}".encode(), "sha256")
        assert check(auth, f"{head}.{body}.{_b64(sig)}").subject == "u"
        assert rejects(auth, f"{head}.{body}.{_b64(sig[::-1])}").reason == "bad_signature"


@pytest.mark.parametrize(
    ("token", "reason", "description"),
    [
        ("..", "malformed_token", "malformed token header"),
        ("eyJhbGciOiJIUzI1NiJ9..AA", "alg_not_allowed", "token algorithm not allowed"),
        ("eyJhbGciOiJSUzI1NiJ9..AA", "malformed_token", "malformed token payload"),
        ("a.b", "malformed_token", "not a signed JWT"),
    ],
)
def test_empty_segments_fail_where_they_are(
    rsa_idp: IdP, token: str, reason: str, description: str
) -> None:
    err = rejects(JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"]), token)
    assert (err.status, err.reason, err.description) == (401, reason, description)


def test_a_bad_credential_is_named_by_where_it_came_from(rsa_idp: IdP) -> None:
    class HeaderJWT(JWTAuth):
        header = "x-token"

    app = AuthMiddleware(
        _app(), authenticators=[HeaderJWT(rsa_idp.issuer, "api", algorithms=["RS256"])]
    )
    bad = rsa_idp.token()[:20] + "\x01" + rsa_idp.token()[20:]
    with _client(app) as c:
        r = c.get("/", headers={"X-Token": bad})
        s = c.get("/", headers={"Authorization": f"Bearer {bad}"})
    assert r.status_code == s.status_code == 400
    assert r.json()["error_description"] == "x-token header is not a valid credential"
    assert s.json()["error_description"] == "Authorization header is not a valid credential"


def test_quick_checks_first_seen_tokens_without_the_flow(rsa_idp: IdP) -> None:
    auth = JWTAuth(rsa_idp.issuer, "api", algorithms=["RS256"])
    first = rsa_idp.token(n=1)
    assert auth.quick(first) is None  # no keys yet: discovery and a fetch are needed
    assert check(auth, first).subject == "user-1"  # the flow fetched them

    second = rsa_idp.token(n=2)
    ident = auth.quick(second)
    assert ident is not None and ident.subject == "user-1"
    assert auth.cached(second) is ident
    stranger = mint(new_key("RS256"), {**_claims(rsa_idp), "n": 3}, alg="RS256", kid="k9")
    assert auth.quick(stranger) is None  # an unknown kid: a refetch may be due

    calls: list[str] = []
    flow = auth.flow

    def counting_flow(token: str, request: RequestInfo) -> Any:
        calls.append(token)
        return flow(token, request)

    auth.flow = counting_flow  # type: ignore[method-assign]
    app = AuthMiddleware(_app(), authenticators=[auth])
    third = rsa_idp.token(n=4)
    with _client(app) as c:
        assert c.get("/", headers={"Authorization": f"Bearer {third}"}).status_code == 200
        expired = rsa_idp.token(n=5, exp=int(time.time()) - 3600)
        r = c.get("/", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and r.json()["error_description"] == "token expired"
    assert calls == []  # keys were settled: neither request needed the flow


# -- the JWKS cache ----------------------------------------------------------------------


def test_stale_keys_serve_when_the_issuer_fails(idp: IdP, clock: Clock) -> None:
    idp.add_key("ES256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], clock=clock, max_stale=3600)
    assert check(auth, idp.token()).subject == "user-1"
    for mode in ("500", "garbage", "notjwks"):
        idp.mode = mode
        clock.advance(400)  # past max-age=300: a refetch is due
        before = idp.fetches
        assert check(auth, idp.token(jti=mode)).subject == "user-1"
        assert idp.fetches == before + 1
    idp.mode = "ok"
    clock.advance(400)
    assert check(auth, idp.token(jti="back")).subject == "user-1"


@pytest.mark.parametrize("where", ["discovery", "jwks"])
def test_json_too_deep_to_parse_is_503_not_500(idp: IdP, where: str) -> None:
    # Valid JSON nested past Python's recursion limit: RecursionError, not ValueError.
    idp.add_key("ES256")
    if where == "discovery":
        idp.discovery = "nested"
    else:
        idp.mode = "nested"
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"])
    app = AuthMiddleware(_app(), authenticators=[auth])
    with _client(app) as c:
        r = c.get("/", headers={"Authorization": f"Bearer {idp.token()}"})
    assert r.status_code == 503 and r.headers["retry-after"]


def test_stale_keys_expire_after_max_stale(idp: IdP, clock: Clock) -> None:
    idp.add_key("ES256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], clock=clock, max_stale=600)
    check(auth, idp.token())
    idp.mode = "500"
    clock.advance(300 + 601)
    err = rejects(auth, idp.token(jti="late"))
    assert isinstance(err, ServiceUnavailable)
    assert err.status == 503


def test_cold_cache_with_issuer_down_is_503_not_401(idp: IdP) -> None:
    idp.add_key("ES256")
    idp.mode = "500"
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"])
    err = rejects(auth, idp.token())
    assert err.status == 503
    assert dict(err.headers([]))["Retry-After"]


def test_stalled_issuer_times_out_to_503(idp: IdP) -> None:
    idp.add_key("ES256")
    idp.mode = "stall"
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, timeout=0.5)
    assert rejects(auth, idp.token()).status == 503
    idp.stall_event.set()


def test_failed_issuer_is_not_hammered(idp: IdP, clock: Clock) -> None:
    idp.add_key("ES256")
    idp.mode = "500"
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, clock=clock)
    for i in range(20):
        assert rejects(auth, idp.token(jti=str(i))).status == 503
    assert idp.fetches == 1
    clock.advance(6)
    idp.mode = "ok"
    assert check(auth, idp.token(jti="ok")).subject == "user-1"


def test_cache_control_bounds(idp: IdP, clock: Clock) -> None:
    idp.add_key("ES256")
    idp.cache_control = "max-age=5"
    auth = JWTAuth(
        idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, clock=clock, jwks_min_ttl=60
    )
    check(auth, idp.token())
    clock.advance(30)  # max-age says 5 s, the floor keeps the keys 60 s
    check(auth, idp.token(jti="a"))
    assert idp.fetches == 1
    clock.advance(31)
    check(auth, idp.token(jti="b"))
    assert idp.fetches == 2


def test_refresh_ahead_of_expiry(idp: IdP, clock: Clock) -> None:
    idp.add_key("ES256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, clock=clock)
    check(auth, idp.token())
    clock.advance(280)  # within the last 10% of max-age=300
    check(auth, idp.token(jti="a"))
    assert idp.fetches == 2


def test_rotation_is_picked_up_on_the_first_new_kid(idp: IdP, clock: Clock) -> None:
    idp.add_key("RS256", "old")
    auth = JWTAuth(idp.issuer, "api", algorithms=["RS256"], clock=clock)
    assert check(auth, idp.token("old")).subject == "user-1"
    idp.add_key("RS256", "new")
    assert check(auth, idp.token("new")).subject == "user-1"
    assert idp.fetches == 2


def test_a_new_kid_while_the_issuer_is_down_is_503_not_401(idp: IdP, clock: Clock) -> None:
    # A rotation during an outage: the new key may exist; we could not ask. A 401 would
    # tell clients to drop a good token, so the answer is 503 until the issuer is back.
    idp.add_key("RS256", "old")
    auth = JWTAuth(idp.issuer, "api", algorithms=["RS256"], clock=clock)
    assert check(auth, idp.token("old")).subject == "user-1"
    idp.add_key("RS256", "new")
    idp.mode = "500"
    for jti in ("a", "b"):  # the refetch, then the rate limit: both 503
        err = rejects(auth, idp.token("new", jti=jti))
        assert (err.status, err.reason) == (503, "jwks_unavailable")
        assert dict(err.headers([]))["Retry-After"]
    assert check(auth, idp.token("old", jti="c")).subject == "user-1"  # stale keys serve
    idp.mode = "ok"
    clock.advance(31)
    assert check(auth, idp.token("new", jti="d")).subject == "user-1"
    # Once the issuer answers again, a kid it does not know is a 401 as before.
    gone = mint(idp.keys["new"][0], _claims(idp), alg="RS256", kid="gone")
    assert rejects(auth, gone).status == 401


def test_unknown_kids_are_rate_limited(idp: IdP, clock: Clock) -> None:

    key = idp.add_key("ES256")
    auth = JWTAuth(
        idp.issuer,
        "api",
        algorithms=["ES256"],
        jwks_uri=idp.jwks_uri,
        clock=clock,
        unknown_kid_interval=30,
    )
    check(auth, idp.token())
    claims = _claims(idp)
    for i in range(200):
        token = mint(key, claims, alg="ES256", kid=f"unknown-{i}")
        assert rejects(auth, token).description == "unknown signing key"
        if i % 50 == 49:
            clock.advance(31)
    # One initial fetch, then at most one per 30 s interval: 200 kids over ~2 min.
    assert idp.fetches <= 1 + 4


def test_key_missing_briefly_keeps_verifying_then_stops(idp: IdP, clock: Clock) -> None:
    idp.add_key("ES256", "a")
    idp.add_key("ES256", "b")
    auth = JWTAuth(
        idp.issuer,
        "api",
        algorithms=["ES256"],
        jwks_uri=idp.jwks_uri,
        clock=clock,
        missing_key_grace=900,
        cache_ttl=3600,
    )
    token_a = idp.token("a", exp=int(clock.now) + 7200)
    check(auth, token_a)
    idp.hidden = {"a"}  # the issuer's answer briefly lacks key a (Entra rollover)
    clock.advance(301)
    assert check(auth, idp.token("a", jti="1", exp=int(clock.now) + 7200)).subject == "user-1"
    assert auth.cached(token_a) is not None
    clock.advance(900)
    err = rejects(auth, idp.token("a", jti="2", exp=int(clock.now) + 7200))
    assert err.description == "unknown signing key"
    assert auth.cached(token_a) is None  # cached tokens die with their key


def test_verified_token_cache(idp: IdP, clock: Clock) -> None:
    idp.add_key("ES256")
    auth = JWTAuth(
        idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, clock=clock, cache_ttl=120
    )
    token = idp.token(exp=int(clock.now) + 60)
    ident = check(auth, token)
    assert auth.cached(token) is ident
    head, body, sig = token.split(".")
    tampered = f"{head}.{body}.{sig[:-1]}{'A' if sig[-1] != 'A' else 'B'}"
    assert auth.cached(tampered) is None
    assert rejects(auth, tampered).status == 401
    clock.advance(61)  # past exp: the cache stops answering at once
    assert auth.cached(token) is None
    assert check(auth, token).subject == "user-1"  # ... while the 30 s leeway still admits it
    clock.advance(30)
    assert rejects(auth, token).description == "token expired"


def test_jwks_garbage_never_replaces_good_keys(idp: IdP, clock: Clock) -> None:
    k1 = idp.add_key("ES256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri, clock=clock)
    check(auth, idp.token())
    idp.mode = "notjwks"
    clock.advance(301)
    check(auth, idp.token(jti="x"))
    idp.mode = "ok"
    idp.keys.clear()
    idp.add_key("ES256", "k2")
    clock.advance(6)
    # The real answer now lacks k1: it keeps working during the grace period.
    assert check(auth, idp.token("k2")).subject == "user-1"
    claims = {**_claims(idp), "exp": int(clock.now) + 600}
    assert check(auth, mint(k1, claims, alg="ES256", kid="k1")).subject == "admin"


# -- concurrency and event loops ------------------------------------------------------


def _app() -> Starlette:
    async def home(request: Request) -> JSONResponse:
        return JSONResponse(
            {"sub": request.user.identity.subject, "scopes": sorted(request.auth.scopes)}
        )

    return Starlette(routes=[Route("/", home)])


def _client(app: Any) -> httpx2.Client:
    from starlette.testclient import TestClient

    return TestClient(app)


def test_100_concurrent_asgi_requests_cause_one_fetch(idp: IdP) -> None:
    idp.add_key("RS256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["RS256"], jwks_uri=idp.jwks_uri)
    app = AuthMiddleware(_app(), authenticators=[auth])
    tokens = [idp.token(jti=str(i)) for i in range(100)]

    async def main() -> list[int]:
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://t") as c:
            rs = await asyncio.gather(
                *(c.get("/", headers={"Authorization": f"Bearer {t}"}) for t in tokens)
            )
        return [r.status_code for r in rs]

    assert asyncio.run(main()) == [200] * 100
    assert idp.fetches == 1
    # A second event loop later: nothing is bound to the first one.
    assert asyncio.run(main()) == [200] * 100
    assert idp.fetches == 1


def test_20_wsgi_threads_cause_one_fetch(idp: IdP) -> None:
    from wsgi_auth import AuthMiddleware as WSGIAuth

    idp.add_key("ES256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"])

    def wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [environ["wsgi_auth.identity"].subject.encode()]

    app = WSGIAuth(wsgi_app, authenticators=[auth])
    barrier = threading.Barrier(20)
    results: list[str] = []

    def worker(i: int) -> None:
        status: list[str] = []
        env = {
            "REQUEST_METHOD": "GET",
            "PATH_INFO": "/",
            "wsgi.url_scheme": "http",
            "HTTP_AUTHORIZATION": f"Bearer {idp.token(jti=str(i))}",
        }
        barrier.wait(timeout=30)
        body = b"".join(app(env, lambda s, h, *a: status.append(s)))
        results.append(f"{status[0]} {body.decode()}")

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert results == ["200 OK user-1"] * 20
    assert idp.fetches == 1
    assert idp.discovery_fetches == 1


def test_async_driver_alone_single_flight(idp: IdP) -> None:
    idp.add_key("ES256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri)
    driver = AsyncDriver()

    async def main() -> set[str]:
        ids = await asyncio.gather(
            *(driver.run(auth.flow(idp.token(jti=str(i)), REQ)) for i in range(50))
        )
        return {i.subject for i in ids}

    assert asyncio.run(main()) == {"user-1"}
    assert idp.fetches == 1


# -- the middleware --------------------------------------------------------------------


def test_middleware_answers(idp: IdP) -> None:
    idp.add_key("ES256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri)
    app = AuthMiddleware(_app(), authenticators=[auth])
    with _client(app) as c:
        r = c.get("/", headers={"Authorization": f"Bearer {idp.token()}"})
        assert r.status_code == 200
        assert r.json() == {"sub": "user-1", "scopes": ["read", "write"]}
        r = c.get("/", headers={"Authorization": f"Bearer {idp.token(exp=1)}"})
        assert r.status_code == 401
        dpop = 'DPoP realm="api", algs="ES256 EdDSA Ed25519 RS256 PS256 ES384"'
        assert r.headers["www-authenticate"] == (
            'Bearer realm="api", error="invalid_token", error_description="token expired", ' + dpop
        )
        assert r.json() == {"error": "invalid_token", "error_description": "token expired"}
        r = c.get("/")
        assert r.status_code == 401
        assert r.headers["www-authenticate"] == 'Bearer realm="api", ' + dpop
        idp.mode = "500"
        other = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri)
    with _client(AuthMiddleware(_app(), authenticators=[other])) as c:
        r = c.get("/", headers={"Authorization": f"Bearer {idp.token()}"})
        assert r.status_code == 503
        assert "retry-after" in r.headers


def test_several_issuers_are_chosen_by_iss() -> None:
    with running_idp() as a, running_idp() as b:
        a.add_key("ES256")
        b.add_key("RS256")
        auth_a = JWTAuth(a.issuer, "api", algorithms=["ES256"])
        auth_b = JWTAuth(b.issuer, "api", algorithms=["RS256"])
        app = AuthMiddleware(_app(), authenticators=[auth_a, auth_b])
        with _client(app) as c:
            for idp in (a, b, a, b):
                r = c.get("/", headers={"Authorization": f"Bearer {idp.token()}"})
                assert r.status_code == 200
        assert (a.fetches, b.fetches) == (1, 1)
        # A token for b signed with a's key goes to b only, and fails there.
        forged = mint(a.keys["k1"][0], {**_claims(b)}, alg="ES256")
        with _client(app) as c:
            r = c.get("/", headers={"Authorization": f"Bearer {forged}"})
        assert r.status_code == 401
        assert a.fetches == 1


def test_many_issuers_route_by_iss_without_asking_each(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = b"s" * 32
    auths = [
        JWTAuth(f"https://idp{i}.example", "api", algorithms=["HS256"], keys=secret)
        for i in range(40)
    ]
    asked: list[str] = []
    for auth in auths:
        monkeypatch.setattr(auth, "accepts", lambda t, a=auth: asked.append(a.issuer) or False)
    app = AuthMiddleware(_app(), authenticators=auths)
    now = int(time.time())

    def token(iss: str) -> str:
        claims = {"iss": iss, "aud": "api", "sub": iss, "exp": now + 60}
        return mint(OctKey.import_key(secret), claims, alg="HS256")

    with _client(app) as c:
        for i in (39, 0, 17):
            r = c.get("/", headers={"Authorization": f"Bearer {token(f'https://idp{i}.example')}"})
            assert r.status_code == 200
            assert r.json()["sub"] == f"https://idp{i}.example"
        r = c.get("/", headers={"Authorization": f"Bearer {token('https://other.example')}"})
        assert r.status_code == 401
    # Found by one lookup of the token's iss: no authenticator was asked in turn.
    assert asked == []


def test_two_authenticators_for_one_issuer_are_refused() -> None:
    # Tokens go to the authenticator of their iss, never to a second one: the second
    # would silently never be used, so the configuration is refused.
    one = JWTAuth("svc", "api-1", algorithms=["HS256"], keys=b"s" * 32)
    two = JWTAuth("svc", "api-2", algorithms=["HS256"], keys=b"s" * 32)
    with pytest.raises(ValueError, match="two authenticators for issuer 'svc'"):
        AuthMiddleware(_app(), authenticators=[one, two])
    # One authenticator takes both audiences instead.
    both = JWTAuth("svc", ["api-1", "api-2"], algorithms=["HS256"], keys=b"s" * 32)
    app = AuthMiddleware(_app(), authenticators=[both])
    now = int(time.time())
    with _client(app) as c:
        for aud in ("api-1", "api-2"):
            claims = {"iss": "svc", "aud": aud, "sub": aud, "exp": now + 60}
            token = mint(OctKey.import_key(b"s" * 32), claims, alg="HS256")
            assert c.get("/", headers={"Authorization": f"Bearer {token}"}).status_code == 200


def test_token_error_is_a_token_error(idp: IdP) -> None:
    idp.add_key("ES256")
    auth = JWTAuth(idp.issuer, "api", algorithms=["ES256"], jwks_uri=idp.jwks_uri)
    assert isinstance(rejects(auth, "x.y.z"), TokenError)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"algorithms": []}, ValueError),
        ({"algorithms": "RS256"}, TypeError),
        ({"algorithms": ["none"]}, ValueError),
        ({"algorithms": ["RS256"], "leeway": -1}, ValueError),
        # NaN compares false with everything: accepted, it would switch the checks off.
        ({"algorithms": ["RS256"], "leeway": float("nan")}, ValueError),
        ({"algorithms": ["RS256"], "cache_ttl": float("nan")}, ValueError),
        ({"algorithms": ["RS256"], "max_stale": float("nan")}, ValueError),
        ({"algorithms": ["RS256"], "missing_key_grace": float("nan")}, ValueError),
        ({"algorithms": ["RS256"], "unknown_kid_interval": -1}, ValueError),
        ({"algorithms": ["RS256"], "jwks_min_ttl": 600, "jwks_max_ttl": 60}, ValueError),
        ({"algorithms": ["RS256"], "timeout": 0}, ValueError),
        ({"algorithms": ["RS256"], "timeout": float("inf")}, ValueError),
        ({"algorithms": ["RS256"], "required_claims": "jti"}, TypeError),
        ({"algorithms": ["RS256"], "scope_claims": "roles"}, TypeError),
        ({"algorithms": ["HS256"], "keys": b"s" * 31}, ValueError),
        ({"algorithms": ["HS384"], "keys": b"s" * 47}, ValueError),
        ({"algorithms": ["HS512"], "keys": b"s" * 63}, ValueError),
        ({"algorithms": ["RS256"], "jwks_uri": "http://idp.example/jwks"}, ValueError),
        ({"algorithms": ["RS256"], "dpop": "maybe"}, ValueError),
    ],
)
def test_bad_configuration_is_refused_at_construction(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        JWTAuth("https://idp.example", "api", **kwargs)


def test_plain_http_issuer_is_refused_except_loopback() -> None:
    with pytest.raises(ValueError, match="https"):
        JWTAuth("http://idp.example", "api", algorithms=["RS256"])
    JWTAuth("http://127.0.0.1:9", "api", algorithms=["RS256"])
