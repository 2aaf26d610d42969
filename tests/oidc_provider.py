"""A real OpenID provider for interop tests: panva's ``oidc-provider`` (Node.js), run as a child.

The provider lives in ``tests/oidc/`` (``provider.js``, ``package.json`` with the pinned
version, ``package-lock.json``). This module installs it with ``npm ci`` when needed, starts
it on 127.0.0.1, and gives tests its endpoints and a few raw HTTP helpers. It does not use
authgate, so the harness can be trusted on its own.

What the provider offers (see ``provider.js``):

- clients: ``svc``/``svc-secret`` (client_secret_basic) and ``svc-post``/``svc-post-secret``
  (client_secret_post), both ``client_credentials`` with scopes ``read write``; ``rs``/
  ``rs-secret``, a resource server that only calls the introspection endpoint (it may
  introspect every token; other clients only their own).
- resources (RFC 8707): ``RESOURCE_JWT`` (RS256), ``RESOURCE_JWT_ES256``,
  ``RESOURCE_JWT_EDDSA``, any ``http://127.0.0.1:PORT/...`` URL (RS256) give RFC 9068 JWT
  access tokens (``typ: at+jwt``, ``aud`` = the resource); ``RESOURCE_OPAQUE`` and no
  resource at all give opaque tokens (for introspection). ``RESOURCE_SHORT_JWT`` and
  ``RESOURCE_SHORT_OPAQUE`` give tokens that live ``short_ttl`` seconds (default 3).
- DPoP (RFC 9449): a token request with a ``DPoP`` proof gets ``token_type: DPoP`` and
  ``cnf.jkt``; no server nonce is required.
- keys: RS256, ES256 and EdDSA keys are generated at first start. ``rotate()`` swaps in new
  keys without a restart (opaque tokens survive it); ``restart(new_keys=...)`` stops and
  starts the process on the same port, keeping or replacing the keys (tokens are in memory
  and do not survive a restart). ``stop()`` alone leaves the port dead, for outage tests.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
HOST = "127.0.0.1"

RESOURCE_JWT = "https://api.example.test"
RESOURCE_JWT_ES256 = "https://es256.example.test"
RESOURCE_JWT_EDDSA = "https://eddsa.example.test"
RESOURCE_OPAQUE = "https://opaque.example.test"
RESOURCE_SHORT_JWT = "https://short-jwt.example.test"
RESOURCE_SHORT_OPAQUE = "https://short-opaque.example.test"

SVC = ("svc", "svc-secret")  # client_secret_basic
SVC_POST = ("svc-post", "svc-post-secret")  # client_secret_post
RS = ("rs", "rs-secret")  # introspection only
POST_AUTH_CLIENTS = frozenset({SVC_POST[0]})

NPM_TIMEOUT = 300.0
STARTUP_TIMEOUT = 30.0
COMMAND_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0
HTTP_TIMEOUT = 10.0


class OIDCProviderError(RuntimeError):
    """The provider could not be installed, started or driven, or answered an error."""


def _pinned_version() -> str:
    package = json.loads((OIDC_DIR / "package.json").read_text())
    return str(package["dependencies"]["oidc-provider"])


def _installed_version() -> str | None:
    path = OIDC_DIR / "node_modules" / "oidc-provider" / "package.json"
    try:
        return str(json.loads(path.read_text())["version"])
    except (OSError, ValueError, KeyError):
        return None


def ensure_installed(timeout: float = NPM_TIMEOUT) -> None:
    """Run ``npm ci`` in tests/oidc unless the pinned oidc-provider is already installed.

    A file lock keeps parallel test processes from installing at the same time.
    """
    pinned = _pinned_version()
    if _installed_version() == pinned:
        return
    npm = shutil.which("npm")
    if npm is None:
        raise OIDCProviderError("npm is not on PATH; it is needed to install tests/oidc")
    with open(OIDC_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _installed_version() == pinned:
                return
            try:
                done = subprocess.run(
                    [npm, "ci", "--no-audit", "--no-fund"],
                    cwd=OIDC_DIR,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                    check=False,
                )
            except subprocess.TimeoutExpired as exc:
                raise OIDCProviderError(
                    f"npm ci in {OIDC_DIR} did not finish in {timeout:.0f}s"
                ) from exc
            if done.returncode != 0 or _installed_version() != pinned:
                raise OIDCProviderError(
                    f"npm ci in {OIDC_DIR} failed (exit {done.returncode}):\n"
                    f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
                )
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class OIDCProvider:
    """One ``node provider.js`` child on 127.0.0.1; use as a context manager or call close()."""

    def __init__(self, *, port: int = 0, short_ttl: int = 3) -> None:
        self.port = port
        self.short_ttl = short_ttl
        self.issuer = ""
        self.discovery: dict[str, Any] = {}
        self.kids: list[str] = []
        self._state_dir = Path(tempfile.mkdtemp(prefix="authgate-oidc-"))
        self.jwks_file = self._state_dir / "jwks.json"
        self._proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._output: collections.deque[str] = collections.deque(maxlen=200)
        self._threads: list[threading.Thread] = []
        # Keep-alive shorter than node's 5 s: a reused connection is never one it is closing.
        self._http = httpx2.Client(
            timeout=HTTP_TIMEOUT, trust_env=False, limits=httpx2.Limits(keepalive_expiry=1.0)
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = STARTUP_TIMEOUT) -> OIDCProvider:
        if self._proc is not None:
            raise OIDCProviderError("provider already running")
        ensure_installed()
        node = shutil.which("node")
        if node is None:
            raise OIDCProviderError("node is not on PATH; it is needed to run tests/oidc")
        deadline = time.monotonic() + timeout
        while True:
            ready = self._spawn(node, deadline)
            if ready is not None:
                break
            # The port of a restart can still be held for a moment: retry until the deadline.
            if self.port == 0 or time.monotonic() >= deadline:
                raise OIDCProviderError(
                    f"oidc provider did not start in {timeout:.0f}s:\n{self.output()}"
                )
            time.sleep(0.2)
        self.issuer = str(ready["issuer"])
        self.port = int(ready["port"])
        self.kids = list(ready.get("kids", []))
        response = self._http.get(f"{self.issuer}/.well-known/openid-configuration")
        response.raise_for_status()
        self.discovery = response.json()
        return self

    def _spawn(self, node: str, deadline: float) -> dict[str, Any] | None:
        env = {
            **os.environ,
            "OIDC_PORT": str(self.port),
            "OIDC_JWKS_FILE": str(self.jwks_file),
            "OIDC_SHORT_TTL": str(self.short_ttl),
        }
        self._lines = queue.Queue()
        self._proc = subprocess.Popen(
            [node, "provider.js"],
            cwd=OIDC_DIR,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._threads = [
            threading.Thread(target=self._pump, args=(self._proc.stdout, True), daemon=True),
            threading.Thread(target=self._pump, args=(self._proc.stderr, False), daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        try:
            message = self._next_message(deadline)
        except OIDCProviderError:
            self._reap()
            return None
        if message.get("event") != "ready":
            self._reap()
            raise OIDCProviderError(f"unexpected first message {message!r}:\n{self.output()}")
        return message

    def _pump(self, stream: Any, is_stdout: bool) -> None:
        for line in stream:
            self._output.append(("" if is_stdout else "[stderr] ") + line.rstrip("\n"))
            if is_stdout:
                self._lines.put(line)
        if is_stdout:
            self._lines.put(None)

    def _next_message(self, deadline: float) -> dict[str, Any]:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OIDCProviderError(f"no answer from the provider in time:\n{self.output()}")
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise OIDCProviderError(f"the provider exited:\n{self.output()}")
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict) and "event" in message:
                return message

    def _command(self, message: dict[str, Any], expect: str) -> dict[str, Any]:
        if self._proc is None or self._proc.stdin is None:
            raise OIDCProviderError("provider is not running")
        self._proc.stdin.write(json.dumps(message) + "\n")
        self._proc.stdin.flush()
        answer = self._next_message(time.monotonic() + COMMAND_TIMEOUT)
        if answer.get("event") != expect:
            raise OIDCProviderError(f"{message!r} answered {answer!r}")
        return answer

    def _reap(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # the provider exits when its stdin closes
        try:
            proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        for thread in self._threads:
            thread.join(timeout=STOP_TIMEOUT)
        self._threads = []
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

    def stop(self) -> None:
        """Stop the process; the port then refuses connections until start()/restart()."""
        self._reap()

    def restart(self, *, new_keys: bool = False) -> None:
        """Stop and start again on the same port (same issuer); tokens issued before are lost.

        new_keys=False keeps the signing keys (from the JWKS file), True generates new ones.
        """
        self.stop()
        if new_keys:
            self.jwks_file.unlink(missing_ok=True)
        self.start()

    def close(self) -> None:
        self.stop()
        self._http.close()
        shutil.rmtree(self._state_dir, ignore_errors=True)

    def __enter__(self) -> OIDCProvider:
        if self._proc is None:
            try:
                self.start()
            except BaseException:
                self.close()
                raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def output(self) -> str:
        """The last lines the provider printed (stdout and stderr), for error messages."""
        return "\n".join(self._output)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- keys --------------------------------------------------------------------------------

    def rotate(self, *, keep_old: bool = True) -> list[str]:
        """New signing keys without a restart; returns the kids now published (new ones first).

        keep_old=True keeps the previous keys in the JWKS (tokens they signed still verify),
        False drops them.
        """
        answer = self._command({"cmd": "rotate", "keep_old": keep_old}, "rotated")
        self.kids = list(answer["kids"])
        return self.kids

    def jwks(self) -> dict[str, Any]:
        """The JWKS as served at jwks_uri."""
        response = self._http.get(self.jwks_uri)
        response.raise_for_status()
        return dict(response.json())

    # -- endpoints ---------------------------------------------------------------------------

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    @property
    def token_endpoint(self) -> str:
        return str(self.discovery["token_endpoint"])

    @property
    def introspection_endpoint(self) -> str:
        return str(self.discovery["introspection_endpoint"])

    @property
    def revocation_endpoint(self) -> str:
        return str(self.discovery["revocation_endpoint"])

    @property
    def jwks_uri(self) -> str:
        return str(self.discovery["jwks_uri"])

    # -- raw OAuth calls ---------------------------------------------------------------------

    def _post(
        self,
        url: str,
        data: dict[str, str],
        client: tuple[str, str],
        headers: dict[str, str] | None = None,
    ) -> httpx2.Response:
        client_id, secret = client
        if client_id in POST_AUTH_CLIENTS:
            return self._http.post(
                url,
                data={**data, "client_id": client_id, "client_secret": secret},
                headers=headers,
            )
        return self._http.post(url, data=data, auth=(client_id, secret), headers=headers)

    def client_credentials_token(
        self,
        resource: str | None = None,
        scope: str | None = "read write",
        client: tuple[str, str] = SVC,
        dpop_proof: str | None = None,
        *,
        check: bool = True,
    ) -> dict[str, Any]:
        """POST grant_type=client_credentials; returns the token response JSON.

        With check=True an error response raises OIDCProviderError; with False its JSON
        (``error``, ``error_description``) is returned.
        """
        data = {"grant_type": "client_credentials"}
        if scope is not None:
            data["scope"] = scope
        if resource is not None:
            data["resource"] = resource
        headers = {"DPoP": dpop_proof} if dpop_proof is not None else None
        response = self._post(self.token_endpoint, data, client, headers)
        body = dict(response.json())
        if check and response.status_code != 200:
            raise OIDCProviderError(f"token request failed {response.status_code}: {body}")
        return body

    def introspect(
        self, token: str, client: tuple[str, str] = RS, token_type_hint: str | None = None
    ) -> dict[str, Any]:
        """RFC 7662 introspection, authenticated as the resource server by default."""
        data = {"token": token}
        if token_type_hint is not None:
            data["token_type_hint"] = token_type_hint
        response = self._post(self.introspection_endpoint, data, client)
        if response.status_code != 200:
            raise OIDCProviderError(
                f"introspection failed {response.status_code}: {response.text[:500]}"
            )
        return dict(response.json())

    def revoke(self, token: str, client: tuple[str, str] = SVC) -> None:
        """RFC 7009 revocation; only the client the token was issued to may revoke it."""
        response = self._post(self.revocation_endpoint, {"token": token}, client)
        if response.status_code != 200:
            raise OIDCProviderError(
                f"revocation failed {response.status_code}: {response.text[:500]}"
            )


@contextlib.contextmanager
def running_provider(*, port: int = 0, short_ttl: int = 3) -> Iterator[OIDCProvider]:
    """Start a provider for the duration of the block."""
    with OIDCProvider(port=port, short_ttl=short_ttl) as provider:
        yield provider
