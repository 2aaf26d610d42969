"""A real HTTP identity provider for tests: discovery, JWKS, on 127.0.0.1 only.

It can rotate keys, answer 500, answer garbage, stall and drop keys, and it counts the
fetches it served. Tokens are minted with joserfc, an independent JOSE library.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt as jjwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

KEY_FACTORIES = {
    "RS": lambda: RSAKey.generate_key(2048),
    "PS": lambda: RSAKey.generate_key(2048),
    "ES256": lambda: ECKey.generate_key("P-256"),
    "ES384": lambda: ECKey.generate_key("P-384"),
    "ES512": lambda: ECKey.generate_key("P-521"),
    "ES256K": lambda: ECKey.generate_key("secp256k1"),
    "EdDSA": lambda: OKPKey.generate_key("Ed25519"),
    "Ed25519": lambda: OKPKey.generate_key("Ed25519"),
    # RFC 7518 §3.2: an HMAC secret at least as long as the hash output.
    "HS256": lambda: OctKey.generate_key(256),
    "HS384": lambda: OctKey.generate_key(384),
    "HS512": lambda: OctKey.generate_key(512),
}


def new_key(alg: str) -> Any:
    factory = KEY_FACTORIES.get(alg) or KEY_FACTORIES[alg[:2]]
    return factory()


def mint(
    key: Any, claims: Mapping[str, Any], *, alg: str, kid: str | None = "k1", **header: Any
) -> str:
    hdr = {"alg": alg, **header}
    if kid is not None:
        hdr["kid"] = kid
    return jjwt.encode(hdr, dict(claims), key, algorithms=[alg])


def public_jwk(key: Any, kid: str | None, alg: str | None = None) -> dict[str, Any]:
    jwk = key.as_dict(private=False)
    for k in ("kid", "alg", "use"):
        jwk.pop(k, None)
    if kid is not None:
        jwk["kid"] = kid
    if alg is not None:
        jwk["alg"] = alg
    return jwk


class IdP:
    """State of the fake issuer, shared with its handler threads."""

    def __init__(self) -> None:
        self.keys: dict[str | None, tuple[Any, str]] = {}
        # ok | 500 | garbage | notjwks | stall | stall500 | drip | drip-headers
        self.mode = "ok"
        #: A path part of the issuer ("/tenant"), for discovery of an issuer with a path.
        self.issuer_path = ""
        self.discovery = "oidc"  # oidc | rfc8414 | none | wrong-issuer | nested | stall500
        #: Members added to the discovery document (json.dumps writes float("nan") as NaN).
        self.discovery_extra: dict[str, Any] = {}
        self.cache_control: str | None = "max-age=300"
        self.stall_event = threading.Event()
        self.fetches = 0
        self.discovery_fetches = 0
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.hidden: set[str | None] = set()
        #: A header drip ran its whole course (nobody released it first), or was cut off
        #: by the client hanging up.
        self.drip_capped = False
        self.drip_cut = False
        #: JWKs served after those of `keys` as they are (kid-less keys, `use`, `alg`).
        self.extra_jwks: list[dict[str, Any]] = []
        self.clock: Callable[[], float] = time.time
        # RFC 7662 introspection: token -> answer; faults via introspect_mode.
        self.introspection: dict[str, dict[str, Any]] = {}
        self.introspect_mode = "ok"  # ok | 500 | garbage | stall | string-true | raw
        self.introspect_raw = b""  # the answer's exact bytes in mode "raw"
        self.introspections = 0
        self.introspect_clients = {"rs": "rs-secret"}
        self.last_introspection: dict[str, Any] = {}
        # A client-credentials token endpoint (RFC 6749 §4.4), DPoP-aware (RFC 9449 §5).
        self.token_clients = {"svc": "svc-secret"}
        self.token_requests = 0
        self.token_lifetime = 600
        self.token_nonce: str | None = None  # when set, DPoP proofs must carry it
        self.token_answer_extra: dict[str, Any] = {}  # members added to token answers

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    @property
    def issuer(self) -> str:
        return self.base + self.issuer_path

    @property
    def jwks_uri(self) -> str:
        return self.base + "/jwks"

    def add_key(self, alg: str, kid: str | None = "k1", key: Any = None) -> Any:
        key = key or new_key(alg)
        self.keys[kid] = (key, alg)
        return key

    def token(self, kid: str | None = "k1", *, alg: str | None = None, **claims: Any) -> str:
        key, key_alg = self.keys[kid]
        now = int(self.clock())
        body = {
            "iss": self.issuer,
            "aud": "api",
            "sub": "user-1",
            "iat": now,
            "exp": now + 600,
            "scope": "read write",
            **claims,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return mint(key, body, alg=alg or key_alg, kid=kid)

    def jwks(self) -> dict[str, Any]:
        return {
            "keys": [
                public_jwk(k, kid)
                for kid, (k, alg) in self.keys.items()
                if kid not in self.hidden and not alg.startswith("HS")
            ]
            + self.extra_jwks
        }


def _handler(idp: IdP) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if idp.cache_control and status == 200:
                self.send_header("Cache-Control", idp.cache_control)
            self.end_headers()
            self.wfile.write(body)

        def _drip(self, body: bytes) -> None:
            # Headers at once, then the body 16 bytes at a time every 50 ms: no single read
            # waits long, so only a deadline over the whole fetch can cut it short.
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.flush()
            for i in range(0, len(body), 16):
                if idp.stall_event.wait(0.05):
                    return  # the test is over
                self.wfile.write(body[i : i + 16])
                self.wfile.flush()

        def _drip_headers(self, body: bytes) -> None:
            # The status line, then a header one byte every 50 ms until the test releases
            # it (`stall_event`) or 20 s have passed: `drip_capped` tells which.
            self.close_connection = True
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Pad: ")
                for _ in range(400):
                    if idp.stall_event.wait(0.05):
                        return
                    self.wfile.write(b"a")
                idp.drip_capped = True
                self.wfile.write(b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            except OSError:  # the client hung up
                idp.drip_cut = True

        def _client_auth(self, form: dict[str, str]) -> tuple[str | None, str | None]:
            import base64
            from urllib.parse import unquote

            auth = self.headers.get("Authorization") or ""
            if auth.startswith("Basic "):
                pair = base64.b64decode(auth[6:]).decode()
                client, _, secret = pair.partition(":")
                return unquote(client), unquote(secret)
            return form.get("client_id"), form.get("client_secret")

        def _token(self, form: dict[str, str]) -> None:
            import jwt as pyjwt

            from tests.dpop_client import thumbprint_of

            with idp.lock:
                idp.token_requests += 1
            client, secret = self._client_auth(form)
            if not client or idp.token_clients.get(client) != secret:
                return self._send(401, b'{"error": "invalid_client"}')
            if form.get("grant_type") != "client_credentials":
                return self._send(400, b'{"error": "unsupported_grant_type"}')
            claims: dict[str, Any] = {"client_id": client, "sub": client}
            if form.get("scope"):
                claims["scope"] = form["scope"]
            if form.get("resource"):
                claims["aud"] = form["resource"]
            proof = self.headers.get("DPoP")
            kind = "Bearer"
            if proof:
                header = pyjwt.get_unverified_header(proof)
                key = pyjwt.PyJWK(header["jwk"]).key
                body = pyjwt.decode(proof, key, algorithms=[header["alg"]])
                if idp.token_nonce and body.get("nonce") != idp.token_nonce:
                    self.send_response(400)
                    self.send_header("DPoP-Nonce", idp.token_nonce)
                    payload = b'{"error": "use_dpop_nonce"}'
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return None
                claims["cnf"] = {"jkt": thumbprint_of(header["jwk"])}
                kind = "DPoP"
            kid = next(iter(idp.keys))
            token = idp.token(kid, exp=int(idp.clock()) + idp.token_lifetime, **claims)
            answer = {"access_token": token, "token_type": kind, "expires_in": idp.token_lifetime}
            answer |= idp.token_answer_extra
            return self._send(200, json.dumps(answer).encode())

        def do_POST(self) -> None:
            import base64
            from urllib.parse import parse_qsl, unquote

            length = int(self.headers.get("Content-Length") or 0)
            form = dict(parse_qsl(self.rfile.read(length).decode()))
            if self.path == "/token":
                return self._token(form)
            if self.path != "/introspect":
                return self._send(404, b"{}")
            with idp.lock:
                idp.introspections += 1
                idp.last_introspection = {"form": form, "auth": self.headers.get("Authorization")}
            client = secret = None
            auth = self.headers.get("Authorization") or ""
            if auth.startswith("Basic "):
                pair = base64.b64decode(auth[6:]).decode()
                client, _, secret = (unquote(p) for p in pair.partition(":"))
            else:
                client, secret = form.get("client_id"), form.get("client_secret")
            if not client or idp.introspect_clients.get(client) != secret:
                return self._send(401, b'{"error": "invalid_client"}')
            mode = idp.introspect_mode
            if mode == "stall":
                idp.stall_event.wait(10)
            if mode == "500":
                return self._send(500, b"oops", "text/plain")
            if mode == "garbage":
                return self._send(200, b"<html>", "text/html")
            if mode == "nested":  # valid JSON too deep for Python's parser
                return self._send(200, b"[" * 100_000 + b"]" * 100_000)
            if mode == "raw":
                return self._send(200, idp.introspect_raw)
            answer = dict(idp.introspection.get(form.get("token", ""), {"active": False}))
            if mode == "string-true":
                answer["active"] = "true"
            return self._send(200, json.dumps(answer).encode())

        def do_GET(self) -> None:
            if "/.well-known/" in self.path:
                with idp.lock:
                    idp.discovery_fetches += 1
                kind = (
                    "oidc"
                    if self.path == idp.issuer_path + "/.well-known/openid-configuration"
                    else "rfc8414"
                    if self.path == "/.well-known/oauth-authorization-server" + idp.issuer_path
                    else None
                )
                if idp.discovery == "wrong-issuer" and kind == "oidc":
                    doc = {"issuer": "https://evil.example", "jwks_uri": idp.jwks_uri}
                    return self._send(200, json.dumps(doc).encode())
                if idp.discovery == "stall500" and kind == "oidc":
                    idp.stall_event.wait(10)
                    return self._send(500, b"oops", "text/plain")
                if idp.discovery == "nested" and kind == "oidc":
                    return self._send(200, b"[" * 100_000 + b"]" * 100_000)
                if kind != idp.discovery:
                    return self._send(404, b"{}")
                doc = {
                    "issuer": idp.issuer,
                    "jwks_uri": idp.jwks_uri,
                    "introspection_endpoint": idp.base + "/introspect",
                    "token_endpoint": idp.base + "/token",
                    **idp.discovery_extra,
                }
                return self._send(200, json.dumps(doc).encode())
            if self.path == "/jwks":
                with idp.lock:
                    idp.fetches += 1
                mode = idp.mode
                if mode == "stall":
                    idp.stall_event.wait(10)
                    return self._send(200, json.dumps(idp.jwks()).encode())
                if mode == "stall500":
                    idp.stall_event.wait(10)
                    return self._send(500, b"oops", "text/plain")
                if mode == "500":
                    return self._send(500, b"oops", "text/plain")
                if mode == "garbage":
                    return self._send(200, b"<html>not json", "text/html")
                if mode == "nested":
                    return self._send(200, b"[" * 100_000 + b"]" * 100_000)
                if mode == "drip":
                    return self._drip(json.dumps(idp.jwks()).encode())
                if mode == "drip-headers":
                    return self._drip_headers(json.dumps(idp.jwks()).encode())
                if mode == "notjwks":
                    return self._send(200, b'{"keys": [{"kty": "RSA", "n": "AQAB"}]}')
                return self._send(200, json.dumps(idp.jwks()).encode())
            self._send(404, b"{}")

    return Handler


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up mid-answer (the deadline tests cut dripping answers off
        # on purpose) is no server error; anything else is still printed.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


@contextmanager
def running_idp() -> Iterator[IdP]:
    idp = IdP()
    server = _Server(("127.0.0.1", 0), _handler(idp))
    server.daemon_threads = True
    idp.server = server
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield idp
    finally:
        idp.stall_event.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
