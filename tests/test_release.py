"""The release's metadata agrees with itself: one version in pyproject.toml, CITATION.cff and the changelog."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.unit


def test_one_version_in_pyproject_citation_and_changelog():
    version = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), flags=re.M)[1]
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["version"] == version
    assert cff["preferred-citation"]["identifiers"][0]["value"] == "arXiv:2410.17573"
    released = re.findall(r"^## (\d+\.\d+\.\d+)", (ROOT / "CHANGELOG.md").read_text(), flags=re.M)
    assert released and released[0] == version, f"the changelog's latest release {released[:1]} is not {version}"
