"""`--plot` draws a PNG from a run's figures; no figure is asserted."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from matplotlib import image

from benchmarks.plot import plot
from benchmarks.suite import run


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return run(rounds=2, iterations=20, budget_s=None, only=["*cached*", "floor/raw*"]).as_dict()


def test_plot_writes_a_png_with_a_row_per_case(report: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "bench.png"
    plot(report, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    height, width, _ = image.imread(out).shape
    assert width >= 1000
    assert height >= 400


def test_plot_survives_negative_overheads_and_an_e2e_section(
    report: dict[str, Any], tmp_path: Path
) -> None:
    data = copy.deepcopy(report)
    data["results"][1]["overhead_us"] = -0.4  # noise can do this
    data["e2e"] = {
        "results": [
            {"server": "uvicorn", "group": "pure ASGI", "app": "bare", "ratio": None},
            {"server": "uvicorn", "group": "pure ASGI", "app": "JWT, cached", "ratio": 0.97},
        ]
    }
    plain, both = tmp_path / "plain.png", tmp_path / "both.png"
    plot(report, plain)
    plot(data, both)
    # The end-to-end panel sits beside the in-process one.
    assert image.imread(both).shape[1] > image.imread(plain).shape[1]
