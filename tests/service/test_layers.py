"""The service's layers import one way: workers -> app -> transports (http, grpc) -> core; neither transport
imports the other, and the core imports no transport, no process machinery and no web framework."""

import ast
from pathlib import Path

import pytest

SERVICE = Path(__file__).resolve().parents[2] / "service"
LAYERS = ("core", "http", "grpc", "workers")


def imported_modules(package: str) -> set[str]:
    """Every module that the files of service/<package>/ import, by its dotted name."""
    found: set[str] = set()
    for path in (SERVICE / package).rglob("*.py"):
        if "stubs" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found.add(node.module)
    return found


def layers_used(package: str) -> set[str]:
    return {
        module.split(".")[1]
        for module in imported_modules(package)
        if module.startswith("service.") and module.split(".")[1] != package
    }


@pytest.mark.parametrize(
    ("package", "allowed"),
    [("core", set()), ("http", {"core"}), ("grpc", {"core"}), ("workers", {"core", "app"})],
)
def test_each_layer_imports_only_the_layers_below_it(package: str, allowed: set[str]) -> None:
    assert layers_used(package) <= allowed


def test_the_core_knows_no_web_framework_or_rpc_library() -> None:
    frameworks = {"fastapi", "starlette", "grpc", "uvicorn"}
    assert not {module.split(".")[0] for module in imported_modules("core")} & frameworks


def test_the_layers_exist_as_named() -> None:
    assert all((SERVICE / package / "__init__.py").is_file() for package in LAYERS)
