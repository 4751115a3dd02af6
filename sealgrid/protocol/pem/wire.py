"""The PEM wire format; assumes nothing of the peer: every frame is parsed, never unpickled.

A message is a frozen :class:`Message` ``(topic, window, sender, values)`` whose payload is a
tuple of integers (ciphertexts, plaintext aggregates, agent ids, numerators and denominators).
Encoding, version :data:`VERSION`::

    byte 0      VERSION
    byte 1      topic (a :class:`Topic` value)
    varint      window
    varint      sender (agent id)
    varint      count of values
    per value   varint header (byte length << 1 | sign), then the magnitude big-endian

A 2048-bit Paillier ciphertext (a 4096-bit integer) costs 512 bytes plus a 2-byte header.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

#: The wire-format version written in byte 0 of every message.
VERSION = 1


class RemoteProtocolError(ValueError):
    """A peer sent bytes that are not a well-formed PEM message (its fault, not ours)."""


class Topic(enum.IntEnum):
    """What a message is for; one value per step of Protocols 1–4."""

    ROLES_UP = 1  # Protocol 1: bit masks (present, sellers, buyers) gathered up the tree
    ROLES = 2  # Protocol 1: the complete masks broadcast down
    EVAL_UP = 3  # Protocol 2: pairs (Enc_r1(|sn_j| + r_j) or Enc_r1(r_i), Enc_r2(...)) up the tree
    EVAL_TOTAL_R1 = 4  # Protocol 2: the root hands the first total to H_r1
    EVAL_DIRECT = 5  # Protocol 2: H_r1 and H_r2 send each other their own contribution
    EVAL_TOTAL_R2 = 6  # Protocol 2: the root hands the second total to H_r2
    CMP_BITS = 7  # comparison: H_r2's DGK encryptions of its input bits
    CMP_BLINDED = 8  # comparison: H_r1's blinded, shuffled DGK ciphertexts
    CMP_SHARE_B = 9  # comparison: H_r2's XOR share of the result bit
    CMP_SHARE_A = 10  # comparison: H_r1's XOR share of the result bit
    KIND = 11  # Protocol 2: the market kind broadcast by H_r1
    PRICE_UP = 12  # Protocol 3: aggregate of (Enc_b(k_i), Enc_b(term_i))
    PRICE_TOTAL = 13  # Protocol 3: the root hands the aggregate to H_b
    PRICE = 14  # Protocol 3: p* broadcast by H_b (numerator, denominator)
    DIST_UP = 15  # Protocol 4: aggregate of Enc_s(|sn|) within the contributing coalition
    DIST_TOTAL = 16  # Protocol 4: Enc_s(E) broadcast down the same coalition
    DIST_RATIO = 17  # Protocol 4: Enc_s(E·q' + η), q' ≈ K / |sn| with noise, to the key holder
    DIST_RATIOS = 18  # Protocol 4: all E·q' + η, packed in one integer, broadcast


@dataclass(frozen=True)
class Message:
    """One protocol message between two agents."""

    topic: Topic
    window: int
    sender: int
    values: tuple[int, ...]


def _varint(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def encode(message: Message) -> bytes:
    """Serialise a message (see the module docstring for the layout)."""
    out = bytearray((VERSION, int(message.topic)))
    _varint(message.window, out)
    _varint(message.sender, out)
    _varint(len(message.values), out)
    for value in message.values:
        value = int(value)
        magnitude = -value if value < 0 else value
        raw = magnitude.to_bytes((magnitude.bit_length() + 7) // 8, "big")
        _varint(len(raw) << 1 | (value < 0), out)
        out += raw
    return bytes(out)


#: Refuse payloads larger than this many values or bytes per value (a peer's bad data).
MAX_VALUES = 1 << 20
MAX_VALUE_BYTES = 1 << 12


_TOPICS = {int(t): t for t in Topic}


def decode(data: bytes) -> Message:
    """Parse one message.

    Raises:
        RemoteProtocolError: wrong version, unknown topic, truncated or oversized fields.
    """
    view = memoryview(data)
    if len(view) < 2 or view[0] != VERSION:
        raise RemoteProtocolError("not a PEM message of a known version")
    topic = _TOPICS.get(view[1])
    if topic is None:
        raise RemoteProtocolError("unknown message topic")
    pos = 2

    def varint() -> int:
        nonlocal pos
        shift = result = 0
        while True:
            if pos >= len(view) or shift > 63:
                raise RemoteProtocolError("truncated or overlong varint")
            byte = view[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return result

    window, sender, count = varint(), varint(), varint()
    if count > MAX_VALUES:
        raise RemoteProtocolError("too many values in one message")
    values = []
    for _ in range(count):
        header = varint()
        size = header >> 1
        if size > MAX_VALUE_BYTES or pos + size > len(view):
            raise RemoteProtocolError("value truncated or too large")
        magnitude = int.from_bytes(view[pos : pos + size], "big")
        pos += size
        values.append(-magnitude if header & 1 else magnitude)
    if pos != len(view):
        raise RemoteProtocolError("trailing bytes after the message")
    return Message(topic, window, sender, tuple(values))
