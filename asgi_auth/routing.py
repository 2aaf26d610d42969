"""Which path the rules judge: the one the app's router dispatches on.

ASGI leaves it open. `scope["path"]` holds the whole path and `root_path` the mount
point in front of it (`--root-path`, a `Mount`); most routers (Starlette, FastAPI,
Quart, Litestar, Django) strip `root_path` again and route on the rest, as WSGI routes
on `PATH_INFO`. Others differ:

- Falcon routes on the whole `scope["path"]`.
- Django (5.0 on) strips `FORCE_SCRIPT_NAME` where set, whatever `root_path` says.
- A middleware inside a framework (Litestar's list) may get a scope whose `path` has had
  `root_path` stripped already: `raw_path`, which keeps the whole path, tells.

`route_path="auto"` (the default) finds Falcon and Django apps under any middleware that
keeps its inner app as `.app`, and reads `raw_path` for the rest. Where nothing tells
whether `path` still holds `root_path` (a server without `raw_path`), both readings are
judged and the stricter answer wins. `"root_path"` and `"full"` say it outright.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Literal
from urllib.parse import unquote

from .types import Scope

RoutePath = Literal["auto", "root_path", "full"]

#: `(scope, root_path)` -> the route path, and a second reading to judge too (or None).
PathReader = Callable[[Scope, str], tuple[str, str | None]]

_MAX_DEPTH = 32  # middlewares wrapped around the app: more is a loop, not a stack


def _inner_apps(app: Any) -> list[Any]:
    apps = []
    for _ in range(_MAX_DEPTH):
        apps.append(app)
        app = getattr(app, "app", None)
        if app is None or app is apps[-1]:
            break
    return apps


def _framework(app: Any) -> str | None:
    for inner in _inner_apps(app):
        root = type(inner).__module__.partition(".")[0]
        if root == "falcon":
            return "falcon"
        if root == "django" and "django.core.handlers.asgi" in sys.modules:
            from django.core.handlers.asgi import ASGIHandler

            if isinstance(inner, ASGIHandler):
                return "django"
    return None


def path_reader(app: Any, route_path: RoutePath) -> PathReader | None:
    """How to read the route path from a scope; None: the usual way (`below_root`)."""
    if route_path not in ("auto", "root_path", "full"):
        raise ValueError(f"route_path must be 'auto', 'root_path' or 'full': {route_path!r}")
    kind = _framework(app) if route_path == "auto" else route_path
    if kind in ("full", "falcon"):
        return _full
    if kind == "django":
        return _django
    return None


def _full(scope: Scope, root: str) -> tuple[str, str | None]:
    return scope["path"], None


def _django(scope: Scope, root: str) -> tuple[str, str | None]:
    # Django's own reading (ASGIRequest). From 5.0 the script prefix is FORCE_SCRIPT_NAME,
    # else root_path, and comes off the path as a plain prefix; before, only root_path
    # came off, and only when the path starts with it.
    from django.core.handlers import asgi

    path: str = scope["path"]
    script_prefix = getattr(asgi, "get_script_prefix", None)
    if script_prefix is not None:
        prefix: str = script_prefix(scope)
        return (path.removeprefix(prefix) if prefix else path), None
    if root and path.startswith(root):
        return path[len(root) :], None
    return path, None


def below_root(scope: Scope, root: str) -> tuple[str, str | None]:
    """The path below `root` (`scope["root_path"]`, not empty), as Starlette's
    `get_route_path` reads it, unless `path` no longer holds the root: then `path`."""
    path: str = scope["path"]
    if not (path.startswith(root) and (len(path) == len(root) or path[len(root)] == "/")):
        return path, None  # the root is not in front: nothing to strip
    stripped = path[len(root) :] or "/"
    raw = scope.get("raw_path")
    if raw is None:
        # Nothing tells whether a framework took the root off already (and the rest
        # starts like it by chance): judge both.
        return stripped, path
    text = raw.decode("latin-1")
    whole = unquote(text) if "%" in text else text
    if whole == path:
        return stripped, None  # path is the whole path: the root is in front
    if whole == root + path:
        return path, None  # the root is off already (a middleware inside a framework)
    return stripped, path
