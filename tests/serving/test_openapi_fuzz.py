"""Fuzz the served OpenAPI spec with schemathesis, every check on (the CLI's ``--checks all``): each
status code and body an endpoint answers, to valid and invalid requests alike, must be the documented one;
no 5xx that is not declared; auth enforced where declared.

The server is real (uvicorn on 127.0.0.1, SQLite, a production model) and the fuzzer reaches it over HTTP.
"""

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.generation.modes import GenerationMode

from retrain_assets.serving.api import create_app
from tests.faults.conftest import running, served_settings
from tests.serving.conftest import TOKEN, quick


@pytest.fixture(scope="module")
def served_spec(tmp_path_factory, churn_pipeline):
    from tests.faults.conftest import Backend

    root = tmp_path_factory.mktemp("fuzz")
    path = root / "monitoring.db"
    settings, _ = served_settings(root, Backend("sqlite", f"sqlite:///{path}", path=path), churn_pipeline)
    app = create_app(settings, token=TOKEN, serving=quick(root))
    with running(app) as base:
        yield base


def operations(base: str) -> list:
    loaded = schemathesis.openapi.from_url(f"{base}/openapi.json")
    return [result.ok() for result in loaded.get_all_operations()]


def all_checks():
    load_all_checks()
    return [check for check in CHECKS.get_all() if not isinstance(check, type)]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_is_the_documented_one(served_spec, mode):
    """Each operation of the served spec, with schemathesis' generated requests (valid ones, then invalid
    ones) and every check. A failure names the operation, the check and the request to replay."""
    checks = all_checks()
    found = operations(served_spec)
    assert {op.label for op in found} >= {"POST /predict/batch", "POST /labels", "GET /readyz", "GET /metrics",
                                           "GET /training/status", "POST /model/reload"}
    nothing_to_break = set()
    for operation in found:
        @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
        @hypothesis.settings(max_examples=40, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(hypothesis.HealthCheck))
        def fuzz(case):
            case.call_and_validate(base_url=served_spec, headers={"Authorization": f"Bearer {TOKEN}"}, checks=checks,
                                   timeout=30)

        try:
            fuzz()
        except hypothesis.errors.Unsatisfiable:  # no parameter and no body: no invalid request to make
            nothing_to_break.add(operation.label)
    assert nothing_to_break <= {"GET /healthz", "GET /readyz", "GET /health", "GET /metrics"}
