"""`python -m benchmarks`: what authentication costs per request, measured in one run."""

from __future__ import annotations

import argparse
import sys
import time

from .cases import build
from .harness import markdown, measure, results, write_json

TARGET_US = 3.0
FIRST_SEEN_MARGIN_US = 20.0


def summary(rows: list[dict[str, object]]) -> list[str]:
    by = {(r["kind"], r["case"]): r for r in rows}
    lines = []
    for kind in ("asgi", "wsgi"):
        for case in ("API key, cached", "JWT ES256, cached"):
            r = by.get((kind, case))
            if r is not None:
                over = float(r["overhead_us"])  # type: ignore[arg-type]
                ok = "met" if over <= TARGET_US else "MISSED"
                lines.append(
                    f"- {kind} {case}: {over:.2f} µs overhead (target ≤ {TARGET_US} µs: {ok})"
                )
    for alg in ("RS256", "ES256", "EdDSA"):
        fs, raw = by.get(("asgi", f"JWT {alg}, first-seen")), by.get(("floor", f"raw {alg} verify"))
        if fs is not None and raw is not None:
            extra = float(fs["overhead_us"]) - float(raw["us_per_request"])  # type: ignore[arg-type]
            ok = "met" if extra <= FIRST_SEEN_MARGIN_US else "MISSED"
            lines.append(
                f"- first-seen {alg}: raw verify + {extra:.1f} µs "
                f"(target ≤ + {FIRST_SEEN_MARGIN_US:.0f} µs: {ok})"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a short run (about 10 s)")
    p.add_argument("--rounds", type=int)
    p.add_argument("--iterations", type=int, help="requests per case per round")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    iterations = args.iterations or (1000 if args.quick else 4000)
    budget = 8.0 if args.quick else 50.0

    started = time.perf_counter()
    cases = build()
    measure(cases, rounds=rounds, iterations=iterations, budget_s=budget)
    rows = results(cases)
    print(markdown(rows))
    print()
    lines = summary(rows)
    print("\n".join(lines))
    print(
        f"\n{len(cases)} cases, {min(len(c.samples) for c in cases)} rounds, "
        f"{time.perf_counter() - started:.1f} s"
    )
    if args.json:
        write_json(args.json, rows, {"summary": lines, "rounds": rounds, "iterations": iterations})
    return 0


if __name__ == "__main__":
    sys.exit(main())
