"""`--plot PATH`: the run as a PNG chart.

Left: overhead per request over the bare app of the same kind (µs, log scale), authgate
and peers in different colours, the floors (raw signature checks, `jwt.decode`) as grey
bars for scale. Right, when the run went end to end: requests/s as a share of the bare
app's, with the 0.95 target.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

AUTHGATE = "#1f6feb"
PEER = "#d1242f"
FLOOR = "#8c959f"
MIN_US = 0.1  # noise can push an overhead to zero or below: drawn at this, marked "≤"


def _peer_names() -> set[tuple[str, str]]:
    from .peer_cases import PEER_CASES

    return {(kind, case) for kind, case in PEER_CASES}


def plot(report: dict[str, Any], path: str | Path, *, title: str | None = None) -> None:
    """Draw `report` (what `Report.as_dict()` returns, optionally with "e2e") to `path`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.patches import Patch
    except ImportError as exc:  # pragma: no cover - the bench extra installs it
        raise RuntimeError("--plot needs matplotlib: pip install 'authgate[bench]'") from exc

    peers = _peer_names()
    rows = [r for r in report["results"] if r["case"] != "bare"]
    measured = [r for r in rows if r["kind"] != "floor" and r.get("overhead_us") is not None]
    floors = [r for r in rows if r["kind"] == "floor"]
    bars: list[tuple[str, float, str, bool]] = []  # label, value, colour, clipped
    for r in measured:
        value = float(r["overhead_us"])
        colour = PEER if (r["kind"], r["case"]) in peers else AUTHGATE
        bars.append((f"{r['case']}  [{r['kind']}]", max(value, MIN_US), colour, value < MIN_US))
    for r in floors:
        bars.append((f"{r['case']}  [floor, µs/call]", float(r["median_us"]), FLOOR, False))

    e2e = [r for r in (report.get("e2e") or {}).get("results", []) if r.get("ratio")]
    height = max(4.0, 0.28 * len(bars) + 1.6)
    fig = plt.figure(figsize=(19 if e2e else 11, height))
    grid = fig.add_gridspec(1, 2, width_ratios=(1.7, 1)) if e2e else fig.add_gridspec(1, 1)
    ax = fig.add_subplot(grid[0, 0])
    ys = list(range(len(bars)))[::-1]
    ax.barh(ys, [b[1] for b in bars], color=[b[2] for b in bars])
    ax.set_yticks(ys, [b[0] for b in bars], fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("overhead over the bare app of the same kind, µs per request (log)")
    for y, (_, value, _, clipped) in zip(ys, bars, strict=True):
        text = f"≤{MIN_US:g}" if clipped else (f"{value:.1f}" if value < 100 else f"{value:.0f}")
        ax.text(value * 1.08, y, text, va="center", fontsize=7)
    ax.set_xlim(MIN_US / 2, max(b[1] for b in bars) * 4 if bars else 10)
    names = ("authgate", "peer recipe", "floor (µs per call)")
    handles = [Patch(color=c, label=n) for c, n in zip((AUTHGATE, PEER, FLOOR), names, strict=True)]
    ax.legend(handles=handles, loc="lower right")
    ax.grid(axis="x", which="both", alpha=0.25)

    if e2e:
        ax2 = fig.add_subplot(grid[0, 1])
        labels = [f"{r['server']}: {r['group']}: {r['app']}" for r in e2e]
        values = [float(r["ratio"]) for r in e2e]
        ys2 = list(range(len(e2e)))[::-1]
        colours = [PEER if "PyJWT" in r["app"] else AUTHGATE for r in e2e]
        ax2.barh(ys2, values, color=colours)
        ax2.set_yticks(ys2, labels, fontsize=8)
        ax2.axvline(0.95, ls="--", color="black", lw=1)
        ax2.set_xlim(0, 1.2)
        ax2.set_xlabel("end to end (wrk): requests/s as a share of the bare app's")
        for y, v in zip(ys2, values, strict=True):
            ax2.text(min(v, 1.15) + 0.01, y, f"{v:.2f}", va="center", fontsize=7)

    machine = report.get("machine", {})
    when = datetime.date.today().isoformat()
    fig.suptitle(
        title
        or (
            f"authgate: what authentication costs per request ({when}; "
            f"{machine.get('implementation', '')} {machine.get('python', '')}, "
            f"{machine.get('cpu_count', '?')} CPUs)"
        ),
        fontsize=11,
    )
    fig.text(
        0.01,
        0.005,
        "overhead = median over interleaved rounds of (case − bare of the same kind), "
        "same run; reproduce with python -m benchmarks --all --plot PATH",
        fontsize=7,
        color="#57606a",
    )
    fig.tight_layout(rect=(0, 0.02, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
