"""Secure clearing with three real server processes over mutual TLS (MPyC --ssl)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sealgrid.mechanism.bids import Reason
from sealgrid.protocol.certs import make_party_certificates
from sealgrid.protocol.clearing import SecureClearingError, run_processes, secure_clear
from sealgrid.protocol.encoding import Layout, write_book_shares

from .secure_helpers import assert_equal_on, book, cheat, random_book
from .test_secure_clearing import HONEST, LEVELS, SLOT, two_levels

pytestmark = pytest.mark.slow


def test_random_book_over_tls_equals_the_reference(tmp_path: Path) -> None:
    b = random_book(np.random.default_rng(42), 300, 16, 3)
    result = secure_clear(b, 16, data_dir=tmp_path, timeout=60)
    assert_equal_on(result.clearing, b, 16, np.ones(len(b), dtype=bool))
    assert all(n > 0 for n in result.stats.bytes_per_party)
    assert result.stats.online_seconds > 0
    for i in range(3):  # each server's directory holds only its own key
        keys = sorted(p.name for p in (tmp_path / f"party{i}" / ".config").glob("*.key"))
        assert keys == [f"party_{i}.key"]


def test_edge_books_and_a_cheater_over_tls(tmp_path: Path) -> None:
    ties = book([True, False, True, False], [300, 300, 100, 100], [2, 2, 3, 1])
    result = secure_clear(ties, 5, data_dir=tmp_path / "ties", timeout=60)
    assert_equal_on(result.clearing, ties, 5, np.ones(4, dtype=bool))
    no_trade = book([True, False], [10, 10], [0, 3])
    result = secure_clear(no_trade, 4, data_dir=tmp_path / "none", timeout=60)
    assert result.clearing.level is None
    result = secure_clear(HONEST, LEVELS, data_dir=tmp_path / "cheat", timeout=60,
                          tamper=cheat(Layout(LEVELS, 2, 10_000), SLOT, two_levels))
    assert result.stats.rejected == {SLOT: Reason.INVALID_SHARES}
    honest = np.ones(len(HONEST), dtype=bool)
    honest[SLOT] = False
    assert_equal_on(result.clearing, HONEST, LEVELS, honest)


def _two_bid_servers(tmp_path: Path) -> list[Path]:
    """Three server directories holding their shares of a two-bid book and their certificates."""
    dirs = [tmp_path / f"party{i}" for i in range(3)]
    for d in dirs:
        d.mkdir()
    b = book([True, False], [10, 10], [1, 0])
    write_book_shares(b, Layout(2, 2, 10_000), [d / "shares.bin" for d in dirs])
    make_party_certificates(dirs)
    return dirs


def test_a_server_with_a_foreign_certificate_cannot_join(tmp_path: Path) -> None:
    """Only authenticated peers connect: a certificate from another CA fails cleanly."""
    dirs = _two_bid_servers(tmp_path)
    make_party_certificates([tmp_path / f"other{i}" for i in range(3)])  # another CA
    for name in ("party_2.crt", "party_2.key"):
        (tmp_path / "other2" / ".config" / name).replace(dirs[2] / ".config" / name)
    with pytest.raises(SecureClearingError):
        run_processes(dirs, timeout=4)


def test_a_dead_server_makes_a_clean_error_not_a_hang(tmp_path: Path) -> None:
    """Server 1 cannot read its shares and exits; the others give up after the timeout."""
    dirs = _two_bid_servers(tmp_path)
    (dirs[1] / "shares.bin").write_bytes(b"not a share batch")
    with pytest.raises(SecureClearingError, match="server"):
        run_processes(dirs, timeout=4)


def test_parties_of_another_run_on_the_same_ports_never_link(tmp_path: Path) -> None:
    """A period's segments and its gate use the same MPC ports: a party of one run that
    reaches a party of another (its port taken over, or a party left over) is refused at the
    link, by the run's name in TLS (ALPN), rather than joining a computation not its own."""
    dirs = _two_bid_servers(tmp_path)
    with pytest.raises(SecureClearingError, match="a party of another run answers"):
        run_processes(dirs, timeout=4, sessions=["P/segment-0", "P/segment-0", "P/gate"])
    assert not (dirs[2] / "result.json").exists()
    # a listening party refuses links that name no run by itself (those naming none do not
    # check what they reach)
    with pytest.raises(SecureClearingError):
        run_processes(dirs, timeout=4, sessions=[None, None, "P/gate"])
    assert not (dirs[2] / "result.json").exists()
    # the same three in one run clear (the names alone made the difference)
    results = run_processes(dirs, timeout=30, sessions=["P/gate"] * 3)
    assert [r.public for r in results] == [results[0].public] * 3
