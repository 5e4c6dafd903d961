"""The infer fast path routes exactly the infer URLs to the infer endpoint and everything else to FastAPI."""

from __future__ import annotations

import pytest

from server.transport.http_infer import INFER_PATH


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("/v2/models/mlp/infer", {"model": "mlp"}),
        ("/v2/models/mlp/versions/3/infer", {"model": "mlp", "version": "3"}),
        ("/v2/models/a.b-c_d/versions/x/infer", {"model": "a.b-c_d", "version": "x"}),
    ],
)
def test_infer_urls_match(path: str, params: dict[str, str]) -> None:
    match = INFER_PATH.match(path)
    assert match is not None
    assert {k: v for k, v in match.groupdict().items() if v is not None} == params


@pytest.mark.parametrize(
    "path",
    ["/v2/models/mlp", "/v2/models/mlp/infer/", "/v2/models/a/b/infer", "/v2/models//infer",
     "/v2/models/mlp/versions/1/ready", "/x/v2/models/mlp/infer", "/v2/models/mlp/versions//infer"],
)
def test_other_urls_go_to_fastapi(path: str) -> None:
    assert INFER_PATH.match(path) is None
