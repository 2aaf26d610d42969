"""`python -m benchmarks`: what authgate costs per request, against the bare apps, in one run.

Apps are called in-process (no server, no sockets). Prints a Markdown table and the
targets; `--json PATH` also writes every figure, the samples and the machine; `--plot
PATH` draws them (PNG). `--e2e` adds real servers under load (uvicorn, gunicorn, wrk),
`--scale` adds key-store size, issuer count, first-seen share and memory after many
tokens; `--fleet` adds authgate with Redis (its own redis-server: cached path, store
lookups, throttled failures); `--all` adds all three. Each also runs alone: `python -m
benchmarks.e2e`, `.scale`, `.fleet`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
    p.add_argument("--plot", metavar="PATH", help="also draw the overheads as a PNG chart")
    p.add_argument(
        "--e2e", action="store_true", help="also end to end: servers on 127.0.0.1 under wrk"
    )
    p.add_argument(
        "--scale", action="store_true", help="also scale and memory (1M tokens; quick: 20k)"
    )
    p.add_argument(
        "--fleet",
        action="store_true",
        help="also authgate with Redis: a redis-server of its own on 127.0.0.1 (Debian's)",
    )
    p.add_argument("--all", action="store_true", help="--e2e, --scale and --fleet")
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
    data = report.as_dict()
    m = data["machine"]
    print(
        f"Machine: {m['implementation']} {m['python']}, {m['cpu'] or m['machine']} "
        f"({m['cpu_count']} CPUs), {m['platform']}."
    )
    print("Machine speed during the run: " + "; ".join(report.noise()) + ".")
    failed = args.check and not report.primary_met
    progress = (lambda line: print(line, file=sys.stderr)) if args.verbose else None
    if args.e2e or args.all:
        from .e2e import run_e2e

        e2e = run_e2e(1.0, 2 if args.quick else 10, progress)
        print("\n## End to end\n\n" + e2e.markdown())
        for line in [*e2e.summary(), *e2e.notes()]:
            print(line)
        data["e2e"] = e2e.as_dict()
        failed = failed or (args.check and e2e.target_met is False)
    if args.scale or args.all:
        from .scale import run_scale

        scale = run_scale(args.quick, progress=progress)
        print("\n## Scale and memory\n\n" + scale.markdown())
        for line in scale.summary():
            print(line)
        data["scale"] = scale.as_dict()
        failed = failed or (args.check and not scale.memory_met)
    if args.fleet or args.all:
        from .fleet import describe, run_fleet

        fleet = run_fleet(args.quick, progress=progress)
        print("\n## Redis (fleet)\n\n" + fleet.markdown() + "\n")
        for line in describe(fleet):
            print(line)
        data["fleet"] = fleet.as_dict()
        from .propagation import markdown as propagation_markdown
        from .propagation import measure

        propagation = measure(revocations=5 if args.quick else 30)
        print("\n### Revocation propagation\n\n" + propagation_markdown(propagation) + "\n")
        data["propagation"] = propagation
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    if args.plot:
        from .plot import plot

        plot(data, args.plot)
        print(f"\nChart: {args.plot}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
