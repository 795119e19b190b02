"""Hypothesis strategies for arbitrary msgpack values: the fuzz input of the frame decoders."""

from __future__ import annotations

from hypothesis import strategies as st

UINT64_MAX = 2**64 - 1

msgpack_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=UINT64_MAX)
    | st.floats()
    | st.text(max_size=8)
    | st.binary(max_size=8)
)
msgpack_values = st.recursive(
    msgpack_scalars,
    lambda children: (
        st.lists(children, max_size=18) | st.dictionaries(st.text(max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)
