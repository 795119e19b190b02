"""Property test of a live follower's REST API from its own OpenAPI document (schemathesis):
generated requests, valid and invalid, never get a 5xx other than 503 (which must carry
Retry-After), never hang, never crash the node, and answer what the document promises.

`make test` runs RAFTKV_HTTP_EXAMPLES (default 100) valid and as many invalid requests; the
full property run is RAFTKV_HTTP_EXAMPLES=500 pytest tests/http/test_http_openapi_property.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis
from cluster import ProcCluster
from http_helpers import call, follower, http_port
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

EXAMPLES_ENV = "RAFTKV_HTTP_EXAMPLES"
DEFAULT_EXAMPLES = 100
EXAMPLES = int(os.environ.get(EXAMPLES_ENV, DEFAULT_EXAMPLES))
REQUEST_TIMEOUT_S = 15.0
"""A generated request answered later than this is a hang (the forwarder gives up at 5 s)."""

pytestmark = pytest.mark.timeout(600 + EXAMPLES * 10)

calls: dict[str, int] = {}
"""Requests sent and checked, by generation mode."""


@pytest.fixture(scope="module")
def target(http_cluster: ProcCluster) -> Iterator[tuple[ProcCluster, int]]:
    node_id = follower(http_cluster)
    yield http_cluster, node_id
    assert http_cluster.is_running(node_id), "the node died under generated requests"


@pytest.fixture(scope="module")
def api_schema(target: tuple[ProcCluster, int]) -> schemathesis.BaseSchema:
    """The document as the live node serves it (its base URL is the node's), but for /watch:
    a stream that never ends is no request to wait out (test_watch_sse.py has its own)."""
    cluster, node_id = target
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{http_port(cluster, node_id)}/openapi.json")
    return schema.exclude(path="/watch")


@schemathesis.check
def no_server_error_but_503_with_retry_after(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> None:
    status = response.status_code
    if status >= 500 and status != 503:
        raise AssertionError(f"{case.method} {case.formatted_path}: {status} {response.text[:300]}")
    if status == 503 and not response.headers.get("retry-after"):
        raise AssertionError(f"{case.method} {case.formatted_path}: 503 without Retry-After")


CHECKS = [no_server_error_but_503_with_retry_after, status_code_conformance, content_type_conformance,
          response_schema_conformance]


# schemathesis' own pytest integration (schema.parametrize, from_fixture) does not run under
# this pytest; its Hypothesis strategies do, drawn here from the live node's document.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                         ids=["valid", "invalid"])
@hypothesis.settings(max_examples=EXAMPLES, deadline=None, database=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(data=st.data())
def test_generated_requests_get_no_server_error_and_match_the_document(
    api_schema: schemathesis.BaseSchema, mode: GenerationMode, data: st.DataObject
) -> None:
    case = data.draw(api_schema.as_strategy(mode), label="request")
    response = case.call(timeout=REQUEST_TIMEOUT_S)
    calls[mode.value] = calls.get(mode.value, 0) + 1
    case.validate_response(response, checks=CHECKS)


def test_the_node_still_serves_after_the_generated_requests(target: tuple[ProcCluster, int]) -> None:
    cluster, node_id = target
    assert cluster.is_running(node_id)
    assert call(http_port(cluster, node_id), "GET", "/health").status == 200
    print(f"\ngenerated requests checked: {calls} ({EXAMPLES} examples asked per mode)")
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        assert calls.get(mode.value, 0) >= EXAMPLES, f"fewer {mode.value} requests than asked: {calls}"
