"""The `authgate` command: manage API keys in a SQLite or Redis store, run the demo."""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from .keys import KeyStore, SQLiteKeyStore
from .keys.format import DEFAULT_PREFIX

DEFAULT_DB = "authgate-keys.db"
REDIS_URL_ENV = "AUTHGATE_REDIS_URL"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+)([smhdw])")


class CLIError(Exception):
    """A user mistake: printed as one line, exit status 1."""


def parse_duration(text: str) -> float:
    """`90s`, `15m`, `12h`, `30d`, `2w` (or combined, `1d12h`) as seconds."""
    text = text.strip().lower()
    parts = _DURATION.findall(text)
    if not text or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(
            f"invalid duration {text!r}: use a number and a unit (s, m, h, d, w), e.g. 30d"
        )
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise argparse.ArgumentTypeError("duration must be positive")
    return float(seconds)


def _scopes(text: str) -> list[str]:
    scopes = [s for s in re.split(r"[,\s]+", text.strip()) if s]
    for s in scopes:
        if not re.fullmatch(r"[\x21\x23-\x5b\x5d-\x7e]+", s):
            raise argparse.ArgumentTypeError(f"invalid scope {s!r} (RFC 6749 §3.3)")
    return scopes


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _store(args: argparse.Namespace) -> KeyStore:
    """The store `--redis` or `--db` names; `--redis` else `--db` else
    `AUTHGATE_REDIS_URL` else `AUTHGATE_DB` else the default file."""
    redis_url = args.redis or (None if args.db else os.environ.get(REDIS_URL_ENV) or None)
    if redis_url is None:
        args.db = args.db or os.environ.get("AUTHGATE_DB", DEFAULT_DB)
        return SQLiteKeyStore(args.db)
    try:
        from .keys.redis import RedisKeyStore, redact_url
    except ImportError as exc:
        raise CLIError(str(exc)) from None
    args.redis_shown = redact_url(redis_url)
    try:
        return RedisKeyStore(redis_url, namespace=args.namespace)
    except ValueError as exc:  # not a redis:// URL, a namespace with braces
        raise CLIError(f"{args.redis_shown}: {exc}") from None


def _check_store_args(args: argparse.Namespace) -> None:
    if getattr(args, "redis", None) and getattr(args, "db", None):
        raise CLIError("--db and --redis name two stores: give one of them")


def _cmd_create(args: argparse.Namespace) -> int:
    store = _store(args)
    expires = time.time() + args.expires if args.expires else None
    try:
        issued = store.create(
            args.name, args.scopes, expires_at=expires, subject=args.subject, prefix=args.prefix
        )
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    rec = issued.record
    if args.json:
        print(json.dumps({**rec.public_dict(), "key": issued.key}, indent=2))
    else:
        print(
            f"Created key {rec.key_id} ({rec.name}), scopes: {' '.join(sorted(rec.scopes)) or '-'}"
        )
        if expires:
            print(f"Expires: {_when(expires)}")
        print("The key is shown once; store it now:\n")
        print(issued.key)
    return 0


def _status(rec_status: str, previous: float | None, now: float) -> str:
    if rec_status == "active" and previous and previous > now:
        return "active (old secret valid until " + _when(previous) + ")"
    return rec_status


