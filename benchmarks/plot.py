"""`--plot PATH`: a run's figures as a PNG chart.

Left, top: overhead per request over the bare app of the same kind (µs, log scale), one
block per kind, authgate and peer recipes in different colours. Left, bottom, on the same
axis: the floors (a raw signature check, `jwt.decode`, ...) in µs per call, so "raw RS256
verify" sits under "JWT RS256, first-seen". Right, when the dict has an "e2e" section:
requests/s under load as a share of the bare app's, with the 0.95 target. A "scale"
section is accepted and not drawn.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes

AUTHGATE = "#1f6feb"
PEER = "#cf222e"
FLOOR = "#6e7781"
BAND = "#f2f4f7"
MIN_US = 0.1  # noise can push an overhead to zero or below: drawn at this, marked "≤"
ROW_IN = 0.26  # inches per bar: keeps 8-pt labels apart whatever the number of rows
FOOTNOTE = "overhead = median over interleaved rounds of (case − bare of the same kind)"


@dataclass(frozen=True)
class _Bar:
    label: str
    value: float  # what is drawn: clipped to MIN_US
    measured: float
    colour: str

    @property
    def clipped(self) -> bool:
        return self.measured < MIN_US

    def text(self) -> str:
        if self.clipped:
            return f"≤{MIN_US:g} (measured {self.measured:.1f})".replace("-", "−")
        return f"{self.value:.1f}" if self.value < 100 else f"{self.value:.0f}"


def _peer_cases() -> set[tuple[str, str]]:
    # Imported late: it pulls in every peer framework, which plotting a saved dict
    # would not otherwise need at import time.
    from .peer_cases import PEER_CASES

    return set(PEER_CASES)


def _in_app_floors() -> frozenset[tuple[str, str]]:
    from .jwt_cases import IN_APP_FLOORS

    return IN_APP_FLOORS


def _blocks(report_dict: dict[str, Any]) -> tuple[list[tuple[str, list[_Bar]]], list[_Bar]]:
    """Overhead bars per kind, in run order, and the floor bars."""
    peers = _peer_cases()
    in_app = _in_app_floors()
    blocks: dict[str, list[_Bar]] = {}
    floors: list[_Bar] = []
    for r in report_dict.get("results", []):
        kind, case = r["kind"], r["case"]
        colour = PEER if (kind, case) in peers else FLOOR if (kind, case) in in_app else AUTHGATE
        if kind == "floor":
            if r.get("median_us") is not None:
                us = float(r["median_us"])
                floors.append(_Bar(case, max(us, MIN_US), us, FLOOR))
        elif case != "bare" and r.get("overhead_us") is not None:
            us = float(r["overhead_us"])
            blocks.setdefault(kind, []).append(_Bar(case, max(us, MIN_US), us, colour))
    return list(blocks.items()), floors


def _title(report_dict: dict[str, Any]) -> str:
    m = report_dict.get("machine") or {}
    s = report_dict.get("settings") or {}
    machine = ", ".join(
        str(x)
        for x in (
            f"{m.get('implementation', '')} {m.get('python', '')}".strip(),
            m.get("platform"),
            m.get("cpu"),
            m.get("cpu_count") and f"{m['cpu_count']} CPUs",
        )
        if x
    )
    run = ""
    if s.get("rounds_run") and s.get("iterations"):
        run = f"; {s['rounds_run']} rounds × {s['iterations']} requests"
    return (
        "authgate: what authentication adds per request\n"
        f"{datetime.date.today().isoformat()} — {machine}{run}"
    )


_Row = tuple[str | None, _Bar | None]  # (header, None) names a block; (None, bar) is a bar


def _e2e_rows(report_dict: dict[str, Any]) -> list[dict[str, Any]]:
    """The end-to-end rows with a ratio (not the bare apps), each with its bare req/s."""
    rows = (report_dict.get("e2e") or {}).get("results") or []
    bare = {(r["server"], r["group"]): r.get("rps_median") for r in rows if r.get("ratio") is None}
    return [
        {**r, "bare_rps": bare.get((r["server"], r["group"]))}
        for r in rows
        if r.get("ratio") is not None
    ]


def _draw_bars(ax: Axes, rows: list[_Row], x_max: float) -> None:
    """One horizontal bar per row, top to bottom, on a log axis; headers in bold."""
    n = len(rows)
    for i, (_, bar) in enumerate(rows):
        if bar is None:
            continue
        y = n - 1 - i
        ax.barh(
            y,
            bar.value,
            color=bar.colour,
            alpha=0.45 if bar.clipped else 1.0,
            hatch="//" if bar.clipped else None,
            edgecolor="white" if bar.clipped else None,
        )
        ax.text(bar.value * 1.1, y, bar.text(), va="center", fontsize=7.5)
    ax.set_yticks(range(n - 1, -1, -1), [h or (b.label if b else "") for h, b in rows], fontsize=8)
    for tick, (_, bar) in zip(ax.get_yticklabels(), rows, strict=True):
        if bar is None:
            tick.set_fontweight("bold")
            tick.set_fontsize(9)
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xscale("log")
    ax.set_xlim(MIN_US / 2, x_max)
    ax.grid(axis="x", which="major", alpha=0.35)
    ax.grid(axis="x", which="minor", alpha=0.12)
    ax.set_axisbelow(True)


def _draw_e2e(ax: Axes, rows: list[dict[str, Any]], target: float) -> None:
    """Requests/s as a share of the bare app's, linear 0 to 1.2, the target dashed."""
    n = len(rows)
    ys = list(range(n - 1, -1, -1))
    ratios = [float(r["ratio"]) for r in rows]
    # Interquartile range of the per-round ratios, when the run kept it.
    spread = [r.get("ratio_quartiles") or [v, v] for r, v in zip(rows, ratios, strict=True)]
    err = [
        [max(v - q[0], 0.0) for v, q in zip(ratios, spread, strict=True)],
        [max(q[-1] - v, 0.0) for v, q in zip(ratios, spread, strict=True)],
    ]
    colours = [AUTHGATE if r["app"].startswith("authgate") else PEER for r in rows]
    ax.barh(ys, ratios, height=0.7, color=colours, xerr=err, ecolor="#24292f", capsize=3)
    labels = []
    for r in rows:
        bare = f", bare {r['bare_rps']:,.0f} req/s" if r.get("bare_rps") else ""
        labels.append(f"{r['app']}\n{r['group']} on {r['server']}{bare}")
    ax.set_yticks(ys, labels, fontsize=8)
    ax.tick_params(axis="y", length=0)
    ax.set_ylim(-0.6, n - 0.4)
    ax.set_xlim(0, 1.2)
    ax.axvline(target, ls="--", color="black", lw=1)
    for y, v, q, r in zip(ys, ratios, spread, rows, strict=True):
        rps = f" · {r['rps_median']:,.0f} req/s" if r.get("rps_median") is not None else ""
        if v >= 0.45:  # fits inside the bar
            ax.text(
                0.015, y, f"{v:.2f}{rps}", va="center", fontsize=8, color="white", weight="bold"
            )
        else:
            ax.text(max(v, q[-1]) + 0.02, y, f"{v:.2f}{rps}", va="center", fontsize=8)
    ax.set_title("end to end under load: requests/s ÷ the bare app's", fontsize=10, loc="left")
    ax.set_xlabel(
        f"ratio to the bare app\n(dashed: the {target:g} target; whiskers: quartiles over rounds)"
    )
    ax.grid(axis="x", alpha=0.35)
    ax.set_axisbelow(True)


