"""schemathesis against the running server's HTTP API (tests/hardening/openapi.py): positive and negative cases
for every route; no answer may be a server error, and every error must be `{"error": <message>}`."""

from __future__ import annotations

import json

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.hardening.openapi import document
from tests.hardening.tally import tried

schema = schemathesis.openapi.from_dict(document())


def error_body_names_the_problem(ctx, response, case) -> None:  # type: ignore[no-untyped-def]
    if response.status_code != 200:
        body = json.loads(response.content)
        assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], response.content


@schema.parametrize()
@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
def test_http_api(case, hard_server) -> None:  # type: ignore[no-untyped-def]
    tried("schemathesis: HTTP API cases")
    case.call_and_validate(base_url=f"http://{hard_server.http_url}", timeout=30,
                           checks=[not_a_server_error, error_body_names_the_problem])
