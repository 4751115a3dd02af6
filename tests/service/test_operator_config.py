"""A broken server TOML file: ``sealgrid serve --config F`` says in one line what and where."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealgrid.cli import main
from sealgrid.service.config import load_server_config

GOOD = """\
party = 1
servers = ["https://127.0.0.1:8440", "https://127.0.0.1:8441", "https://127.0.0.1:8442"]
listen = "127.0.0.1:8441"
registry = "registry.json"
ca = "servers.pem"
tls_cert = "server-1/tls.crt"
tls_key = "server-1/tls.key"
signing_key = "server-1/signing.key"

[market]
period_seconds = 900
price_floor = "80"

[mpc]
base_port = 11365
"""


@pytest.fixture(autouse=True)
def _root_logging() -> Iterator[None]:
    """``serve`` configures the root logger before it reads its file: put it back."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = saved


def _serve(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``sealgrid serve`` on ``text``; want exit 1 and return its one stderr line."""
    path = tmp_path / "server.toml"
    path.write_text(text)
    assert main(["serve", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"sealgrid: error: {path.resolve()}: "), lines[0]
    return lines[0].removeprefix(f"sealgrid: error: {path.resolve()}: ")


def test_the_good_file_loads(tmp_path: Path) -> None:
    """The control: the file the broken ones are made from is read as written."""
    path = tmp_path / "server.toml"
    path.write_text(GOOD)
    cfg = load_server_config(path)
    assert (cfg.party, cfg.listen_port, cfg.mpc_base_port) == (1, 8441, 11365)
    assert cfg.signing_key == tmp_path.resolve() / "server-1" / "signing.key"
    assert cfg.database == f"sqlite:///{tmp_path.resolve() / 'bids.sqlite'}"
    assert str(cfg.market.grid.floor) == "80"


@pytest.mark.parametrize(
    "old, new, said",
    [
        ('servers = ["https://127.0.0.1:8440", "https://127.0.0.1:8441", '
         '"https://127.0.0.1:8442"]\n', "",
         "servers is missing (every computation server's URL, in party order)"),
        ('tls_key = "server-1/tls.key"\n', "",
         "tls_key is missing (the path of this server's TLS key)"),
        ("party = 1", 'party = "1"',
         "party must be a whole number (this server's index into servers, from 0), not '1'"),
        ("party = 1", "party = 3",
         "party 3 is not an index into servers (0 … 2: one URL per server)"),
        ('servers = ["https', 'servers = ["ftp',
         "servers must be a list of every computation server's URL"),
        ('listen = "127.0.0.1:8441"', "listen = 8441",
         'listen must be "host:port" with a port of 0 … 65535, not 8441'),
        ('ca = "servers.pem"', "ca = 1", "ca must be a path written as a string"),
        ('price_floor = "80"', "price_floor = true",
         'market.price_floor must be a decimal number, e.g. "80.5", not True'),
        ('price_floor = "80"', 'price_floor = "eighty"',
         "market.price_floor must be a decimal number"),
        ('price_floor = "80"', 'price_floor = "130"',
         "[market] price grid: the price ceiling must not be below the floor"),
        ("period_seconds = 900", 'period_seconds = "900"',
         "market.period_seconds must be a whole number of at least 1, not '900'"),
        ("period_seconds = 900", "period_seconds = 900\npeer_timeout_seconds = 0",
         "market.peer_timeout_seconds must be a number of seconds above 0, not 0"),
        ("period_seconds = 900", "period_seconds = 900\nrate_limit = 2.5",
         "market.rate_limit must be a whole number of at least 1, not 2.5"),
        ("period_seconds = 900", "period_seconds = 900\nhorizon_periods = 2",
         "market.horizon_periods must be above 2"),
        ("period_seconds = 900", "period_seconds = 900\nmin_accepted_per_side = 0",
         "market.min_accepted_per_side must be at least 1"),
        ("period_seconds = 900", "period_seconds = 900\nperiod = 60",
         "[market]: unknown key 'period' (known: period_seconds,"),
        ("[market]\nperiod_seconds = 900", "market = 900", "[market] must be a table"),
        ("base_port = 11365", 'base_port = "11365"',
         "mpc.base_port must be a port number of 1 … 65471"),
        ("[mpc]", "[billing]\ncycle_periods = 0\n[mpc]",
         "billing.cycle_periods must be a whole number of at least 1, not 0"),
        ("[mpc]", "[connections]\nmax_connections = -1\n[mpc]",
         "connections.max_connections must be a whole number of at least 1, not -1"),
        ("listen = ", "listen ", "not valid TOML at line 3, column 8: Expected '='"),
        ("base_port = 11365\n", "base_port = [11365,\n", "not valid TOML at the end of the file"),
    ],
)  # fmt: skip
def test_a_broken_file_is_one_line_naming_the_key_and_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], old: str, new: str, said: str
) -> None:
    assert old in GOOD
    line = _serve(tmp_path, GOOD.replace(old, new, 1), capsys)
    assert line.startswith(said), line


def test_a_missing_or_unreadable_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["serve", "--config", str(tmp_path / "none.toml")]) == 1
    assert capsys.readouterr().err == (
        f"sealgrid: error: {tmp_path.resolve() / 'none.toml'}: no such file\n")
    (tmp_path / "latin1.toml").write_bytes(b'party = 0\n# caf\xe9\n')
    assert main(["serve", "--config", str(tmp_path / "latin1.toml")]) == 1
    assert capsys.readouterr().err.endswith("latin1.toml: not a UTF-8 text file (TOML is UTF-8)\n")
