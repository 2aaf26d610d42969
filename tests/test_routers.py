"""Path rules against every real router: whatever path a client sends, a request that a
router dispatches to a protected handler carried the scopes that handler's rule needs.

Property-based (hypothesis), derandomized: the same examples on every run. The count per
router is AUTHGATE_ROUTER_EXAMPLES (default 500); set it higher for a deeper search. The
paths an adversarial review found, and their kin, are tried first on every router.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from asgi_auth import AuthMiddleware as ASGIAuth
from asgi_auth import Rule
from asgi_auth.routing import below_root, path_reader
from tests.helpers_core import ASGIApp, WSGIApp, asgi_call, http_scope, wsgi_call, wsgi_environ
from tests.routers import KEYS, NEEDS, Setup, auth, django_app, setups
from wsgi_auth import AuthMiddleware as WSGIAuth

EXAMPLES = int(os.environ.get("AUTHGATE_ROUTER_EXAMPLES", "500"))
SETUPS: dict[str, Setup] = setups()
#: Examples run per router, and how many reached a protected handler (shown at the end).
REPORT: dict[str, tuple[int, int]] = {}

# Path pieces routers read differently: dot segments plain and encoded, empty segments,
# encoded slashes and backslashes, `;` parameters, case, double encoding.
SEGMENTS = [
    "admin", "items", "health", "api", "x", "1", "", ".", "..", "%2e", "%2e%2e", "%2E%2e",
    ".%2e", "%2F", "%2f..", "admin%2F..", "..%2F", "%2Fadmin", ";", "admin;x", ";x", "%3B",
    "%61dmin", "ad%6Din", "ADMIN", "Admin", "%5C", "\\", "admin\\..", "%252e%252e", "%25",
    "%C3%A9", "admin%00", "%20", "admin.", "~",
]  # fmt: skip
ODD = st.text(alphabet="admin./;%2eF5C\\", min_size=1, max_size=6)
# The routes' own paths, which the pieces above are mixed into: most examples then route
# somewhere, and many to a protected handler under some reading.
BASES = [["admin"], ["admin", "x"], ["items"], ["items", "1"], ["health"], ["health", "x"]]
MANGLES = [
    lambda s: "".join(f"%{ord(c):02X}" for c in s[:1]) + s[1:],  # first letter encoded
    lambda s: "".join(f"%25{ord(c):02X}" for c in s[:1]) + s[1:],  # ... twice
    str.upper,
    lambda s: s + ";x",
    lambda s: s + "%2F..",
    lambda s: s + "/..",
    lambda s: s + "/",
    lambda s: s + ".",
]


# The pieces most often behind a disagreement, drawn more often than the rest.
HOT = ["..", ".", "", "%2e%2e", "%2F", ";"]
NOISE = st.sampled_from(HOT) | st.sampled_from(SEGMENTS) | ODD


def paths() -> st.SearchStrategy[str]:
    """The routes' plain paths half the time (strict routers route little else, and the
    search must reach their protected handlers too), odd readings of them otherwise."""
    plain = st.sampled_from(["/" + "/".join(b) for b in BASES])
    return plain | odd_paths()


@st.composite
def odd_paths(draw: st.DrawFn) -> str:
    segments = list(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(segments)))
        segments.insert(at, draw(NOISE))
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(segments) - 1))
        segments[at] = draw(st.sampled_from(MANGLES))(segments[at])
    lead = draw(st.sampled_from(["", "/", "//"]))
    trail = draw(st.sampled_from(["", "", "/"]))
    return lead + "/" + "/".join(segments) + trail


@pytest.mark.parametrize("name", list(SETUPS))
def test_no_path_reaches_a_protected_handler_without_its_scopes(name: str) -> None:
    setup = SETUPS[name]
    counts = [0, 0]

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(method=st.sampled_from(["GET", "POST"]), path=paths(), who=st.sampled_from(list(KEYS)))
    @example(method="GET", path="//admin/..", who="none")  # Werkzeug, Falcon, Litestar
    @example(method="GET", path="///admin/..", who="reader")
    @example(method="POST", path="//items/..", who="reader")
    @example(method="GET", path="//admin/x/..", who="none")
    @example(method="GET", path="/admin/..", who="none")
    @example(method="GET", path="/health/../admin", who="none")
    @example(method="GET", path="/health/..//admin", who="none")
    @example(method="GET", path="/health%2F..%2Fadmin", who="none")
    @example(method="GET", path="/admin;/health", who="none")
    @example(method="GET", path="/%61dmin", who="none")
    @example(method="GET", path="/admin%2F..", who="none")
    @example(method="POST", path="/items", who="reader")
    @example(method="GET", path="/admin/x", who="admin")  # reaches it: the search can see
    @example(method="POST", path="/items/1", who="writer")
    def check(method: str, path: str, who: str) -> None:
        key, scopes = KEYS[who]
        status, route = setup.call(method, setup.prefix + path, key)
        counts[0] += 1
        needed = NEEDS.get((route, method), set()) if route is not None else set()
        if needed:
            counts[1] += 1
        assert needed <= scopes, (
            f"{name}: {method} {setup.prefix + path!r} as {who} reached {route} ({status})"
        )

    check()
    REPORT[name] = (counts[0], counts[1])
    # Not vacuous: the generated paths do reach the protected handlers (with a key that
    # holds their scopes), so a bypass would have been seen.
    assert counts[1] > 0


def test_the_search_reaches_every_route_kind() -> None:
    # The plain paths, through every router: the fixture routes are what the rules
    # expect, so the property above compares like with like.
    for name, setup in SETUPS.items():
        admin_key = KEYS["admin"][0]
        writer_key = KEYS["writer"][0]
        assert setup.call("GET", setup.prefix + "/admin", None) == (401, None), name
        assert setup.call("GET", setup.prefix + "/admin", admin_key) == (200, "admin"), name
        assert setup.call("GET", setup.prefix + "/admin/x", admin_key)[1] == "admin-page", name
        assert setup.call("POST", setup.prefix + "/items", None) == (401, None), name
        assert setup.call("POST", setup.prefix + "/items", writer_key) == (200, "items"), name
        assert setup.call("GET", setup.prefix + "/items/1", None) == (200, "item"), name
        assert setup.call("GET", setup.prefix + "/health", None) == (200, "health"), name


# -- the route path, read directly -------------------------------------------------------


def _scope(path: str, root: str, raw: bytes | None) -> dict[str, object]:
    scope: dict[str, object] = {"path": path, "root_path": root}
    if raw is not None:
        scope["raw_path"] = raw
    return scope


def test_below_root_reads_raw_path_to_tell_whether_the_root_is_still_in_front() -> None:
    # A server's scope: path and raw_path both hold the root.
    assert below_root(_scope("/api/admin", "/api", b"/api/admin"), "/api") == ("/admin", None)
    assert below_root(_scope("/api", "/api", b"/api"), "/api") == ("/", None)
    assert below_root(_scope("/api/a b", "/api", b"/api/a%20b"), "/api") == ("/a b", None)
    # Inside a framework that took the root off already (Litestar): path is the route.
    assert below_root(_scope("/api/admin", "/api", b"/api/api/admin"), "/api") == (
        "/api/admin",
        None,
    )
    # The root is not in front at all: nothing to strip.
    assert below_root(_scope("/apix/admin", "/api", b"/apix/admin"), "/api") == (
        "/apix/admin",
        None,
    )
    # Nothing tells (no raw_path, or one that agrees with neither): both readings.
    assert below_root(_scope("/api/admin", "/api", None), "/api") == ("/admin", "/api/admin")
    assert below_root(_scope("/api/admin", "/api", b"/elsewhere"), "/api") == (
        "/admin",
        "/api/admin",
    )


def test_two_readings_take_the_stricter_answer() -> None:
    inner = ASGIApp()
    mw = ASGIAuth(
        inner,
        authenticators=[auth()],
        rules=[Rule("/api/admin", scopes=["admin"])],
        public_paths=["/admin"],
        default="public",
    )
    scope = http_scope("/api/admin")
    scope["root_path"] = "/api"
    del scope["raw_path"]  # a server without raw_path: /admin (public) or /api/admin
    reply = asgi_call(mw, inner, scope)
    assert reply.status == 401 and not reply.reached


def test_route_path_option_and_detection() -> None:
    import falcon.asgi
    from starlette.middleware.cors import CORSMiddleware

    falcon_app = falcon.asgi.App()
    # Found under other middleware that keeps its inner app as `.app`.
    wrapped = CORSMiddleware(falcon_app, allow_origins=["*"])
    assert path_reader(wrapped, "auto") is not None
    assert path_reader(wrapped, "root_path") is None
    assert path_reader(django_app(), "auto") is not None
    assert path_reader(ASGIApp(), "auto") is None
    with pytest.raises(ValueError, match="route_path"):
        ASGIAuth(
            ASGIApp(),
            authenticators=[auth()],
            route_path="guess",  # type: ignore[typeddict-item]
        )


def test_route_path_full_under_wsgi_judges_the_mount_point_too() -> None:
    inner = WSGIApp()
    options = {"rules": [Rule("/api/admin", scopes=["admin"])], "default": "public"}
    environ = wsgi_environ("/admin")
    environ["SCRIPT_NAME"] = "/api"
    below = WSGIAuth(inner, authenticators=[auth()], **options)
    full = WSGIAuth(inner, authenticators=[auth()], route_path="full", **options)
    assert wsgi_call(below, inner, dict(environ)).status == 200  # PATH_INFO: /admin
    assert wsgi_call(full, inner, dict(environ)).status == 401  # /api/admin