def _cmd_list(args: argparse.Namespace) -> int:
    store = _store(args)
    now = time.time()
    records = store.list()
    if not args.all:
        records = [r for r in records if r.status(now) == "active"]
    if args.json:
        print(json.dumps([{**r.public_dict(), "status": r.status(now)} for r in records], indent=2))
        return 0
    if not records:
        print("no keys" if args.all else "no active keys (--all shows revoked and expired ones)")
        return 0
    rows = [("ID", "NAME", "SCOPES", "STATUS", "CREATED", "EXPIRES")]
    for r in records:
        rows.append(
            (
                r.key_id,
                r.name,
                " ".join(sorted(r.scopes)) or "-",
                _status(r.status(now), r.previous_expires_at, now),
                _when(r.created_at),
                _when(r.expires_at),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _cmd_revoke(args: argparse.Namespace) -> int:
    record = _store(args).revoke(args.key_id)
    if record is None:
        raise CLIError(f"no key with id {args.key_id!r}")
    print(f"Revoked key {record.key_id} ({record.name}) at {_when(record.revoked_at)}")
    return 0


def _cmd_rotate(args: argparse.Namespace) -> int:
    try:
        issued = _store(args).rotate(args.key_id, grace=args.grace)
    except ValueError as exc:
        raise CLIError(str(exc)) from None
    if issued is None:
        raise CLIError(f"no key with id {args.key_id!r}")
    rec = issued.record
    if args.json:
        print(json.dumps({**rec.public_dict(), "key": issued.key}, indent=2))
        return 0
    if rec.previous_expires_at:
        print(
            f"Rotated key {rec.key_id}; the old secret stays valid until "
            f"{_when(rec.previous_expires_at)}"
        )
    else:
        print(f"Rotated key {rec.key_id}; the old secret no longer works")
    print("The new key is shown once; store it now:\n")
    print(issued.key)
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    try:
        from .demo import run_demo
    except ModuleNotFoundError as exc:  # the core alone: no starlette
        print(
            f"authgate demo needs the demo extra ({exc.name} is missing): "
            "pip install 'authgate[demo]'",
            file=sys.stderr,
        )
        return 1

    return run_demo(host=args.host, port=args.port, db=args.db)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="authgate", description="authgate: API keys and a demo of the auth middleware."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    default_db = os.environ.get("AUTHGATE_DB", DEFAULT_DB)

    def db_arg(p: argparse.ArgumentParser, default: str = default_db) -> None:
        p.add_argument("--db", default=default, help=f"SQLite key store (default: {default})")

    def store_args(p: argparse.ArgumentParser) -> None:
        # No default here: whether --db was given decides between it and AUTHGATE_REDIS_URL.
        p.add_argument("--db", default=None, help=f"SQLite key store (default: {default_db})")
        p.add_argument(
            "--redis",
            metavar="URL",
            default=None,
            help=f"Redis key store, e.g. redis://host:6379/0 (default: ${REDIS_URL_ENV})",
        )
        p.add_argument(
            "--namespace",
            default="authgate",
            help="with --redis: its key prefix (default: authgate)",
        )

    keys = sub.add_parser("keys", help="create, list, revoke and rotate API keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True)

    p = ksub.add_parser("create", help="create a key and print it once")
    store_args(p)
    p.add_argument("--name", required=True, help="a label, e.g. the client's name")
    p.add_argument("--scopes", type=_scopes, default=[], help="comma-separated, e.g. read,write")
    p.add_argument("--expires", type=parse_duration, help="lifetime, e.g. 30d, 12h")
    p.add_argument("--subject", help="the identity subject (default: the key id)")
    p.add_argument("--prefix", default=DEFAULT_PREFIX, help="key prefix for secret scanning")
    p.add_argument("--json", action="store_true", help="print a JSON object (id, key, ...)")
    p.set_defaults(func=_cmd_create)

    p = ksub.add_parser("list", help="list keys (never their secrets)")
    store_args(p)
    p.add_argument("--all", action="store_true", help="include revoked and expired keys")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_list)

    p = ksub.add_parser("revoke", help="revoke a key")
    p.add_argument("key_id")
    store_args(p)
    p.set_defaults(func=_cmd_revoke)

    p = ksub.add_parser("rotate", help="give a key a new secret; the old one works for --grace")
    p.add_argument("key_id")
    store_args(p)
    p.add_argument("--grace", type=parse_duration, default=86400.0, help="default 24h")
    p.add_argument("--no-grace", dest="grace", action="store_const", const=0.0)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_rotate)

    p = sub.add_parser("demo", help="serve a demo API protected by API keys on 127.0.0.1")
    db_arg(p, "authgate-demo.db")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000, help="default 8000; 0 for any free port")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `authgate` console script."""
    args = build_parser().parse_args(argv)
    try:
        _check_store_args(args)
        code: int = args.func(args)
    except CLIError as exc:
        print(f"authgate: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # unreadable path, full disk
        print(f"authgate: error: {exc.strerror or exc}: {args.db}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:  # not a database, locked for too long
        print(f"authgate: error: {args.db}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if not _is_redis_error(exc):
            raise
        # Redis down, refused auth, wrong URL: one line, never the URL's password.
        print(f"authgate: error: {args.redis_shown}: {exc}", file=sys.stderr)
        return 1
    return code


def _is_redis_error(exc: BaseException) -> bool:
    exceptions = sys.modules.get("redis.exceptions")  # loaded only with a Redis store
    return exceptions is not None and isinstance(exc, exceptions.RedisError)


if __name__ == "__main__":
    sys.exit(main())
