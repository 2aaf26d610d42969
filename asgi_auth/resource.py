"""OAuth 2.0 Protected Resource Metadata (RFC 9728), served from the middleware.

Clients (MCP clients among them) learn from it which authorization servers issue tokens
for this API, which scopes exist and how to present tokens; every 401 challenge points
at it with `resource_metadata="..."` (RFC 9728 §5.1).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

WELL_KNOWN = "/.well-known/oauth-protected-resource"


@dataclass(frozen=True)
class ProtectedResource:
    """What to publish. Unset fields are filled from the middleware's configuration:
    `authorization_servers` from the token authenticators' issuers, `scopes_supported`
    from the rules, DPoP algorithms from the DPoP verifiers.

    ```python
    AuthMiddleware(app, authenticators=[jwt], resource=ProtectedResource("https://api.example"))
    ```
    """

    resource: str
    authorization_servers: Sequence[str] | None = None
    scopes_supported: Sequence[str] | None = None
    resource_name: str | None = None
    resource_documentation: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parts = urlsplit(self.resource)
        if (
            parts.scheme not in ("https", "http")
            or not parts.netloc
            or parts.query
            or parts.fragment
        ):
            raise ValueError("resource must be an absolute http(s) URL without query or fragment")

    @property
    def path(self) -> str:
        """Where the document is served: the well-known path, then the resource's path
        (RFC 9728 §3.1)."""
        return WELL_KNOWN + urlsplit(self.resource).path.rstrip("/")

    @property
    def url(self) -> str:
        parts = urlsplit(self.resource)
        return urlunsplit((parts.scheme, parts.netloc, self.path, "", ""))

    def document(
        self,
        *,
        issuers: Iterable[str],
        scopes: Iterable[str],
        dpop_algs: Iterable[str],
        bearer: bool,
    ) -> bytes:
        doc: dict[str, Any] = {"resource": self.resource}
        servers = self.authorization_servers
        doc["authorization_servers"] = list(
            servers if servers is not None else dict.fromkeys(issuers)
        )
        supported = self.scopes_supported
        doc["scopes_supported"] = sorted(supported if supported is not None else set(scopes))
        doc["bearer_methods_supported"] = ["header"]
        algs = list(dict.fromkeys(dpop_algs))
        if algs:
            doc["dpop_signing_alg_values_supported"] = algs
            if not bearer:
                doc["dpop_bound_access_tokens_required"] = True
        if self.resource_name:
            doc["resource_name"] = self.resource_name
        if self.resource_documentation:
            doc["resource_documentation"] = self.resource_documentation
        doc.update(self.extra)
        return json.dumps(doc, separators=(",", ":")).encode()
