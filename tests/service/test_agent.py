"""The household agent's seams without a network: the market read from a signed MarketInfo,
the typed public outcome, the durable pseudonym store and the market's one rationing rule."""

from __future__ import annotations

import asyncio
import json
import stat
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.mechanism.bids import Side
from sealgrid.mechanism.grid import PriceGrid
from sealgrid.mechanism.market import Market
from sealgrid.protocol import field as F
from sealgrid.service import wire
from sealgrid.service.agent import (
    RECORD_VERSION,
    AgentError,
    PseudonymRecord,
    PseudonymStore,
    outcome_of,
    traded_from_output,
)
from sealgrid.service.client import Client, ServiceError, market_of
from sealgrid.service.config import ConfigError, load_server_config
from sealgrid.service.keys import Registry
from sealgrid.service.setup import init_data_dir
from sealgrid.service.wire import MarketInfo, Outcome, PriceGridInfo, RateLimit, WireError


def _info(party: int = 1, key: Ed25519PrivateKey | None = None, **changes: object) -> MarketInfo:
    info = MarketInfo(
        party=party, servers=3, signing_key=wire.raw_public(key) if key else b"",
        wire_version=1, now="2026-11-29T10:00:00Z", period_seconds=600,
        first_open_period="2026-11-29T10:40:00Z", max_payload_bytes=4096,
        rate_limit=RateLimit(5, 30), suppliers=("ecopower", "gridco"),
        price_grid=PriceGridInfo("0.04", "0.2", "0.001"), max_quantity_wh=7_500,
        min_accepted_per_side=1, stats={"accepted": 4, "rejected": 1},
    )  # fmt: skip
    for name, value in changes.items():
        info = dataclasses_replace(info, name, value)
    return wire.sign(info, key) if key else info


def dataclasses_replace(info: MarketInfo, name: str, value: Any) -> MarketInfo:
    import dataclasses

    return dataclasses.replace(info, **{name: value})


def test_market_info_round_trips_with_nested_objects_and_maps() -> None:
    info = _info(key=Ed25519PrivateKey.generate())
    raw = wire.encode(info)
    doc = json.loads(raw)
    assert doc["price_grid"] == {"ceiling": "0.2", "floor": "0.04", "tick": "0.001"}
    assert doc["rate_limit"] == {"requests": 5, "window_seconds": 30}
    assert doc["stats"] == {"accepted": 4, "rejected": 1}
    assert wire.decode(MarketInfo, raw) == info


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("stats", {"accepted": "4"}, "'stats' must be an integer"),
        ("stats", [1, 2], "'stats' must be an object"),
        ("price_grid", {"floor": "1", "ceiling": "2"}, "missing field 'tick'"),
        ("price_grid", {"floor": "1", "ceiling": "2", "tick": "1", "x": 1}, "unknown field 'x'"),
        ("rate_limit", "20", "'rate_limit' must be an object"),
    ],
)
def test_market_info_refuses_wrong_nested_values(field: str, value: object, fragment: str) -> None:
    doc = json.loads(wire.encode(_info()))
    doc[field] = value
    with pytest.raises(WireError, match=fragment):
        wire.decode(MarketInfo, wire.canonical_json(doc))


def test_outcome_carries_null_for_no_price_and_refuses_other_types() -> None:
    none = Outcome("no_trade")
    raw = wire.encode(none)
    assert json.loads(raw)["level"] is None and json.loads(raw)["price"] is None
    assert outcome_of(raw.decode()) == none and not none.traded
    traded = Outcome("cleared", level=7, price="0.047", invalid_bids=2)
    assert outcome_of(wire.encode(traded).decode()) == traded and traded.traded
    doc = json.loads(wire.encode(traded))
    doc["level"] = "7"
    with pytest.raises(AgentError, match="'level' must be an integer"):
        outcome_of(wire.canonical_json(doc).decode())
    assert outcome_of("") is None


def test_market_of_reads_every_rule_from_the_message() -> None:
    market = market_of(_info())
    assert market == Market(
        PriceGrid(Decimal("0.04"), Decimal("0.2"), Decimal("0.001")),
        max_quantity_wh=7_500,
        suppliers=("ecopower", "gridco"),
        period_seconds=600,
        min_accepted_per_side=1,
    )
    assert market.levels == 161


class _Canned(Client):
    """A client whose server 1 answers ``GET /v1/info`` with the given bytes."""

    def __init__(self, registry: Registry, body: bytes) -> None:
        super().__init__(registry, Path("unused-ca.crt"))
        self.body = body

    async def call(
        self, server: int, method: str, path: str, body: bytes | None = None
    ) -> tuple[int, bytes]:
        assert (server, method, path) == (1, "GET", "/v1/info")
        return 200, self.body


def _registry(server_key: Ed25519PrivateKey) -> Registry:
    keys = [Ed25519PrivateKey.generate(), server_key, Ed25519PrivateKey.generate()]
    return Registry(
        servers=tuple((f"https://127.0.0.1:{8440 + i}", wire.raw_public(k))
                      for i, k in enumerate(keys)),
        households={}, suppliers={}, operators={},
    )  # fmt: skip


def test_a_client_takes_the_market_only_from_the_servers_own_signature() -> None:
    key = Ed25519PrivateKey.generate()
    registry = _registry(key)
    good = wire.encode(_info(party=1, key=key))
    info, market = asyncio.run(_Canned(registry, good).market(1))
    assert info.stats == {"accepted": 4, "rejected": 1} and market.max_quantity_wh == 7_500
    other = Ed25519PrivateKey.generate()
    forged = [
        wire.encode(_info(party=1, key=other)),  # another key, naming itself
        wire.encode(dataclasses_replace(_info(party=1, key=key), "max_quantity_wh", 9_999)),
        wire.encode(_info(party=0, key=key)),  # says it is another server
        wire.encode(_info(party=1, key=key, servers=4)),  # another market size
        wire.encode(_info(party=1)),  # unsigned
    ]
    for body in forged:
        with pytest.raises(ServiceError, match="does not verify"):
            asyncio.run(_Canned(registry, body).market_info(1))
    respelled = json.dumps(json.loads(good), indent=1).encode()
    with pytest.raises(ServiceError, match="malformed"):
        asyncio.run(_Canned(registry, respelled).market_info(1))


