"""Settings for an app served in the test process, by FastAPI's TestClient."""

from pathlib import Path

from service.core.settings import Settings


def make_settings(artifacts: Path, **overrides: object) -> Settings:
    # No gRPC server in the test process: tests/service/grpc/ starts real ones.
    return Settings(artifacts_dir=artifacts, device="cpu", **{"grpc_port": 0, **overrides})  # type: ignore[arg-type]
