"""Property-based fuzzing of the OpenAPI schema with schemathesis (bounded): no 5xx, and every
answer's status, content type and body conform to what the schema documents."""

from pathlib import Path

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from tests.service.apps import make_settings

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
EXAMPLES_PER_OPERATION = 100


def test_every_operation_conforms_to_the_schema(tiny_artifacts: Path) -> None:
    app = create_app(make_settings(tiny_artifacts))
    with TestClient(app):  # runs the lifespan, so the models are loaded while schemathesis calls the app
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert {op.label for op in operations} >= {"POST /classify", "POST /reconstruct", "POST /embed", "GET /models"}
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: schemathesis.Case) -> None:
                case.call_and_validate(checks=CHECKS)

            fuzz()
