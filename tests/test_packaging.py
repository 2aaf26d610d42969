"""The distribution as a user installs it: the core alone (`pip install authgate`) must
import and work with nothing but its declared dependencies, and those must be exactly
what the core imports."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("asgi_auth", "wsgi_auth")
# Modules that serve an extra, and the extra; everything else is the core.
# asgi_auth/keys/redis.py imports redis-py, which only the "redis" extra brings; the core
# loads that module lazily (`asgi_auth.keys.RedisKeyStore`), never on import; so does
# asgi_auth/dpop_redis.py (`asgi_auth.dpop.RedisReplayCache`).
EXTRA_MODULES = {
    "asgi_auth/demo.py": "demo",
    "asgi_auth/keys/redis.py": "redis",
    "asgi_auth/dpop_redis.py": "redis",
    # RedisIntrospectionCache: imported by whoever passes it as `shared_cache=`.
    "asgi_auth/introspection_redis.py": "redis",
    # Throttle imports `limits` inside its constructor: the gate imports the module, and
    # it loads without the extra (see the core-only check).
    "asgi_auth/throttle.py": "throttle",
}
# Import names of the distributions that differ from them.
IMPORT_NAMES = {"pyjwt": "jwt"}


def _requirement_name(requirement: str) -> str:
    name = requirement.split(";")[0]
    for sep in "[<>=!~ ":
        name = name.split(sep)[0]
    return name.strip().lower()


def _declared() -> tuple[set[str], dict[str, set[str]]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = {_requirement_name(r) for r in project["dependencies"]}
    extras = {
        extra: {_requirement_name(r) for r in reqs}
        for extra, reqs in project["optional-dependencies"].items()
    }
    return core, extras


def _runtime_nodes(node: ast.AST) -> list[ast.AST]:
    """Every node below `node` that runs: `if TYPE_CHECKING:` bodies are left out."""
    found: list[ast.AST] = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and ast.unparse(child.test) in (
            "TYPE_CHECKING",
            "typing.TYPE_CHECKING",
        ):
            for orelse in child.orelse:
                found += [orelse, *_runtime_nodes(orelse)]
            continue
        found += [child, *_runtime_nodes(child)]
    return found


def _third_party_imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in PACKAGES:
                found.add(top)
    return found


def test_core_dependencies_are_exactly_what_the_core_imports() -> None:
    core, extras = _declared()
    core_imports: set[str] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            imports = _third_party_imports(path)
            if relative in EXTRA_MODULES:
                extra = {IMPORT_NAMES.get(d, d) for d in extras[EXTRA_MODULES[relative]]}
                assert imports <= core_imports | extra | {IMPORT_NAMES.get(d, d) for d in core}
            else:
                core_imports |= imports
    # Imported only where present, never required: httpx (asgi_auth.client's classes also
    # serve httpx clients) and django (asgi_auth.routing reads a Django app's script
    # prefix the way Django does, when the app it wraps is one).
    assert core_imports - {"httpx", "django"} == {IMPORT_NAMES.get(d, d) for d in core}
    assert "starlette" not in core
    assert "starlette" in extras["demo"]
    assert "redis" not in core
    assert "redis" in extras["redis"]
    assert "limits" not in core
    assert "limits" in extras["throttle"]


_CORE_ONLY_CHECK = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys, threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    for absent in ("starlette", "uvicorn", "httpx", "fastapi", "flask", "redis", "limits"):
        try:
            importlib.import_module(absent)
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit(f"{absent} is installed: this is not the core alone")

    EXTRA_IMPORTS = {
        "asgi_auth.demo",
        "asgi_auth.keys.redis",
        "asgi_auth.dpop_redis",
        "asgi_auth.introspection_redis",
    }
    imported = []
    for package in ("asgi_auth", "wsgi_auth"):
        root = importlib.import_module(package)
        modules = [root] + [
            importlib.import_module(info.name)
            for info in pkgutil.walk_packages(root.__path__, package + ".")
            if info.name not in EXTRA_IMPORTS
        ]
        for module in modules:
            for name in getattr(module, "__all__", ()):
                getattr(module, name)
                imported.append(f"{module.__name__}.{name}")
    try:
        importlib.import_module("asgi_auth.demo")
    except ModuleNotFoundError as exc:
        assert exc.name == "starlette", exc.name
    else:
        raise SystemExit("asgi_auth.demo imported without the demo extra")

    # RedisKeyStore (asgi_auth.keys) and RedisReplayCache (asgi_auth.dpop) are named by
    # the core but need the redis extra: a clear error.
    import asgi_auth.dpop
    import asgi_auth.keys
    for load in (
        lambda: asgi_auth.keys.RedisKeyStore,
        lambda: importlib.import_module("asgi_auth.keys.redis"),
        lambda: asgi_auth.dpop.RedisReplayCache,
        lambda: importlib.import_module("asgi_auth.dpop_redis"),
        lambda: importlib.import_module("asgi_auth.introspection_redis"),
    ):
        try:
            load()
        except ImportError as exc:
            assert "pip install 'authgate[redis]'" in str(exc), str(exc)
        else:
            raise SystemExit("a Redis class loaded without the redis extra")

    # The throttle module loads with the core (the gate names it); a Throttle needs limits.
    from asgi_auth.throttle import Throttle
    try:
        Throttle()
    except ImportError as exc:
        assert "pip install 'authgate[throttle]'" in str(exc), str(exc)
    else:
        raise SystemExit("a Throttle was built without the throttle extra")

    # The caller-side auth works through httpx2 alone, against a real server.
    import httpx2
    from asgi_auth.client import APIKey

    seen = []

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self):
            seen.append(self.headers.get("X-API-Key"))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        with httpx2.Client(auth=APIKey("agk_example"), timeout=10) as client:
            assert client.get(url).status_code == 204
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["agk_example"], seen
    print(json.dumps(imported))
    """
)


@pytest.fixture(scope="module")
def core_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A brand-new virtualenv with `pip install .` and nothing else."""
    venv = tmp_path_factory.mktemp("core-only") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", str(ROOT)],
        check=True,
        timeout=600,
    )
    return venv


def test_core_alone_imports_every_public_name(core_venv: Path) -> None:
    done = subprocess.run(
        [str(core_venv / "bin" / "python"), "-c", _CORE_ONLY_CHECK],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=core_venv,  # not the checkout: the installed wheel is what gets imported
    )
    assert done.returncode == 0, done.stderr
    imported = set(__import__("json").loads(done.stdout))
    for name in ("AuthMiddleware", "APIKeyAuth", "JWTAuth", "IntrospectionAuth", "Identity"):
        assert f"asgi_auth.{name}" in imported
        assert f"wsgi_auth.{name}" in imported
    assert {"asgi_auth.keys.SQLiteKeyStore", "asgi_auth.client.ClientCredentials"} <= imported


def test_core_alone_cli_works_and_demo_names_its_extra(core_venv: Path, tmp_path: Path) -> None:
    authgate = str(core_venv / "bin" / "authgate")
    db = str(tmp_path / "keys.db")
    created = subprocess.run(
        [authgate, "keys", "create", "--db", db, "--name", "svc", "--scopes", "read"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert created.returncode == 0, created.stderr
    listed = subprocess.run(
        [authgate, "keys", "list", "--db", db], capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    assert "svc" in listed.stdout
    demo = subprocess.run(
        [authgate, "demo", "--port", "0", "--db", str(tmp_path / "demo.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert demo.returncode == 1
    assert "pip install 'authgate[demo]'" in demo.stderr
    assert "Traceback" not in demo.stderr
