"""Shape checks of membership requests on the client endpoint (raftkvd.net.clientendpoint.validate): a bad
request is refused before it reaches the core, with a message naming the field."""

from __future__ import annotations

from typing import Any

import pytest

from raftkv.protocol import Code, Op
from raftkvd.net.clientendpoint import RequestError, validate

GOOD_ADD = {"op": "member_add", "node_id": 4, "raft": "tcp://10.0.0.4:50051",
            "client": "tcp://node4.example:50061", "http": "[::1]:8080"}


def test_well_formed_member_requests_pass() -> None:
    assert validate(GOOD_ADD, 1024) == Op.MEMBER_ADD
    assert validate({"op": "member_remove", "node_id": 2}, 1024) == Op.MEMBER_REMOVE


@pytest.mark.parametrize(
    "change, field",
    [
        ({"node_id": 0}, "node_id"),
        ({"node_id": True}, "node_id"),
        ({"node_id": "4"}, "node_id"),
        ({"node_id": 2**63}, "node_id"),
        ({"raft": "10.0.0.4:50051"}, "raft"),
        ({"raft": None}, "raft"),
        ({"client": "tcp://host"}, "client"),
        ({"http": "http://10.0.0.4:8080"}, "http"),
        ({"http": "10.0.0.4"}, "http"),
    ],
)
def test_malformed_member_add_is_invalid_and_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(RequestError) as caught:
        validate({**GOOD_ADD, **change}, 1024)
    assert caught.value.code == Code.INVALID and field in str(caught.value)


def test_member_remove_needs_a_node_id() -> None:
    with pytest.raises(RequestError, match="node_id"):
        validate({"op": "member_remove"}, 1024)
