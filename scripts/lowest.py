"""Prints pip constraints pinning the core's and the demo's dependencies to the lowest
versions pyproject.toml declares (`name>=X` becomes `name==X`).

Every one of them must declare a lower bound: a dependency without one would let the
lowest-versions run test whatever pip picks, and the bound it claims would go unchecked.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
EXTRAS = ("demo",)
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*?)\s*(?:;.*)?$")


def lowest(requirement: str) -> str:
    match = _REQ.match(requirement)
    if match is None:
        raise ValueError(f"cannot read requirement {requirement!r}")
    name, spec = match.groups()
    bounds = re.findall(r">=\s*([^,\s]+)", spec)
    if len(bounds) != 1:
        raise ValueError(f"{requirement!r} must declare exactly one lower bound (>=)")
    return f"{name}=={bounds[0]}"


def main() -> int:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in EXTRAS:
        requirements += project["optional-dependencies"][extra]
    try:
        pins = [lowest(r) for r in requirements]
    except ValueError as exc:
        print(f"lowest.py: {exc}", file=sys.stderr)
        return 1
    print("\n".join(pins))
    return 0


if __name__ == "__main__":
    sys.exit(main())
