"""The scale benchmark, run tiny: every variant measured, every request authenticated as
claimed, every cache within its bound. No timing is asserted."""

from __future__ import annotations

import json
from typing import Any

import pytest

from asgi_auth import AuthMiddleware
from benchmarks import apps
from benchmarks.harness import CaseError
from benchmarks.scale import ScaleConfig, ScaleReport, StreamRunner, run_pool, run_scale
from benchmarks.scale_memory import PHASES
from benchmarks.scale_tokens import Issuer

TOKENS = 2_000
CACHE = 500  # smaller than TOKENS, so the memory phases fill every cache they touch
CFG = ScaleConfig(
    key_counts=(10, 300),
    issuer_counts=(1, 3),
    shares=(0.0, 0.1, 1.0),
    pool=20,
    wide_pool=40,
    rounds=2,
    iterations=50,
    budget_s=5.0,
    tokens=TOKENS,
    cache_entries=CACHE,
)


@pytest.fixture(scope="module")
def report() -> ScaleReport:
    return run_scale(True, config=CFG)


def expected_rows() -> set[tuple[str, str]]:
    rows = {("api keys", "bare"), ("jwt", "bare")}
    for n in CFG.key_counts:
        for store in ("MemoryKeyStore", "SQLiteKeyStore"):
            for mode in ("cached", "uncached"):
                rows.add(("api keys", f"{store}, {n:,} keys, {mode}"))
            rows.add(("floor", f"{store}, {n:,} keys, uncached, sync flow"))
    for count in CFG.issuer_counts:
        name = f"{count} issuer" + ("s" if count > 1 else "")
        for mode in ("cached", f"cached, {CFG.wide_pool} tokens", "first-seen"):
            rows.add(("jwt", f"{name}, {mode}"))
    rows |= {("jwt", "0% first-seen"), ("jwt", "10% first-seen"), ("jwt", "100% first-seen")}
    return rows


def test_every_variant_is_measured(report: ScaleReport) -> None:
    assert {(r.kind, r.case) for r in report.rows} == expected_rows()
    for r in report.rows:
        assert len(r.samples_us) == CFG.rounds, r.case
        assert all(s > 0 for s in r.samples_us), r.case
        assert (r.overhead_us is None) == (r.kind == "floor"), r.case
    assert report.settings["rounds_run"] == CFG.rounds


def test_every_credential_was_authenticated(report: ScaleReport) -> None:
    checks = report.checks
    for n in CFG.key_counts:
        k = min(n, CFG.pool)
        for store in ("MemoryKeyStore", "SQLiteKeyStore"):
            cached = checks[f"api keys/{store}, {n:,} keys, cached"]
            uncached = checks[f"api keys/{store}, {n:,} keys, uncached"]
            assert cached == [
                f"{k}/{k} pooled credentials 200 as api_key",
                f"all {k} still cached after the run",
            ]
            assert uncached == [
                f"{k}/{k} pooled credentials 200 as api_key",
                "no cache entry after the run: every request read the store",
            ]
            assert checks[f"floor/{store}, {n:,} keys, uncached, sync flow"] == uncached[1:]
    for count in CFG.issuer_counts:
        name = f"{count} issuer" + ("s" if count > 1 else "")
        assert checks[f"jwt/{name}, cached, {CFG.wide_pool} tokens"] == [
            f"{CFG.wide_pool}/{CFG.wide_pool} pooled credentials 200 as jwt",
            f"all {CFG.wide_pool} still cached after the run",
        ]
        (line,) = checks[f"jwt/{name}, first-seen"]
        sent = int(line.split()[1])
        # The check, the warm-up and both rounds: one token each, never one reused.
        assert sent >= 1 + CFG.rounds
        assert line == f"all {sent} first-seen tokens sent were verified"
    assert any("first-seen tokens sent were verified" in x for x in checks["jwt/10% first-seen"])


def test_memory_phases_answer_as_expected_within_bounds(report: ScaleReport) -> None:
    by = {m.phase: m for m in report.memory}
    assert set(by) == set(PHASES)
    for phase, m in by.items():
        assert m.error is None, m.error
        assert m.completed == TOKENS
        status = "200" if phase.endswith(" valid") else "401"
        assert m.statuses == {status: TOKENS}, phase
        method = {"jwt valid": "jwt", "api key valid": "api_key"}.get(phase)
        assert m.methods == ({method: TOKENS} if method else {}), phase
        assert m.rss_start > 0
        assert m.rss_end > 0
        for b in m.caches:
            assert b.size <= b.bound, (phase, b)
    sizes = {phase: {b.name: b.size for b in m.caches} for phase, m in by.items()}
    # The caches each phase feeds were filled, so the bounds above were put to the test.
    assert sizes["jwt valid"]["JWTAuth token cache (HitCache)"] >= CACHE // 2
    assert sizes["api key valid"]["APIKeyAuth key cache (HitCache)"] >= CACHE // 2
    assert sizes["api key valid"]["APIKeyAuth record cache (TLRU)"] == CACHE
    assert sizes["api key invalid"]["APIKeyAuth unknown-id cache (TLRU)"] == CACHE
    assert sizes["jwt invalid"]["JWTAuth token cache (HitCache)"] == 0


def test_report_renders(report: ScaleReport) -> None:
    text = report.markdown()
    assert "| case | kind | µs/request | overhead µs | \N{MULTIPLICATION SIGN} bare |" in text
    assert "| memory phase | tokens |" in text
    assert len(report.summary()) == len(PHASES)
    assert [c.count for c in report.setup] == list(CFG.issuer_counts)
    assert all(c.seconds > 0 for c in report.setup)
    data = json.loads(json.dumps(report.as_dict()))
    assert len(data["results"]) == len(expected_rows())
    assert {m["phase"] for m in data["memory"]} == set(PHASES)


# -- the checks themselves refuse what is not what it claims ---------------------------


def _bearer(token: str) -> dict[str, Any]:
    return apps.http_scope(headers=[(b"authorization", f"Bearer {token}".encode())])


def test_pool_check_refuses_a_bad_credential() -> None:
    issuer = Issuer("https://idp.test.example")
    app = AuthMiddleware(apps.bare_asgi, authenticators=[issuer.auth()])
    run_pool(app, [_bearer(issuer.token(1))], "jwt")
    with pytest.raises(CaseError, match=r"\[401\]"):
        run_pool(app, [_bearer(issuer.token(2)), _bearer(issuer.forged(3))], "jwt")


def test_a_first_seen_stream_is_never_reused() -> None:
    issuer = Issuer("https://idp.test.example", "HS256")
    app = AuthMiddleware(apps.bare_asgi, authenticators=[issuer.auth()])
    runner = StreamRunner(
        app, [_bearer(issuer.token(i)) for i in range(4)], identity="jwt", once=True
    )
    runner.check()
    assert runner(3) > 0
    with pytest.raises(CaseError, match="exhausted"):
        runner(1)
    runner.close()