def plot(report_dict: dict[str, Any], path: str | Path, *, title: str | None = None) -> None:
    """Draw `report_dict` (`Report.as_dict()`, optionally with "e2e" and "scale") to `path`
    as a PNG."""
    try:
        import matplotlib  # noqa: F401  (only to say what is missing)
    except ImportError as exc:
        raise RuntimeError("plotting needs matplotlib: pip install 'authgate[bench]'") from exc
    # A bare Figure on an Agg canvas: no display needed, and no pyplot state left behind.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    blocks, floors = _blocks(report_dict)
    e2e = _e2e_rows(report_dict)
    n_top = sum(len(bars) + 1 for _, bars in blocks)  # + 1: the kind's header row
    n_floor = len(floors) + 1 if floors else 0
    n_e2e = 2 * len(e2e)  # two-line labels
    values = [b.value for _, bars in blocks for b in bars] + [b.value for b in floors]
    x_max = max(values, default=10.0) * 6  # room for the value written after each bar

    n_rows = max(n_top + n_floor, n_e2e, 1)
    fig = Figure(figsize=(20 if e2e else 12, max(4.5, ROW_IN * n_rows + 2.6)), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(1, 2, width_ratios=(1.6, 1)) if e2e else fig.add_gridspec(1, 1)
    heights = [n for n in (n_top, n_floor) if n] or [1]
    left = grid[0, 0].subgridspec(len(heights), 1, height_ratios=heights)

    axes: list[Axes] = []
    if blocks:
        ax = fig.add_subplot(left[0, 0])
        rows: list[_Row] = []
        for i, (kind, bars) in enumerate(blocks):
            top = n_top - 1 - len(rows)
            if i % 2 == 0:  # shade every other kind so a block reads as one
                ax.axhspan(top - len(bars) - 0.5, top + 0.5, color=BAND, zorder=0)
            rows.append((kind, None))
            rows.extend((None, b) for b in bars)
        _draw_bars(ax, rows, x_max)
        ax.set_title(
            "overhead over the bare app of the same kind, µs per request (log scale)",
            fontsize=10,
            loc="left",
        )
        axes.append(ax)
    if floors:
        ax = fig.add_subplot(left[len(heights) - 1, 0], sharex=axes[0] if axes else None)
        _draw_bars(
            ax, [("floor: no app, no middleware", None), *((None, b) for b in floors)], x_max
        )
        ax.set_title("floors, µs per call, same scale", fontsize=10, loc="left")
        axes.append(ax)
    if axes:
        axes[-1].set_xlabel("µs (log scale)")
    else:
        fig.text(0.5, 0.5, "no in-process results to draw", ha="center")
    if e2e:
        # Same height per row as on the left; the rest of the column stays empty.
        right = grid[0, 1].subgridspec(2, 1, height_ratios=(n_e2e + 1, max(n_rows - n_e2e, 1)))
        target = ((report_dict["e2e"].get("target") or {}).get("min_ratio")) or 0.95
        _draw_e2e(fig.add_subplot(right[0, 0]), e2e, float(target))

    handles = [
        Patch(color=AUTHGATE, label="authgate"),
        Patch(color=PEER, label="peer recipe"),
        Patch(color=FLOOR, label="floor"),
        Patch(
            facecolor=AUTHGATE,
            alpha=0.45,
            hatch="//",
            edgecolor="white",
            label=f"under {MIN_US:g} µs (noise can make it ≤ 0): drawn at {MIN_US:g}",
        ),
    ]
    # The title rides on the legend: the constrained layout overlaps a suptitle with a
    # legend placed outside the axes, but keeps a legend's own title clear.
    legend = fig.legend(
        handles=handles,
        loc="outside upper center",
        ncol=4,
        fontsize=8.5,
        frameon=False,
        title=title or _title(report_dict),
        title_fontproperties={"size": 12},
        alignment="center",
    )
    legend.get_title().set_multialignment("center")
    fig.supxlabel(
        FOOTNOTE + "; floors: median µs per call.", x=0.01, ha="left", fontsize=8, color="#57606a"
    )
    fig.savefig(path, dpi=100, format="png")
