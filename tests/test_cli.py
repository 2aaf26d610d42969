"""The `authgate keys` commands, run as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from asgi_auth.cli import main, parse_duration
from asgi_auth.keys import SQLiteKeyStore
from asgi_auth.keys.format import parse


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse usage errors
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_create_prints_the_key_once_and_list_never_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "k.db")
    code, out, _ = run(capsys, "keys", "create", "--db", db, "--name", "ci", "--scopes", "a,b")
    assert code == 0
    key = out.strip().splitlines()[-1]
    _, key_id, secret = parse(key)
    assert key_id in out

    code, out, _ = run(capsys, "keys", "list", "--db", db)
    assert code == 0
    assert key_id in out and "ci" in out and "a b" in out
    assert secret not in out and key not in out

    code, out, _ = run(capsys, "keys", "list", "--db", db, "--json")
    listed = json.loads(out)
    assert [k["id"] for k in listed] == [key_id]
    assert listed[0]["status"] == "active"
    assert secret not in out


def test_create_json_and_expiry(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "k.db")
    code, out, _ = run(
        capsys, "keys", "create", "--db", db, "--name", "n", "--expires", "30d", "--json"
    )
    assert code == 0
    data = json.loads(out)
    assert {"id", "key", "expires_at", "scopes"} <= data.keys()
    assert 29.9 * 86400 < data["expires_at"] - data["created_at"] <= 30 * 86400 + 1
    rec = SQLiteKeyStore(db).get(data["id"])
    assert rec is not None and rec.expires_at == data["expires_at"]


def test_revoke_and_rotate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = str(tmp_path / "k.db")
    _, out, _ = run(capsys, "keys", "create", "--db", db, "--name", "n", "--json")
    first = json.loads(out)
    code, out, _ = run(capsys, "keys", "rotate", first["id"], "--db", db, "--grace", "1h", "--json")
    assert code == 0
    rotated = json.loads(out)
    assert rotated["id"] == first["id"] and rotated["key"] != first["key"]
    assert rotated["previous_expires_at"] is not None

    code, out, _ = run(capsys, "keys", "revoke", first["id"], "--db", db)
    assert code == 0 and "Revoked" in out
    _, out, _ = run(capsys, "keys", "list", "--db", db, "--json")
    assert json.loads(out) == []
    _, out, _ = run(capsys, "keys", "list", "--db", db, "--json", "--all")
    assert json.loads(out)[0]["status"] == "revoked"
    code, _, err = run(capsys, "keys", "rotate", first["id"], "--db", db)
    assert code == 1 and "revoked" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["keys", "revoke", "nosuchkey000"], "no key with id"),
        (["keys", "rotate", "nosuchkey000"], "no key with id"),
        (["keys", "create", "--name", "x", "--expires", "3x"], "invalid duration"),
        (["keys", "create", "--name", "x", "--expires", "0d"], "positive"),
        (["keys", "create", "--name", "x", "--scopes", 'a,"b'], "invalid scope"),
        (["keys", "create", "--name", "x", "--prefix", "Bad_Prefix"], "prefix"),
        (["keys", "create", "--name", ""], "name"),
        (["keys", "create"], "--name"),
        (["keys"], "invalid choice"),
    ],
)
def test_bad_input_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, *argv, "--db", str(tmp_path / "k.db"))
    assert code in (1, 2)
    assert message in err
    assert "Traceback" not in err + out


def test_not_a_database(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bogus = tmp_path / "bogus.db"
    bogus.write_bytes(b"this is not sqlite" * 100)
    code, _, err = run(capsys, "keys", "list", "--db", str(bogus))
    assert code == 1 and "authgate: error" in err


def test_duration_units() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1d12h") == 129600
    assert parse_duration("2w") == 1209600


def test_console_script_runs(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "asgi_auth.cli",
            "keys",
            "create",
            "--db",
            str(tmp_path / "k.db"),
            "--name",
            "x",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(result.stdout)["key"].startswith("agk_")
