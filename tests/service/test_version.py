"""The version the service reports is the package's own."""

import tomllib
from pathlib import Path

from service import __version__

ROOT = Path(__file__).resolve().parents[2]


def test_the_service_reports_the_version_in_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert __version__ == project["version"]
