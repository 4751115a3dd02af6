"""Threat: eavesdropping on every link (mustafa2016 §IV); assumes root (a raw socket on ``lo``).

A whole period of three real servers — issuance, bids, agreement, the MPyC clearing, output
requests — is captured on loopback (the market's own ports only) and searched for anything
that would betray a bid: share payloads, their base64 text, the plaintext bid vectors, message
names and household ids. Target: no hit. A plaintext canary sent during the capture must be
found, and the same search must find a plaintext submission: the capture is not blind.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.chaos.capture import Capture, capture_period, hits, needles

pytestmark = pytest.mark.slow


def test_the_search_finds_a_plaintext_bid() -> None:
    from sealgrid.protocol.encoding import Layout, encode_bid
    from sealgrid.service.household import Pseudonym, make_submission

    payload = encode_bid(True, 1234, 3, 0, Layout(6, 2, 10_000))[0].to_bytes()
    raw = make_submission(Pseudonym.fresh("2026-11-22T21:45:00Z"), 0, payload)
    cap = Capture(frozenset({1}))
    cap.segments[(1, 2)] = {0: raw[:100], 100: raw[100:]}
    row = np.zeros(8, dtype=np.uint64)
    row[2] = 1234
    assert len(hits(cap, needles([payload], [row], ["h0001"]))) >= 2


def test_a_captured_period_holds_no_bid_value(tmp_path: Path) -> None:
    got: dict[str, Any] = asyncio.run(capture_period(tmp_path / "d", seed=5, households=4))
    print(got)
    assert got["canary_hits"] >= 1, "the capture saw nothing"
    assert got["packets"] > 100 and got["receipts"] == 12
    assert got["status"] == ["cleared"] * 3
    assert got["hits"] == 0, got["found"]
