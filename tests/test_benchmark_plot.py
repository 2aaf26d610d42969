"""`--plot` draws a PNG from a run's figures; no figure is asserted."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from matplotlib import image

from benchmarks.plot import plot
from benchmarks.suite import run

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    # A few authgate and peer cases, their bare apps, and floors: every kind of bar.
    only = ["asgi/*cached*", "starlette/*", "floor/raw*", "floor/PyJWKClient*"]
    return run(rounds=2, iterations=50, budget_s=None, only=only).as_dict()


def size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels, read back from the file."""
    height, width = image.imread(path).shape[:2]
    return width, height


def test_plot_writes_a_png_that_grows_with_the_rows(report: dict[str, Any], tmp_path: Path) -> None:
    out, fewer = tmp_path / "bench.png", tmp_path / "fewer.png"
    plot(report, out)
    assert out.read_bytes()[:8] == PNG
    width, height = size(out)
    assert width >= 1000
    assert height >= 450
    small = copy.deepcopy(report)
    small["results"] = [r for r in small["results"] if r["kind"] != "starlette"]
    plot(small, fewer, title="custom")
    assert size(fewer)[1] < height


def test_plot_survives_non_positive_overheads_and_extra_sections(
    report: dict[str, Any], tmp_path: Path
) -> None:
    data = copy.deepcopy(report)
    measured = [r for r in data["results"] if r["case"] != "bare" and r["kind"] != "floor"]
    measured[0]["overhead_us"] = -0.4  # noise can do this
    measured[1]["overhead_us"] = 0.0
    data["e2e"] = {
        "results": [
            {
                "server": "uvicorn",
                "group": "pure ASGI",
                "app": "bare",
                "rps_median": 7000.0,
                "ratio": None,
            },
            {
                "server": "uvicorn",
                "group": "pure ASGI",
                "app": "authgate JWT ES256, cached",
                "rps_median": 6800.0,
                "ratio": 0.97,
                "ratio_quartiles": [0.9, 1.3],
            },
            {
                "server": "uvicorn",
                "group": "Starlette",
                "app": "PyJWT recipe",
                "rps_median": 1500.0,
                "ratio": 0.3,
                "ratio_quartiles": None,
            },
        ],
        "target": {"min_ratio": 0.95},
    }
    data["scale"] = {"results": [], "memory": []}  # accepted, not drawn
    plain, both = tmp_path / "plain.png", tmp_path / "both.png"
    plot(report, plain)
    plot(data, both)
    assert both.read_bytes()[:8] == PNG
    # The end-to-end panel sits beside the in-process one.
    assert size(both)[0] > size(plain)[0]


def test_importing_it_does_not_need_matplotlib() -> None:
    code = "import sys, benchmarks.plot; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_without_matplotlib_it_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes the import fail
    with pytest.raises(RuntimeError, match=r"pip install 'authgate\[bench\]'"):
        plot({"results": []}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
