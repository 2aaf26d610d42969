"""Which requests need what: public paths, optional auth, required scopes per path and method.

Rules match path prefixes on segment boundaries (`/health` covers `/health` and
`/health/live`, never `/healthz`). The query string never takes part. A path that is not
in canonical form (`//`, dot segments, `%`, `;`, `\\`, `#`) is judged under every way a
server or framework might read it, and gets the strictest of the answers: that is what
keeps `/health/../admin`, `/health%2F..%2Fadmin` and `/admin;/health` protected.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote

Access = Literal["public", "optional", "protected"]
_ORDER = {"public": 0, "optional": 1, "protected": 2}


@dataclass(frozen=True, slots=True)
class Decision:
    """What a request must carry. Precomputed; shared by every matching request."""

    access: Access
    scopes: frozenset[str] = frozenset()

    @property
    def public(self) -> bool:
        return self.access == "public"

    @property
    def optional(self) -> bool:
        return self.access == "optional"


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule for a path prefix, optionally limited to some methods.

    ```python
    Rule("/items", methods=["POST", "DELETE"], scopes=["items:write"])
    Rule("/docs", access="public")
    ```
    """

    path: str
    methods: Sequence[str] | None = None
    scopes: Iterable[str] = ()
    access: Access = "protected"

    def __post_init__(self) -> None:
        if not self.path.startswith("/"):
            raise ValueError(f"rule path must start with '/': {self.path!r}")
        if self.access not in _ORDER:
            raise ValueError(f"access must be public, optional or protected: {self.access!r}")
        if self.access == "public" and tuple(self.scopes):
            raise ValueError(f"a public rule cannot require scopes: {self.path!r}")


def _strip(path: str) -> str:
    return path.rstrip("/") or "/"


def _resolve(path: str) -> str:
    """Collapse empty segments and resolve `.`/`..` (RFC 3986 §5.2.4)."""
    out: list[str] = []
    for seg in path.split("/"):
        if seg in ("", "."):
            continue
        if seg == "..":
            if out:
                out.pop()
            continue
        out.append(seg)
    return "/" + "/".join(out)


def _collapse(path: str) -> str:
    """Runs of slashes made one, dot segments kept (Werkzeug, Falcon and Litestar route
    `//admin/..` as `/admin/..`, a `..` page under `/admin`)."""
    while "//" in path:
        path = path.replace("//", "/")
    return path


def _no_params(path: str) -> str:
    """`;params` dropped from each segment (Tomcat-style servers and proxies)."""
    return "/".join(seg.split(";", 1)[0] for seg in path.split("/"))


# Each is one way some server, proxy or router reads a path, with the mark that tells
# whether it changes anything; a router may apply any of them, in any order, so the
# readings are every combination (their closure).
_READINGS = (
    ("\\", lambda p: p.replace("\\", "/")),
    ("#", lambda p: p.split("#", 1)[0]),
    (";", _no_params),
    ("%", unquote),
    ("//", _collapse),
    ("/.", _resolve),
    ("//", _resolve),
)
_MAX_READINGS = 64  # a bound on the closure (and its cost); real paths give a dozen at most


def _variants(path: str) -> set[str]:
    """Every reading of a non-canonical path some server or framework might act on."""
    variants = {path}
    todo = [path]
    while todo and len(variants) < _MAX_READINGS:
        current = todo.pop()
        for mark, reading in _READINGS:
            if mark not in current:
                continue
            v = reading(current)
            if v not in variants:
                variants.add(v)
                todo.append(v)
    return {v if v.startswith("/") else "/" + v for v in variants}


def is_canonical(path: str) -> bool:
    return not (
        "//" in path
        or "/." in path
        or "%" in path
        or ";" in path
        or "\\" in path
        or "#" in path
        or not path.startswith("/")
    )


_MEMO_ENTRIES = 4096
_MEMO_KEY_MAX = 256


