"""Prints pip constraints pinning every dependency that pyproject.toml declares, the core's
and every extra's, to the lowest version it declares (`name>=X` becomes `name==X`; where
extras differ, the highest of their bounds). The test tools are left to pip: they check
the code, and their bounds are not a promise to users.

Every pinned dependency must declare a lower bound: one without would let the
lowest-versions run test whatever pip picks, and leave the bound unchecked.

`--core` prints the core's own lowest versions only: where a test or bench package needs
a newer release of a core dependency (joserfc and cryptography), the run installs those
over it afterwards, so that the core's bounds are the ones tested.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
TOOLS = {"pytest", "hypothesis", "mypy", "ruff", "types-cachetools"}
_REQ = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(.*?)\s*(?:;.*)?$")


def lowest(requirement: str) -> tuple[str, str]:
    """`(name, lowest version)` of a requirement."""
    match = _REQ.match(requirement)
    if match is None:
        raise ValueError(f"cannot read requirement {requirement!r}")
    name, spec = match.groups()
    bounds = re.findall(r">=\s*([^,\s]+)", spec)
    if len(bounds) != 1:
        raise ValueError(f"{requirement!r} must declare exactly one lower bound (>=)")
    return name.lower(), bounds[0]


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def main() -> int:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = list(project["dependencies"])
    if "--core" not in sys.argv[1:]:
        for reqs in project["optional-dependencies"].values():
            requirements += reqs
    pins: dict[str, str] = {}
    try:
        for requirement in requirements:
            match = _REQ.match(requirement)
            if match is not None and match.group(1).lower() in TOOLS:
                continue
            name, version = lowest(requirement)
            if name not in pins or _key(version) > _key(pins[name]):
                pins[name] = version
    except ValueError as exc:
        print(f"lowest.py: {exc}", file=sys.stderr)
        return 1
    print("\n".join(f"{name}=={version}" for name, version in sorted(pins.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
