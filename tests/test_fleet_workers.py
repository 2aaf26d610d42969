"""Revocation, rotation and a Redis outage across real worker processes (issue 14, item 8):
`uvicorn --workers 4` and `gunicorn --preload -w 2` (built before the fork) serving
benchmarks/propagation.py's app, `APIKeyAuth(RedisKeyStore(...), cache_ttl=3600)`, against
a real redis-server. With an hour of cache, only the store's announcements can make a
worker refuse a key it has verified. Every answer names its worker (`X-Worker`), and
`each_worker` asks on new connections until every worker has answered.

Asserted: behaviour (who answers what, that every worker's caches were told), never how
long it took; the figures come from `python -m benchmarks.propagation`.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis as redis_py

from asgi_auth.keys import RedisKeyStore
from benchmarks.propagation import NAMESPACE, Load, Workers, cluster

WAIT = 30.0  # a bound for things that take milliseconds


@pytest.fixture(scope="module")
def uvicorn4() -> Iterator[tuple[Any, Workers]]:
    with cluster("uvicorn", 4) as pair:
        yield pair


@pytest.fixture(scope="module")
def gunicorn2() -> Iterator[tuple[Any, Workers]]:
    with cluster("gunicorn", 2) as pair:
        yield pair


def admin_store(url: str) -> RedisKeyStore:
    return RedisKeyStore(url, namespace=NAMESPACE, listen=False)


def statuses(pool: Workers, key: str) -> dict[int, int]:
    return {
        pid: r.status_code for pid, r in pool.each_worker("/", headers={"X-API-Key": key}).items()
    }


def all_heard(pool: Workers, key_id: str, field: str = "at", after: float = 0.0) -> None:
    """Every worker's caches were told about `key_id` (or, `field="all_at"`, told to drop
    everything) at or after `after`."""
    deadline = time.monotonic() + WAIT
    while True:
        answers = pool.each_worker(f"/_heard?key={key_id}")
        told = {pid for pid, r in answers.items() if (r.json()[field] or 0) >= after}
        if len(answers) == pool.count and len(told) == pool.count:
            return
        assert time.monotonic() < deadline, f"not every worker was told: {answers}"
        time.sleep(0.02)


def test_every_worker_verified_the_key_then_a_cli_revocation_reaches_all(
    uvicorn4: tuple[Any, Workers],
) -> None:
    server, pool = uvicorn4
    admin = admin_store(server.url)
    victim, steady = admin.create("victim"), admin.create("steady")
    assert set(statuses(pool, victim.key).values()) == {200}
    with Load(pool.url, [steady.key, victim.key], threads=4) as load:
        revoke = subprocess.run(
            [
                *(sys.executable, "-m", "asgi_auth.cli", "keys", "revoke"),
                *(victim.record.key_id, "--redis", server.url, "--namespace", NAMESPACE),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert revoke.returncode == 0, revoke.stderr
        all_heard(pool, victim.record.key_id)
        refused = statuses(pool, victim.key)
        assert len(refused) == 4 and set(refused.values()) == {401}
        assert set(statuses(pool, steady.key).values()) == {200}
    assert {st for *_, st in load.records} <= {200, 401}  # never a 5xx or a dropped request
    admin.close()


def test_a_rotation_reaches_every_worker(uvicorn4: tuple[Any, Workers]) -> None:
    server, pool = uvicorn4
    admin = admin_store(server.url)
    issued = admin.create("rotating")
    assert set(statuses(pool, issued.key).values()) == {200}
    rotated = admin.rotate(issued.record.key_id, grace=0)
    assert rotated is not None
    all_heard(pool, issued.record.key_id)
    assert set(statuses(pool, issued.key).values()) == {401}
    assert set(statuses(pool, rotated.key).values()) == {200}
    admin.close()


def test_redis_killed_mid_load_then_back_on_the_same_port(
    uvicorn4: tuple[Any, Workers],
) -> None:
    server, pool = uvicorn4
    admin = admin_store(server.url)
    cached, later = admin.create("cached"), admin.create("uncached")
    assert set(statuses(pool, cached.key).values()) == {200}
    admin.close()
    raw = redis_py.Redis.from_url(server.url)
    raw.save()  # a snapshot: the restarted server loads it, as a persistent Redis would
    raw.close()

    with Load(pool.url, [cached.key], threads=4) as load:
        server.stop()  # SIGKILL, under load
        outage = statuses(pool, later.key)
        assert len(outage) == 4 and set(outage.values()) == {503}
        for reply in pool.each_worker("/", headers={"X-API-Key": later.key}).values():
            assert int(reply.headers["retry-after"]) >= 1
            assert reply.json()["error"] == "temporarily_unavailable"
        assert set(statuses(pool, cached.key).values()) == {200}  # served from the caches
        restarted_at = time.time()
        server.restart()
        # Each worker resubscribed and dropped what it cached before the loss.
        all_heard(pool, "-", field="all_at", after=restarted_at)
        assert set(statuses(pool, cached.key).values()) == {200}
        assert set(statuses(pool, later.key).values()) == {200}  # no restart needed
    assert {st for *_, st in load.records} == {200}  # the cached key never failed

    admin = admin_store(server.url)
    admin.revoke(cached.record.key_id)  # and announcements flow again
    all_heard(pool, cached.record.key_id)
    assert set(statuses(pool, cached.key).values()) == {401}
    admin.close()


def test_gunicorn_workers_forked_after_the_app_was_built_follow_revocations(
    gunicorn2: tuple[Any, Workers],
) -> None:
    server, pool = gunicorn2
    admin = admin_store(server.url)
    issued = admin.create("svc")
    assert set(statuses(pool, issued.key).values()) == {200}
    admin.revoke(issued.record.key_id)
    all_heard(pool, issued.record.key_id)
    assert set(statuses(pool, issued.key).values()) == {401}
    admin.close()


def test_the_propagation_benchmark_reports_every_figure(tmp_path: Any) -> None:
    from benchmarks.propagation import main

    out = tmp_path / "propagation.json"
    assert main(["--revocations", "2", "--workers", "2", "--threads", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["revocations"] == 2 and result["workers"] == 2
    assert set(result["statuses"]) <= {200, 401}
    for figure in ("delivery_ms", "observed_ms"):
        values = result[figure]
        assert set(values) == {"p50", "p99", "max"}
        assert all(math.isfinite(v) and v >= 0 for v in values.values())