def test_the_pseudonym_store_is_private_durable_and_says_what_is_missing(tmp_path) -> None:
    store = PseudonymStore.of(tmp_path, "h0007")
    key = Ed25519PrivateKey.generate()
    period = "2026-11-29T10:45:00Z"
    store.save(PseudonymRecord(period, key, Side.SELL, 2_500, {2: b"\x09" * 32}))
    path = tmp_path / "households" / "h0007.pseudonyms" / "2026-11-29T104500Z.json"
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    back = PseudonymStore.of(tmp_path, "h0007").load(period)
    assert back.side is Side.SELL and back.issuers == {2: b"\x09" * 32}
    assert back.quantity_wh == 2_500
    assert wire.raw_public(back.key) == wire.raw_public(key)
    assert back.pseudonym().public == wire.raw_public(key)
    with pytest.raises(AgentError, match="no bid for 2026-11-29T11:00:00Z on record"):
        store.load("2026-11-29T11:00:00Z")
    path.write_text("{}")
    with pytest.raises(AgentError, match="unreadable"):
        store.load(period)


def test_kept_files_carry_their_format_and_a_newer_one_is_refused_untouched(tmp_path) -> None:
    """A pseudonym record and a credential are written with their format version; one of
    the first format (no ``"v"``, as written before) still loads; one of a newer format is
    refused with a message that names it, and left as it was."""
    store = PseudonymStore.of(tmp_path, "h0007")
    period = "2026-11-29T10:45:00Z"
    store.save(PseudonymRecord(period, Ed25519PrivateKey.generate(), Side.BUY, 1_000))
    path = store.path(period)
    data = json.loads(path.read_text())
    assert data["v"] == RECORD_VERSION
    del data["v"]  # as the first format wrote it
    path.write_text(json.dumps(data))
    assert store.load(period).quantity_wh == 1_000
    newer = json.dumps({**data, "v": RECORD_VERSION + 1})
    path.write_text(newer)
    with pytest.raises(AgentError, match=f"format {RECORD_VERSION + 1}, written by a newer"):
        store.load(period)
    assert path.read_text() == newer
    kept = store.credential(3)
    cred = json.loads(store.credential_path.read_text())
    assert cred["v"] == RECORD_VERSION
    del cred["v"]
    store.credential_path.write_text(json.dumps(cred))
    assert store.credential(3).kappa == kept.kappa
    store.credential_path.write_text(json.dumps({**cred, "v": RECORD_VERSION + 1}))
    with pytest.raises(AgentError, match="credential is of format"):
        store.credential(3)


def _field(numerator: int, denominator: int) -> int:
    return numerator * pow(denominator, F.MODULUS - 2, F.MODULUS) % F.MODULUS


def test_a_households_amount_follows_the_one_rationing_rule() -> None:
    # buyers long: D = 1200, S = V = 900; a buyer's 400 Wh trades 400·900/1200 = 300 Wh
    assert traded_from_output(_field(400 * 900, 1200), 400) == Fraction(300)
    assert traded_from_output(500, 500) == Fraction(500)  # the short side: ratio 1
    assert traded_from_output(0, 400) == 0  # not accepted
    # V = 1000, S = 3000: a seller's 7 Wh trades 7/3 Wh (a ratio in lowest terms is enough)
    assert traded_from_output(_field(7 * 1000, 3000), 7) == Fraction(7, 3)
    # D(k*) near the limit of the exact reconstruction (2^31 Wh a side)
    big = 2**31 - 1
    assert traded_from_output(_field(10_000 * 1_234_567, big), 10_000) == Fraction(
        10_000 * 1_234_567, big)


@pytest.mark.parametrize("output, accepted", [
    (F.MODULUS - 5, 400),  # not a small ratio: a server lied, or shares were mixed up
    (800, 400),  # a ratio above 1: more than the household bid
])
def test_an_output_that_is_no_rationed_amount_is_refused(output: int, accepted: int) -> None:
    with pytest.raises(AgentError, match="not a rationed amount"):
        traded_from_output(output, accepted)


def test_the_market_table_keeps_intake_limits_apart_and_names_bad_keys(tmp_path) -> None:
    init_data_dir(tmp_path / "d", households=1, base_port=40100,
                  extra_config={"market": {"rate_limit": 7, "max_quantity_wh": 5_000}})
    cfg = load_server_config(tmp_path / "d" / "server-0" / "server.toml")
    assert cfg.market.limits.rate_limit == 7 and cfg.market.max_quantity_wh == 5_000
    assert cfg.market.market(("s1",)).max_quantity_wh == 5_000
    toml = tmp_path / "d" / "server-0" / "server.toml"
    text = toml.read_text()
    toml.write_text(text.replace("[market]\n", "[market]\nprice_flor = \"1\"\n"))
    with pytest.raises(ConfigError, match="price_flor"):
        load_server_config(toml)
    assert cfg.market.market(("s1",)).min_accepted_per_side == 3  # the running market's rule
    toml.write_text(text.replace("[market]\n", "[market]\nmin_accepted_per_side = 0\n"))
    with pytest.raises(ConfigError, match="min_accepted_per_side must be at least 1"):
        load_server_config(toml)
