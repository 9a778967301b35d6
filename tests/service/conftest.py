import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.core.settings import Settings
from service.server import create_app


def png_bytes(pixels: np.ndarray, mode: str | None = None) -> bytes:
    buffer = io.BytesIO()
    image = Image.fromarray(pixels.astype(np.uint8))
    (image.convert(mode) if mode else image).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_like(seed: int) -> np.ndarray:
    """A 28x28 uint8 image: a bright stroke whose place depends on the seed."""
    rng = np.random.default_rng(seed)
    pixels = np.zeros((28, 28), np.uint8)
    row, col = rng.integers(4, 20, 2)
    pixels[row : row + 6, col : col + 3] = 255
    pixels[row, col : col + 7] = 200
    return pixels


def make_settings(artifacts: Path, **overrides: object) -> Settings:
    # No gRPC server in the test process: tests/service/test_grpc.py starts real ones.
    return Settings(artifacts_dir=artifacts, device="cpu", **{"grpc_port": 0, **overrides})  # type: ignore[arg-type]


@pytest.fixture
def client(tiny_artifacts: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tiny_artifacts))) as test_client:
        yield test_client
