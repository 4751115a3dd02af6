"""The PEM wire format: round trips, and a peer's malformed bytes refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealgrid.protocol.pem.wire import VERSION, Message, RemoteProtocolError, Topic, decode, encode


@given(
    st.sampled_from(list(Topic)),
    st.integers(0, 2**40),
    st.integers(0, 2**20),
    st.lists(st.integers(-(2**4096), 2**4096), max_size=20),
)
def test_round_trip(topic: Topic, window: int, sender: int, values: list[int]) -> None:
    message = Message(topic, window, sender, tuple(values))
    data = encode(message)
    assert data[0] == VERSION
    assert decode(data) == message


def test_a_2048_bit_ciphertext_costs_514_bytes() -> None:
    ciphertext = (1 << 4095) + 12345  # a 4096-bit integer mod n²
    empty = len(encode(Message(Topic.EVAL_UP, 3, 7, ())))
    assert len(encode(Message(Topic.EVAL_UP, 3, 7, (ciphertext,)))) - empty == 512 + 2


@pytest.mark.parametrize(
    "data",
    [
        b"",
        bytes([VERSION + 1, 1, 0, 0, 0]),  # unknown version
        bytes([VERSION, 250, 0, 0, 0]),  # unknown topic
        bytes([VERSION, 1, 0, 0, 1, 8, 1]),  # value truncated
        bytes([VERSION, 1, 0, 0, 0, 0]),  # trailing byte
        bytes([VERSION, 1, 0x80]),  # truncated varint
    ],
)
def test_malformed_bytes_are_the_peers_fault(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode(data)
