"""The oidc-provider harness works on its own: no authgate code is used here."""

from __future__ import annotations

import base64
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from tests.oidc_provider import (
    RESOURCE_JWT,
    RESOURCE_JWT_EDDSA,
    RESOURCE_JWT_ES256,
    RESOURCE_OPAQUE,
    RESOURCE_SHORT_OPAQUE,
    RS,
    SVC_POST,
    OIDCProvider,
    OIDCProviderError,
)


@pytest.fixture(scope="module")
def idp() -> Iterator[OIDCProvider]:
    with OIDCProvider(short_ttl=5) as provider:
        yield provider


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def verify_jwt_access_token(
    idp: OIDCProvider, token: str, audience: str, algorithm: str
) -> dict[str, Any]:
    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == algorithm
    keys = {key.key_id: key for key in jwt.PyJWKSet.from_dict(idp.jwks()).keys}
    assert header["kid"] in keys
    return jwt.decode(
        token,
        keys[header["kid"]].key,
        algorithms=[algorithm],
        audience=audience,
        issuer=idp.issuer,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )


def ec_public_jwk(key: ec.EllipticCurvePrivateKey) -> dict[str, str]:
    numbers = key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64url(numbers.x.to_bytes(32, "big")),
        "y": b64url(numbers.y.to_bytes(32, "big")),
    }


def rfc7638_thumbprint(jwk: dict[str, str]) -> str:
    required = {
        "EC": ("crv", "kty", "x", "y"),
        "RSA": ("e", "kty", "n"),
        "OKP": ("crv", "kty", "x"),
    }
    members = {name: jwk[name] for name in required[jwk["kty"]]}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return b64url(hashlib.sha256(canonical.encode()).digest())


def dpop_proof(key: ec.EllipticCurvePrivateKey, htm: str, htu: str) -> str:
    return jwt.encode(
        {"jti": str(uuid.uuid4()), "htm": htm, "htu": htu, "iat": int(time.time())},
        key,
        algorithm="ES256",
        headers={"typ": "dpop+jwt", "jwk": ec_public_jwk(key)},
    )


def test_discovery_document_lists_the_endpoints(idp: OIDCProvider) -> None:
    doc = httpx2.get(idp.discovery_url, trust_env=False, timeout=5).json()
    assert idp.issuer.startswith("http://127.0.0.1:")
    assert doc["issuer"] == idp.issuer
    for name in ("token_endpoint", "introspection_endpoint", "revocation_endpoint", "jwks_uri"):
        assert doc[name].startswith(idp.issuer + "/")
        assert getattr(idp, name) == doc[name]
    assert "client_credentials" in doc["grant_types_supported"]
    assert "ES256" in doc["dpop_signing_alg_values_supported"]
    kids = {key["kid"] for key in idp.jwks()["keys"]}
    assert set(idp.kids) == kids
    assert not any("d" in key for key in idp.jwks()["keys"])  # public keys only


@pytest.mark.parametrize(
    ("resource", "algorithm"),
    [(RESOURCE_JWT, "RS256"), (RESOURCE_JWT_ES256, "ES256"), (RESOURCE_JWT_EDDSA, "EdDSA")],
)
def test_client_credentials_jwt_access_token(
    idp: OIDCProvider, resource: str, algorithm: str
) -> None:
    response = idp.client_credentials_token(resource=resource)
    assert response["token_type"] == "Bearer"
    assert response["scope"] == "read write"
    claims = verify_jwt_access_token(idp, response["access_token"], resource, algorithm)
    assert claims["aud"] == resource
    assert claims["iss"] == idp.issuer
    assert claims["sub"] == "svc"
    assert claims["client_id"] == "svc"
    assert claims["scope"] == "read write"
    assert claims["exp"] > time.time()


def test_loopback_resource_gets_a_jwt_for_that_audience(idp: OIDCProvider) -> None:
    resource = "http://127.0.0.1:8123/"
    response = idp.client_credentials_token(resource=resource, scope="read")
    claims = verify_jwt_access_token(idp, response["access_token"], resource, "RS256")
    assert claims["scope"] == "read"


def test_client_secret_post_client(idp: OIDCProvider) -> None:
    response = idp.client_credentials_token(resource=RESOURCE_JWT, client=SVC_POST)
    claims = verify_jwt_access_token(idp, response["access_token"], RESOURCE_JWT, "RS256")
    assert claims["client_id"] == "svc-post"
    bad = idp.client_credentials_token(client=("svc", "wrong"), check=False)
    assert bad["error"] == "invalid_client"
    unknown = idp.client_credentials_token(resource="https://unknown.example", check=False)
    assert unknown["error"] == "invalid_target"


