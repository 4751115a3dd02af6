"""``sealgrid bench tls``: the HTTP stack's floor, measured on real TLS connections to a child
server process (both listeners), with nothing left running afterwards."""

from __future__ import annotations

import json

import pytest

from sealgrid.cli import main
from sealgrid.service import eventloop


def _floor_servers() -> list[int]:
    import os

    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    if b"sealgrid.service.floor" in f.read():
                        found.append(int(name))
            except OSError:
                continue
    return found


def test_bench_tls_measures_both_listeners(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "tls", "--requests", "120", "--concurrency", "8",
                 "--body-bytes", "700", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert (got["target"], got["requests"], got["concurrency"], got["body_bytes"]) == (
        "tls", 120, 8, 700)
    for listener in ("aiohttp", "guarded"):
        # a handshake and a request cost the server something, and far less than a second
        assert 0 < got["server_cpu_ms_per_request"][listener] < 1000, got
        assert got["requests_per_second"][listener] > 0, got
    assert got["event_loop"] == eventloop.loop_name()  # the servers' own loop
    # the cryptography under it, in process: a TLS 1.3 handshake costs each side something,
    # and less than the whole connection and request cost the server
    for side in ("server", "client"):
        assert 0 < got["tls_handshake_cpu_ms"][side] < 1000, got
    assert got["tls_handshake_cpu_ms"]["server"] < max(got["server_cpu_ms_per_request"].values())
    assert set(got["bid_crypto_cpu_ms"]) == {"signature_check", "token_check",
                                             "receipt_signature"}
    assert all(0 < ms < 1000 for ms in got["bid_crypto_cpu_ms"].values()), got
    assert _floor_servers() == []  # the child servers ended with the run


def test_bench_tls_refuses_no_requests() -> None:
    with pytest.raises(SystemExit):
        main(["bench", "tls", "--requests", "0", "--json"])
