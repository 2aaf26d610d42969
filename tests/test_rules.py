"""Path rules: which requests are public, optional or protected, and with which scopes."""

from __future__ import annotations

from typing import Any

import pytest

import asgi_auth
import wsgi_auth
from asgi_auth import APIKeyAuth, Rule
from asgi_auth.keys import MemoryKeyStore
from asgi_auth.rules import Decision, Rules
from tests.helpers_core import ASGIApp, WSGIApp

PUBLIC = Decision("public")
OPTIONAL = Decision("optional")


def protected(*scopes: str) -> Decision:
    return Decision("protected", frozenset(scopes))


# -- prefixes on segment boundaries -------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/health", PUBLIC),
        ("/health/", PUBLIC),
        ("/health/live", PUBLIC),
        ("/health/live/deep/", PUBLIC),
        ("/healthz", protected()),
        ("/health-check", protected()),
        ("/healt", protected()),
        ("/", protected()),
        ("/api/health", protected()),
    ],
)
def test_prefix_matches_on_segment_boundaries(path: str, expected: Decision) -> None:
    rules = Rules(public_paths=["/health"])
    assert rules.decide("GET", path) == expected


@pytest.mark.parametrize("rule_path", ["/health", "/health/"])
def test_trailing_slash_in_rule_is_ignored(rule_path: str) -> None:
    rules = Rules(public_paths=[rule_path])
    assert rules.decide("GET", "/health") == PUBLIC
    assert rules.decide("GET", "/health/live") == PUBLIC
    assert rules.decide("GET", "/healthz") == protected()


def test_longest_prefix_wins() -> None:
    rules = Rules(
        rules=[
            Rule("/api", scopes=["api"]),
            Rule("/api/admin", scopes=["admin"]),
            Rule("/api/admin/status", access="public"),
        ]
    )
    assert rules.decide("GET", "/api/items") == protected("api")
    assert rules.decide("GET", "/api/admin") == protected("admin")
    assert rules.decide("GET", "/api/admin/users/7") == protected("admin")
    assert rules.decide("GET", "/api/administrator") == protected("api")
    assert rules.decide("GET", "/api/admin/status") == PUBLIC
    assert rules.decide("GET", "/other") == protected()


def test_root_rule_covers_everything_not_more_specific() -> None:
    rules = Rules(rules=[Rule("/", access="public"), Rule("/admin", scopes=["admin"])])
    assert rules.decide("GET", "/") == PUBLIC
    assert rules.decide("GET", "/anything/at/all") == PUBLIC
    assert rules.decide("GET", "/admin/x") == protected("admin")


def test_query_string_takes_no_part() -> None:
    # The middleware passes the path without the query; a `?` in a path is literal.
    rules = Rules(public_paths=["/health"])
    assert rules.decide("GET", "/admin?x=/health") == protected()


# -- methods ------------------------------------------------------------------------------


def test_method_specific_rule_wins_over_catch_all() -> None:
    rules = Rules(
        rules=[
            Rule("/items", scopes=["items:read"]),
            Rule("/items", methods=["POST", "delete"], scopes=["items:write"]),
        ]
    )
    assert rules.decide("GET", "/items") == protected("items:read")
    assert rules.decide("POST", "/items/3") == protected("items:write")
    assert rules.decide("DELETE", "/items/3") == protected("items:write")  # case-folded
    assert rules.decide("PUT", "/items/3") == protected("items:read")


def test_method_rule_falls_back_to_shorter_prefix_for_other_methods() -> None:
    rules = Rules(
        rules=[
            Rule("/docs", methods=["GET"], access="public"),
            Rule("/", scopes=["base"]),
        ]
    )
    assert rules.decide("GET", "/docs") == PUBLIC
    assert rules.decide("HEAD", "/docs/index") == PUBLIC  # GET covers HEAD, as routers do
    assert rules.decide("POST", "/docs") == protected("base")
    assert rules.decide("OPTIONS", "/docs") == protected("base")


def test_head_is_not_added_when_get_is_absent() -> None:
    rules = Rules(rules=[Rule("/x", methods=["POST"], access="public")])
    assert rules.decide("POST", "/x") == PUBLIC
    assert rules.decide("HEAD", "/x") == protected()


# -- scopes -------------------------------------------------------------------------------


def test_required_scopes_union_with_rule_scopes() -> None:
    rules = Rules(
        required_scopes=["api"],
        public_paths=["/health"],
        optional_paths=["/feed"],
        rules=[
            Rule("/admin", scopes=["admin"]),
            Rule("/admin", methods=["DELETE"], scopes=["admin", "danger"]),
            Rule("/tagged", access="optional", scopes=["tag"]),
        ],
    )
    assert rules.decide("GET", "/items") == protected("api")
    assert rules.decide("GET", "/admin") == protected("api", "admin")
    assert rules.decide("DELETE", "/admin/1") == protected("api", "admin", "danger")
    # Public and optional paths do not inherit the required scopes.
    assert rules.decide("GET", "/health") == PUBLIC
    assert rules.decide("GET", "/feed") == OPTIONAL
    assert rules.decide("GET", "/tagged") == Decision("optional", frozenset({"tag"}))


# -- optional and default access ----------------------------------------------------------


def test_optional_paths() -> None:
    rules = Rules(optional_paths=["/feed"], rules=[Rule("/feed/private", scopes=["me"])])
    assert rules.decide("GET", "/feed") == OPTIONAL
    assert rules.decide("GET", "/feed/today") == OPTIONAL
    assert rules.decide("GET", "/feed/private") == protected("me")
    assert rules.decide("GET", "/feedback") == protected()
    assert rules.decide("GET", "/feed").optional
    assert not rules.decide("GET", "/feed").public


