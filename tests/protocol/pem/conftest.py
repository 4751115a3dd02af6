"""Keys for the private PEM tests, generated once per test session (never stored)."""

from __future__ import annotations

import random

import pytest

from sealgrid.protocol.pem import dgk
from sealgrid.protocol.pem import paillier as pa
from sealgrid.protocol.pem.harness import make_keys

Keys = list[tuple[pa.SecretKey, dgk.DgkSecretKey]]
_CACHE: dict[int, Keys] = {}


def keys_for(bits: int, count: int) -> Keys:
    """At least ``count`` key pairs of ``bits``, cached for the session."""
    have = _CACHE.setdefault(bits, [])
    rng = random.SystemRandom()
    while len(have) < count:
        have.append(make_keys(bits, rng))
    return have[:count]


class KeyCache:
    """The key cache a test is given (``keys.get(bits, count)``)."""

    get = staticmethod(keys_for)


@pytest.fixture(scope="session")
def keys() -> KeyCache:
    """The key cache (call ``keys.get(bits, count)``)."""
    return KeyCache()
