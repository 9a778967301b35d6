from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from tests.service.apps import make_settings


@pytest.fixture
def client(tiny_artifacts: Path) -> Iterator[TestClient]:
    with TestClient(create_app(make_settings(tiny_artifacts))) as test_client:
        yield test_client