@pytest.mark.parametrize(
    ("default", "unlisted"),
    [
        ("protected", protected("api")),
        ("optional", OPTIONAL),
        ("public", PUBLIC),
    ],
)
def test_default_access(default: Any, unlisted: Decision) -> None:
    rules = Rules(default=default, required_scopes=["api"], rules=[Rule("/admin")])
    assert rules.decide("GET", "/anything") == unlisted
    # A listed protected prefix stays protected, and takes the required scopes.
    assert rules.decide("GET", "/admin/x") == protected("api")


# -- case sensitivity ---------------------------------------------------------------------


def test_case_sensitive_paths_by_default() -> None:
    rules = Rules(public_paths=["/health"], rules=[Rule("/Admin", scopes=["admin"])])
    assert rules.decide("GET", "/HEALTH") == protected()
    assert rules.decide("GET", "/Health/live") == protected()
    assert rules.decide("GET", "/Admin") == protected("admin")
    assert rules.decide("GET", "/admin") == protected()


def test_case_insensitive_paths() -> None:
    rules = Rules(
        public_paths=["/Health"],
        rules=[Rule("/Admin", scopes=["admin"])],
        case_sensitive=False,
    )
    assert rules.decide("GET", "/HEALTH") == PUBLIC
    assert rules.decide("GET", "/health/Live") == PUBLIC
    assert rules.decide("GET", "/hEaLtHz") == protected()
    assert rules.decide("GET", "/ADMIN/users") == protected("admin")
    assert rules.decide("GET", "/admin") == protected("admin")


# -- non-canonical paths get the strictest reading ----------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/health/../admin",
        "/health/./../admin",
        "/health/%2e%2e/admin",
        "/health%2F..%2Fadmin",
        "//admin",
        "/admin;/health",
        "/health;/../admin",
        "/admin#/health",
        "/health\\..\\admin",
        "/%2e%2e/admin",
        "/health/..;/admin",
    ],
)
def test_non_canonical_paths_keep_the_strictest_decision(path: str) -> None:
    rules = Rules(public_paths=["/health"], rules=[Rule("/admin", scopes=["admin"])])
    assert rules.decide("GET", path) == protected("admin")


@pytest.mark.parametrize("path", ["/health/./live", "/health//live", "/health/a/.."])
def test_non_canonical_paths_that_stay_public(path: str) -> None:
    rules = Rules(public_paths=["/health"])
    assert rules.decide("GET", path) == PUBLIC


# -- invalid configuration fails at construction ------------------------------------------


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: Rule("admin"), ValueError),
        (lambda: Rule(""), ValueError),
        (lambda: Rule("/docs", access="public", scopes=["read"]), ValueError),
        (lambda: Rule("/docs", access="secret"), ValueError),  # type: ignore[arg-type]
        (lambda: Rules(public_paths=["health"]), ValueError),
        (lambda: Rules(optional_paths=["feed"]), ValueError),
        (lambda: Rules(rules=[Rule("/a//b")]), ValueError),
        (lambda: Rules(rules=[Rule("/a/../b")]), ValueError),
        (lambda: Rules(public_paths=["/a%2Fb"]), ValueError),
    ],
)
def test_invalid_rules_raise_at_construction(make: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


@pytest.fixture(params=["asgi", "wsgi"])
def middleware(request: pytest.FixtureRequest) -> Any:
    if request.param == "asgi":
        return lambda **kw: asgi_auth.AuthMiddleware(ASGIApp(), **kw)
    return lambda **kw: wsgi_auth.AuthMiddleware(WSGIApp(), **kw)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"public_paths": "/health"}, TypeError),
        ({"optional_paths": "/feed"}, TypeError),
        ({"public_paths": ["health"]}, ValueError),
        ({"rules": [Rule("/x", access="public")], "public_paths": ["x"]}, ValueError),
        ({"max_credential_bytes": 10}, ValueError),
    ],
)
def test_middleware_rejects_bad_options(
    middleware: Any, options: dict[str, Any], error: type[Exception]
) -> None:
    auth = APIKeyAuth(MemoryKeyStore())
    with pytest.raises(error):
        middleware(authenticators=[auth], **options)


def test_middleware_needs_an_authenticator(middleware: Any) -> None:
    with pytest.raises(ValueError, match="authenticator"):
        middleware(authenticators=[])


def test_middleware_rejects_a_non_authenticator(middleware: Any) -> None:
    with pytest.raises(TypeError):
        middleware(authenticators=[object()])


def test_middleware_rejects_two_authenticators_on_one_header(middleware: Any) -> None:
    store = MemoryKeyStore()
    with pytest.raises(ValueError, match="header"):
        middleware(authenticators=[APIKeyAuth(store), APIKeyAuth(store)])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"header": None, "scheme": None, "query_param": None},
        {"cache_ttl": -1},
        {"max_cache_entries": 0},
        {"store_timeout": 0},
        {"prefixes": ["Bad"]},
    ],
)
def test_apikeyauth_rejects_bad_options(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        APIKeyAuth(MemoryKeyStore(), **kwargs)


def test_the_method_decides_alike_in_any_case_and_memo_order() -> None:
    # Middlewares uppercase the method before asking; a direct caller may not, and the
    # memo (keyed by the method as given) must not let one spelling decide for another.
    rules = Rules(rules=[Rule("/items", methods=["POST"], scopes=["items:write"])])
    for first, second in (("post", "POST"), ("POST", "Post"), ("get", "GET")):
        for _ in range(2):  # a miss, then a memo hit
            assert rules.decide(first, "/items") == rules.decide(second, "/items")
    assert rules.decide("post", "/items").scopes == {"items:write"}
    assert rules.decide("get", "/items").scopes == frozenset()
