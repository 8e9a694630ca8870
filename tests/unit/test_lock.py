"""The image's lock file pins a version of every dependency that pyproject.toml allows."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
IMAGE = {"python_version": "3.11", "sys_platform": "linux", "platform_system": "Linux"}


def locked() -> dict[str, str]:
    text = (ROOT / "deploy" / "requirements.lock").read_text()
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", text, flags=re.MULTILINE)
    return {canonicalize_name(name): version for name, version in pins}


def test_every_dependency_is_pinned_within_its_range_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = locked()
    wrong = []
    for line in project["dependencies"]:
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate(IMAGE):
            continue
        version = pins.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            wrong.append(f"{requirement}: locked {version}")
    assert wrong == [], "run `make lock`: " + "; ".join(wrong)
    text = (ROOT / "deploy" / "requirements.lock").read_text()
    assert text.count("==") == len(pins) and text.count("--hash=sha256:") >= len(pins)
