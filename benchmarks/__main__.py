"""`python -m benchmarks`: what authgate costs per request, against the bare apps, in one run.

Apps are called in-process (no server, no sockets). Prints a Markdown table and the
targets; `--json PATH` also writes every figure, the samples and the machine.
"""

from __future__ import annotations

import argparse
import sys

from .suite import FULL, QUICK, run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="a short run (under about 10 s)")
    p.add_argument(
        "--rounds",
        type=int,
        help="interleaved rounds (default 500, quick 100; --budget may stop sooner)",
    )
    p.add_argument(
        "--iterations",
        type=int,
        help="requests per round for micro cases; framework and crypto cases run a fixed "
        "fraction of it (default 2000, quick 1000)",
    )
    p.add_argument(
        "--budget",
        type=float,
        help="stop after this many seconds of rounds, min. 3 rounds (default 40, quick 5; "
        "none with --rounds)",
    )
    p.add_argument(
        "--only",
        action="append",
        metavar="PATTERN",
        help="only cases whose kind/case matches (e.g. 'asgi/*', '*api key*'); repeatable; "
        "the bare case of each kind always runs",
    )
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument(
        "--check", action="store_true", help="exit 1 when the cached API key target is missed"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="progress on stderr")
    args = p.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    report = run(
        rounds=args.rounds or int(defaults["rounds"]),
        iterations=args.iterations or int(defaults["iterations"]),
        # An explicit --rounds runs them all, unless --budget says otherwise.
        budget_s=(
            args.budget
            if args.budget is not None
            else (None if args.rounds else defaults["budget_s"])
        ),
        only=args.only,
        progress=(lambda line: print(line, file=sys.stderr)) if args.verbose else None,
    )
    print(report.markdown())
    print()
    for line in report.summary():
        print(line)
    s = report.settings
    print(
        f"\n{len(report.rows)} cases, {s['rounds_run']} interleaved rounds "
        f"({s['iterations']} requests per round for micro cases), {s['elapsed_s']:.1f} s in "
        "all. µs/request: median over rounds; overhead and × bare: median over rounds of "
        "the difference and ratio to the bare app of the same kind in the same round."
    )
    print("Machine speed during the run: " + "; ".join(report.noise()) + ".")
    if args.json:
        report.write_json(args.json)
    return 1 if args.check and not report.primary_met else 0


if __name__ == "__main__":
    sys.exit(main())
