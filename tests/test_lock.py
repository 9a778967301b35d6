"""requirements.lock, which `make install` installs, must still give what pyproject.toml asks for."""

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]


def locked_versions() -> dict[str, str]:
    """Package name -> version, from the lock's `name==version \\` lines (hashes and comments are indented)."""
    lines = (ROOT / "requirements.lock").read_text().splitlines()
    pins = (line.split()[0].partition("==") for line in lines if line and not line[0].isspace() and line[0] != "#")
    return {canonicalize_name(name): version for name, _, version in pins}


def test_the_lock_satisfies_the_project_and_every_extra() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = [requirement for group in project["optional-dependencies"].values() for requirement in group]
    locked = locked_versions()
    unmet = []
    for requirement in map(Requirement, [*project["dependencies"], *extras]):
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = locked.get(canonicalize_name(requirement.name))
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{requirement} (locked: {version})")
    assert not unmet, f"requirements.lock is behind pyproject.toml; run `make lock`: {', '.join(unmet)}"


def test_the_serving_lock_pins_the_same_versions_and_no_torch() -> None:
    """requirements-serve.lock (the serving image's) holds the project's own dependencies, at the main lock's
    versions, and nothing of torch's."""
    lines = (ROOT / "requirements-serve.lock").read_text().splitlines()
    pins = (line.split()[0].partition("==") for line in lines if line and not line[0].isspace() and line[0] != "#")
    serving = {canonicalize_name(name): version for name, _, version in pins}
    locked = locked_versions()
    assert {name: (version, locked.get(name)) for name, version in serving.items() if locked.get(name) != version} == {}
    assert not {"torch", "triton", "torchvision", "onnx"} & set(serving)
    assert not [n for n in serving if n.startswith("nvidia-")]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in map(Requirement, project["dependencies"]):
        assert requirement.specifier.contains(serving[canonicalize_name(requirement.name)], prereleases=True)
