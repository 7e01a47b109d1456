"""Schemathesis against the router's own OpenAPI document: every operation, with requests
generated from its schema in both of schemathesis' modes (conforming and violating), never answers
5xx, a traceback or planted content. The app runs in process (ASGI) over the same engine and
source stand-ins as the table of hand-made cases; the cases count in the hostile-input figures."""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")

from hypothesis import HealthCheck, settings  # noqa: E402

from llama_mapper.platform.settings.serving import ServingSettings  # noqa: E402
from llama_mapper.serving.api import build_app  # noqa: E402
from llama_mapper.serving.router_core import RouterCore  # noqa: E402
from tests.unit.hostile.tally import TALLY  # noqa: E402
from tests.unit.hostile.test_http import TOKEN, Engine, Source  # noqa: E402


def _app():
    core = RouterCore(
        ServingSettings(rollout_refresh_s=0.01, rate_limit_rps=0, auth_token=TOKEN),
        Engine(),
        Source(),
    )
    return build_app(lambda: core)


schema = schemathesis.openapi.from_asgi(
    "/openapi.json", _app(), headers={"authorization": f"Bearer {TOKEN}"}
)


@schema.parametrize()
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_operation_answers_5xx_on_generated_input(case):
    response = case.call(headers={"authorization": f"Bearer {TOKEN}"})
    problems = TALLY.record(
        "http-openapi",
        f"{case.method} {case.path}",
        server_error=response.status_code >= 500,
        texts=[response.text],
    )
    assert not problems, (case.method, case.path, problems, response.text[:500])
