"""Issue 14, finding 14: dependency floors stay above published advisories, and the constraints file
for customer installs pins a set inside those floors.

CI has no route to an advisory database (only package registries), so this table is the offline
check; update it when an advisory names a version range the floors still admit.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
# package -> first version without the advisory the floor must exclude
ADVISORY_FREE = {
    "requests": "2.32.4",  # CVE-2024-47081 (netrc credentials to the wrong host), CVE-2024-35195
    "urllib3": "2.6.0",  # CVE-2025-50181/50182 (redirects), CVE-2025-66418/66471 (decompression)
    "lxml": "4.9.1",  # CVE-2022-2309
    "filelock": "3.20.1",  # CVE-2025-68146 (symlink TOCTOU on the lock file)
}


def _requirements() -> dict[str, Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    reqs = [Requirement(r) for r in data["project"]["dependencies"]]
    return {re.sub(r"[-_.]+", "-", r.name).lower(): r for r in reqs}


def test_floors_exclude_versions_with_published_advisories() -> None:
    reqs = _requirements()
    for name, fixed in ADVISORY_FREE.items():
        assert name in reqs, f"{name} is imported or security-relevant but not declared in pyproject.toml"
        floors = [Version(s.version) for s in reqs[name].specifier if s.operator in (">=", "==", "~=")]
        assert floors and min(floors) >= Version(fixed), f"{name}: floor {reqs[name].specifier} admits < {fixed}"


def test_constraints_pin_every_runtime_dependency_inside_its_range() -> None:
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = Version(version)
    for name, req in _requirements().items():
        assert name in pins, f"{name} is not pinned in constraints.txt"
        assert req.specifier.contains(pins[name]), f"constraints.txt pins {name} {pins[name]} outside {req.specifier}"