def test_opaque_token_introspection_and_revocation(idp: OIDCProvider) -> None:
    response = idp.client_credentials_token(resource=RESOURCE_OPAQUE)
    token = response["access_token"]
    assert token.count(".") == 0  # opaque, not a JWT

    info = idp.introspect(token)
    assert info["active"] is True
    assert info["scope"] == "read write"
    assert info["client_id"] == "svc"
    assert info["aud"] == RESOURCE_OPAQUE
    assert info["iss"] == idp.issuer
    assert info["exp"] > time.time()

    # Another client may not read svc's token; the resource server rs may.
    assert idp.introspect(token, client=SVC_POST) == {"active": False}
    with pytest.raises(OIDCProviderError):
        idp.introspect(token, client=(RS[0], "wrong"))

    idp.revoke(token)
    assert idp.introspect(token) == {"active": False}


def test_opaque_token_without_resource(idp: OIDCProvider) -> None:
    response = idp.client_credentials_token()
    info = idp.introspect(response["access_token"])
    assert info["active"] is True
    assert info["scope"] == "read write"
    assert "aud" not in info


def test_short_lived_token_expires(idp: OIDCProvider) -> None:
    response = idp.client_credentials_token(resource=RESOURCE_SHORT_OPAQUE)
    assert response["expires_in"] == 5
    # The provider counts from a whole second, so the token lives 4 to 5 s: room enough
    # for the first answer on a loaded machine. The provider keeps its own clock, so the
    # test waits it out on the real one.
    assert idp.introspect(response["access_token"])["active"] is True
    time.sleep(6)
    assert idp.introspect(response["access_token"]) == {"active": False}


def test_dpop_bound_token(idp: OIDCProvider) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    thumbprint = rfc7638_thumbprint(ec_public_jwk(key))

    proof = dpop_proof(key, "POST", idp.token_endpoint)
    response = idp.client_credentials_token(resource=RESOURCE_JWT, dpop_proof=proof)
    assert response["token_type"] == "DPoP"
    claims = verify_jwt_access_token(idp, response["access_token"], RESOURCE_JWT, "RS256")
    assert claims["cnf"] == {"jkt": thumbprint}

    opaque = idp.client_credentials_token(
        resource=RESOURCE_OPAQUE, dpop_proof=dpop_proof(key, "POST", idp.token_endpoint)
    )
    assert opaque["token_type"] == "DPoP"
    info = idp.introspect(opaque["access_token"])
    assert info["token_type"] == "DPoP"
    assert info["cnf"] == {"jkt": thumbprint}

    # A proof is single use, and must name the token endpoint.
    replay = idp.client_credentials_token(resource=RESOURCE_JWT, dpop_proof=proof, check=False)
    assert replay["error"] == "invalid_grant"
    elsewhere = dpop_proof(key, "POST", idp.issuer + "/elsewhere")
    wrong_htu = idp.client_credentials_token(dpop_proof=elsewhere, check=False)
    assert wrong_htu["error"] == "invalid_dpop_proof"


def test_rotation_without_restart(idp: OIDCProvider) -> None:
    before = idp.client_credentials_token(resource=RESOURCE_JWT)["access_token"]
    opaque = idp.client_credentials_token(resource=RESOURCE_OPAQUE)["access_token"]
    old_kid = jwt.get_unverified_header(before)["kid"]

    kids = idp.rotate(keep_old=True)
    assert kids[:3] != [old_kid] and old_kid in kids[3:]
    after = idp.client_credentials_token(resource=RESOURCE_JWT)["access_token"]
    new_kid = jwt.get_unverified_header(after)["kid"]
    assert new_kid != old_kid
    assert new_kid in kids[:3]
    published = {key["kid"] for key in idp.jwks()["keys"]}
    assert {old_kid, new_kid} <= published
    verify_jwt_access_token(idp, before, RESOURCE_JWT, "RS256")  # old key still published
    verify_jwt_access_token(idp, after, RESOURCE_JWT, "RS256")
    assert idp.introspect(opaque)["active"] is True  # tokens survive a rotation

    idp.rotate(keep_old=False)
    published = {key["kid"] for key in idp.jwks()["keys"]}
    assert old_kid not in published
    assert new_kid not in published
    assert published == set(idp.kids)


def test_restart_on_the_same_port(idp: OIDCProvider) -> None:
    issuer, kids = idp.issuer, list(idp.kids)

    idp.restart(new_keys=False)
    assert idp.issuer == issuer
    assert idp.kids == kids
    token = idp.client_credentials_token(resource=RESOURCE_JWT)["access_token"]
    assert jwt.get_unverified_header(token)["kid"] in kids

    idp.stop()
    assert not idp.running
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(idp.discovery_url, trust_env=False, timeout=2)

    idp.restart(new_keys=True)
    assert idp.issuer == issuer
    assert not set(idp.kids) & set(kids)
    assert {key["kid"] for key in idp.jwks()["keys"]} == set(idp.kids)
    token = idp.client_credentials_token(resource=RESOURCE_JWT)["access_token"]
    assert jwt.get_unverified_header(token)["kid"] in idp.kids
    verify_jwt_access_token(idp, token, RESOURCE_JWT, "RS256")