class Rules:
    """Compiled rules: a dict from path prefix to method-filtered decisions."""

    def __init__(
        self,
        *,
        public_paths: Iterable[str] = (),
        optional_paths: Iterable[str] = (),
        rules: Iterable[Rule] = (),
        required_scopes: Iterable[str] = (),
        default: Access = "protected",
        case_sensitive: bool = True,
    ) -> None:
        base = frozenset(required_scopes)
        self.case_sensitive = case_sensitive
        self.default = Decision(default, base if default == "protected" else frozenset())
        all_rules = [
            *rules,
            *(Rule(p, access="public") for p in public_paths),
            *(Rule(p, access="optional") for p in optional_paths),
        ]
        table: dict[str, list[tuple[set[str] | None, Decision]]] = {}
        for rule in all_rules:
            key = _strip(rule.path if case_sensitive else rule.path.lower())
            if not is_canonical(key) and key != "/":
                raise ValueError(f"rule path must be canonical: {rule.path!r}")
            methods = None if rule.methods is None else {m.upper() for m in rule.methods}
            if methods is not None and "GET" in methods:
                methods.add("HEAD")  # as routers do: a HEAD is a GET without the body
            scopes = frozenset(rule.scopes)
            decision = Decision(
                rule.access, base | scopes if rule.access == "protected" else scopes
            )
            table.setdefault(key, []).append((methods, decision))
        # Method-specific rules win over catch-all ones at the same prefix.
        for entries in table.values():
            entries.sort(key=lambda e: e[0] is None)
        self._table = table
        # Only a path's first `_depth` segments can match a rule: `_match` starts there,
        # so a long path costs one scan, not one slice per segment.
        self._depth = max((k.count("/") for k in table if k != "/"), default=1)
        self._by_method = any(m is not None for e in table.values() for m, _ in e)
        # Paths repeat: most requests answer from this memo with one dict lookup. Bounded
        # in entries and in key length, so odd paths cannot grow it.
        self._memo: dict[str, Decision] = {}

    def all_scopes(self) -> frozenset[str]:
        """Every scope any rule (or the default) requires."""
        found = set(self.default.scopes)
        for entries in self._table.values():
            for _, decision in entries:
                found |= decision.scopes
        return frozenset(found)

    def _match(self, method: str, path: str) -> Decision:
        table = self._table
        p = _strip(path)
        cut = 0
        for _ in range(self._depth):
            cut = p.find("/", cut + 1)
            if cut < 0:
                break
        else:
            p = p[:cut]
        while True:
            entries = table.get(p)
            if entries is not None:
                for methods, decision in entries:
                    if methods is None or method in methods:
                        return decision
            if p == "/":
                return self.default
            p = p[: p.rfind("/")] or "/"

    def decide(self, method: str, path: str) -> Decision:
        """The decision for a request; `path` is the decoded path, without query."""
        # Keyed by the method as given: middlewares pass it uppercased already, so the
        # hot path skips `upper()`; a lowercase one gets an entry of its own, decided alike.
        key = method + " " + path if self._by_method else path
        decision = self._memo.get(key)
        if decision is None:
            decision = self._decide(method.upper(), path)
            if len(key) <= _MEMO_KEY_MAX:
                memo = self._memo
                if len(memo) >= _MEMO_ENTRIES:
                    memo.clear()
                memo[key] = decision
        return decision

    def _decide(self, method: str, path: str) -> Decision:
        if not self.case_sensitive:
            path = path.lower()
        if is_canonical(path):
            return self._match(method, path)
        return strictest([self._match(method, v) for v in _variants(path)])


def strictest(decisions: Iterable[Decision]) -> Decision:
    """One decision as strict as each of `decisions`: the most closed access, and every
    scope any of them requires. Where readings of a request disagree, this is the answer."""
    decisions = list(decisions)
    if len(decisions) == 1:
        return decisions[0]
    access = max((d.access for d in decisions), key=_ORDER.__getitem__)
    scopes = frozenset().union(*(d.scopes for d in decisions))
    return Decision(access, scopes if access != "public" else frozenset())
