"""Roles and set-up for billing: households' suppliers and regions, smart meters' keys, one DSO
per region and the TSO in the registry, tariffs and billing cycles in every server's TOML, and
the cycle arithmetic (SPEC §1, §7)."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import stat
from fractions import Fraction
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from sealgrid.cli import main
from sealgrid.mechanism.settlement import Tariff
from sealgrid.service.config import (
    DEFAULT_TARIFF,
    BillingConfig,
    ConfigError,
    decimal_text,
    load_server_config,
)
from sealgrid.service.contracts import (
    Assignment,
    ContractsError,
    read_households_csv,
    round_robin,
)
from sealgrid.service.keys import (
    DEFAULT_REGIONS,
    DEFAULT_SUPPLIERS,
    Contract,
    DataDirError,
    Registry,
    household_profile,
    load_signing_key,
    meter_key_path,
    private_key_path,
)
from sealgrid.service.schedule import (
    BillingCalendar,
    Schedule,
    default_cycle_periods,
    iso,
    parse_time,
)
from sealgrid.service.setup import (
    KeygenError,
    PublicPart,
    build_registry,
    init_data_dir,
    install_server,
    keygen,
    load_parts,
)
from sealgrid.service.wire import raw_public

F = Fraction


def _csv(tmp_path: Path, text: str, name: str = "households.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ------------------------------------------------------------------ households.csv


def test_a_households_file_is_read_in_order(tmp_path: Path) -> None:
    path = _csv(tmp_path, "region, household ,supplier\nnorth,alice,green\n\nsouth,bob,grey\n")
    assert read_households_csv(path) == [
        Assignment("alice", "green", "north"),
        Assignment("bob", "grey", "south"),
    ]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", ["households.csv line 1: missing_header"]),
        ("alice,green,north\n", ["households.csv line 1: missing_header: the header must be "
                                 "household,supplier,region (found 'alice,green,north')"]),
        ("household,supplier,region,tariff\nh1,s1,r1,x\n",
         ["households.csv line 1: unknown_column: 'tariff'"]),
        ("household,supplier\nh1,s1\n", ["households.csv line 1: missing_column: 'region'"]),
        ("household,supplier,region,region\n", ["line 1: duplicate_column: 'region'"]),
        ("household,supplier,region\nh1,s1,r1\nh2,,r1\n",
         ["households.csv line 3: empty_field: supplier must not be empty"]),
        ("household,supplier,region\nh1,s1\n",
         ["households.csv line 2: empty_field: region must not be empty"]),
        ("household,supplier,region\nh1,s1,r1,extra\n", ["households.csv line 2: extra_field"]),
        ("household,supplier,region\nh1,s1,r1\nh1,s2,r2\n",
         ["households.csv line 3: duplicate_household: 'h1' is already on line 2"]),
        ("household,supplier,region\n../h1,s1,r1\n", ["households.csv line 2: bad_id: id '../h1'"]),
        ("household,supplier,region\nh1,s 1,r1\n", ["households.csv line 2: bad_id: id 's 1'"]),
        ("household,supplier,region\nh1,s1,r/1\n", ["households.csv line 2: bad_id: id 'r/1'"]),
        ("household,supplier,region\nh1.meter,s1,r1\n",
         ["households.csv line 2: bad_id: household id 'h1.meter' must not end with '.meter'"]),
        ("household,supplier,region\n\n", ["no_households"]),
        # every broken row is named, not only the first
        ("household,supplier,region\nh1,,r1\nh2,s1,r1\nh3,s1,\n",
         ["line 2: empty_field", "line 4: empty_field"]),
    ],
)  # fmt: skip
def test_a_bad_households_file_names_the_line_and_the_rule(
    tmp_path: Path, text: str, expected: list[str]
) -> None:
    with pytest.raises(ContractsError) as caught:
        read_households_csv(_csv(tmp_path, text))
    assert len(caught.value.lines) == len(expected), caught.value.lines
    for line, fragment in zip(caught.value.lines, expected, strict=True):
        assert fragment in line, (line, fragment)


def test_an_unreadable_households_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ContractsError, match="no such file"):
        read_households_csv(tmp_path / "missing.csv")
    (tmp_path / "bin.csv").write_bytes(b"household,supplier,region\n\xff\xfe,s,r\n")
    with pytest.raises(ContractsError, match="not a UTF-8"):
        read_households_csv(tmp_path / "bin.csv")


def test_round_robin_over_the_default_suppliers_and_regions() -> None:
    got = round_robin(7)
    assert [a.household for a in got] == [f"h000{i}" for i in range(1, 8)]
    assert [a.supplier for a in got] == ["s1", "s2", "s3", "s1", "s2", "s3", "s1"]
    assert [a.region for a in got] == ["r1", "r2", "r1", "r2", "r1", "r2", "r1"]
    assert DEFAULT_SUPPLIERS == ("s1", "s2", "s3") and DEFAULT_REGIONS == ("r1", "r2")
    # 3 suppliers and 2 regions: every pair once in six households
    assert len({(a.supplier, a.region) for a in got[:6]}) == 6
    assert round_robin(0) == []
    with pytest.raises(ValueError):
        round_robin(2, regions=())


# ------------------------------------------------------------------ init: the data directory


def _secrets(private_file: Path) -> list[bytes]:
    key = serialization.load_pem_private_key(private_file.read_bytes(), password=None)
    if isinstance(key, Ed25519PrivateKey):
        raw = key.private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )  # fmt: skip
    else:
        raw = key.private_numbers().private_value.to_bytes(32, "big")  # type: ignore[union-attr]
    return [raw, raw.hex().encode(), base64.b64encode(raw), base64.urlsafe_b64encode(raw)[:40]]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Registry]:
    data = tmp_path_factory.mktemp("init") / "data"
    return data, init_data_dir(data, households=5, base_port=19500, period_seconds=900)


def test_init_registers_contracts_meters_one_dso_per_region_and_the_tso(
    made: tuple[Path, Registry],
) -> None:
    data, registry = made
    assert Registry.load(data / "registry.json") == registry
    assert sorted(registry.households) == [f"h000{i}" for i in range(1, 6)]
    assert set(registry.contracts) == set(registry.households)
    for a in round_robin(5):
        contract = registry.contract(a.household)
        assert (contract.supplier, contract.region) == (a.supplier, a.region)
        meter = load_signing_key(meter_key_path(data, a.household))
        assert contract.meter_key == raw_public(meter)
        assert contract.meter_key != registry.households[a.household]
        profile = household_profile(data, a.household)
        assert (profile["supplier"], profile["region"]) == (a.supplier, a.region)
    assert registry.regions == ("r1", "r2") and sorted(registry.dsos) == ["r1", "r2"]
    for region in ("r1", "r2"):
        key = load_signing_key(private_key_path(data, "dso", region))
        assert registry.dsos[region] == raw_public(key)
        assert (data / "dsos" / f"{region}.json").exists()
    assert registry.tso == raw_public(load_signing_key(private_key_path(data, "tso", "tso")))
    assert registry.customers("s1") == ["h0001", "h0004"]
    assert registry.households_in("r2") == ["h0002", "h0004"]
    assert list(registry.operators) == ["dso"]  # the period volume's reader, as before


def test_init_writes_every_private_key_0600_only_where_its_owner_keeps_it(
    made: tuple[Path, Registry],
) -> None:
    data, _ = made
    expected = {
        *(f"server-{i}/{name}" for i in range(3)
          for name in ("signing.key", "tls.key", f".config/party_{i}.key")),
        *(f"households/h000{i}.key" for i in range(1, 6)),
        *(f"households/h000{i}.meter.key" for i in range(1, 6)),
        *(f"suppliers/{s}.key" for s in DEFAULT_SUPPLIERS),
        "operators/dso.key", "dsos/r1.key", "dsos/r2.key", "tso/tso.key",
    }  # fmt: skip
    files = {p: p.read_bytes() for p in sorted(data.rglob("*")) if p.is_file()}
    private = {p for p, d in files.items() if b"PRIVATE KEY" in d}
    assert {str(p.relative_to(data)) for p in private} == expected
    for path in private:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        for secret in _secrets(path):
            leaks = [p for p, d in files.items() if p != path and secret in d]
            assert not leaks, f"{path}'s key in {leaks}"
    meters = {p for p in private if p.name.endswith(".meter.key")}
    assert meters and all(p.parent == data / "households" for p in meters)


def test_init_writes_the_billing_table_into_every_servers_toml(
    made: tuple[Path, Registry],
) -> None:
    data, registry = made
    for i in range(3):
        cfg = load_server_config(data / f"server-{i}" / "server.toml")
        assert cfg.billing == BillingConfig.default(900, registry.suppliers)
        assert cfg.billing.tariffs == {s: DEFAULT_TARIFF for s in DEFAULT_SUPPLIERS}
        assert cfg.billing.cycle_periods == 2880 and cfg.billing.reading_grace_periods == 4
        assert cfg.calendar == BillingCalendar(900, 2880, 4)
    assert Tariff(F(120), F(80), F(5)) == DEFAULT_TARIFF


def test_init_from_a_households_file_with_tariffs_and_a_cycle(tmp_path: Path) -> None:
    csv_path = _csv(tmp_path, "household,supplier,region\nana,green,north\nbo,grey,south\n"
                              "cy,green,south\n")  # fmt: skip
    tariffs = {"green": Tariff(F("30.5"), F("8.25"), F("4.125")),
               "grey": Tariff(F(31), F(7), F("0.001"))}  # fmt: skip
    registry = init_data_dir(
        tmp_path / "d", contracts=read_households_csv(csv_path), tariffs=tariffs,
        cycle_periods=96, reading_grace_periods=2, base_port=19600, period_seconds=600,
    )  # fmt: skip
    assert sorted(registry.suppliers) == ["green", "grey"]
    assert registry.regions == ("north", "south") and sorted(registry.dsos) == ["north", "south"]
    assert registry.contract("cy") == Contract("green", "south", registry.contracts["cy"].meter_key)
    cfg = load_server_config(tmp_path / "d" / "server-1" / "server.toml")
    assert cfg.billing == BillingConfig(tariffs, 96, 2)
    assert cfg.billing.tariffs["green"].network_fee == F(33, 8)  # exact, not a float


def test_init_refuses_tariffs_that_miss_a_supplier_before_making_any_key(tmp_path: Path) -> None:
    with pytest.raises(DataDirError, match=r"no tariff for supplier.*s3"):
        init_data_dir(tmp_path / "d", households=3, base_port=19700,
                      tariffs={"s1": DEFAULT_TARIFF, "s2": DEFAULT_TARIFF})  # fmt: skip
    with pytest.raises(DataDirError, match="not registered"):
        init_data_dir(tmp_path / "d", households=3, base_port=19700,
                      tariffs={s: DEFAULT_TARIFF for s in ("s1", "s2", "s3", "s9")})  # fmt: skip
    with pytest.raises(DataDirError, match="cycle_periods"):
        init_data_dir(tmp_path / "d", households=3, base_port=19700, cycle_periods=0)
    assert not any((tmp_path / "d").rglob("*.key"))


# ------------------------------------------------------------------ the registry


def test_household_index_is_one_based_in_sorted_order_and_inverts(
    made: tuple[Path, Registry],
) -> None:
    _, registry = made
    names = sorted(registry.households)
    assert [registry.household_index(h) for h in names] == list(range(1, len(names) + 1))
    assert [registry.household_at(i) for i in range(1, len(names) + 1)] == names
    with pytest.raises(KeyError, match="no household 'nobody'"):
        registry.household_index("nobody")
    for bad in (0, len(names) + 1, -1):
        with pytest.raises(IndexError):
            registry.household_at(bad)
    shuffled = Registry(registry.servers, dict(reversed(list(registry.households.items()))),
                        registry.suppliers, registry.operators)  # fmt: skip
    assert shuffled.household_index("h0003") == 3  # the order of the ids, not of the dict


def test_registry_round_trips_contracts_dsos_and_the_tso(
    made: tuple[Path, Registry], tmp_path: Path
) -> None:
    _, registry = made
    text = registry.to_json()
    (tmp_path / "registry.json").write_text(text)
    again = Registry.load(tmp_path / "registry.json")
    assert again == registry and again.to_json() == text
    assert (again.contracts, again.dsos, again.tso) == (
        registry.contracts, registry.dsos, registry.tso
    )
    data = json.loads(text)
    assert set(data["contracts"]["h0001"]) == {"supplier", "region", "meter_key"}
    assert sorted(data["dsos"]) == ["r1", "r2"] and isinstance(data["tso"], str)
    assert base64.b64decode(data["contracts"]["h0001"]["meter_key"]) == (
        registry.contracts["h0001"].meter_key
    )


def test_registry_without_contracts_from_before_regions_still_loads(
    made: tuple[Path, Registry], tmp_path: Path
) -> None:
    data, registry = made
    old = json.loads((data / "registry.json").read_text())
    for key in ("contracts", "dsos", "tso"):
        del old[key]
    (tmp_path / "old.json").write_text(json.dumps(old))
    loaded = Registry.load(tmp_path / "old.json")
    assert loaded.households == registry.households and loaded.servers == registry.servers
    assert (loaded.contracts, loaded.dsos, loaded.tso, loaded.regions) == ({}, {}, None, ())
    assert loaded.household_index("h0002") == 2
    # and written again, it stays without them
    assert "contracts" not in json.loads(loaded.to_json())
    # a registry whose contracts and households differ is refused
    broken = json.loads((data / "registry.json").read_text())
    del broken["contracts"]["h0001"]
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(DataDirError, match="households and contracts differ"):
        Registry.load(tmp_path / "broken.json")
    broken["contracts"]["h0001"] = {"supplier": "s1", "region": "r1", "meter_key": "AAAA"}
    (tmp_path / "broken.json").write_text(json.dumps(broken))
    with pytest.raises(DataDirError, match="meter key is 32 bytes"):
        Registry.load(tmp_path / "broken.json")


def _parts(tmp_path: Path) -> dict[tuple[str, str], PublicPart]:
    made = [
        *(keygen("server", str(i), tmp_path / f"s{i}", url=f"https://127.0.0.1:{19800 + i}")
          for i in range(3)),
        keygen("household", "ana", tmp_path / "ana", supplier="green", region="north"),
        keygen("household", "bo", tmp_path / "bo", supplier="green", region="south"),
        keygen("supplier", "green", tmp_path / "green"),
        keygen("dso", "north", tmp_path / "north"),
        keygen("dso", "south", tmp_path / "south"),
        keygen("tso", "tso", tmp_path / "tso"),
    ]  # fmt: skip
    return {(m.part.role, m.part.id): m.part for m in made}


def test_registry_build_checks_dsos_regions_and_meter_keys(tmp_path: Path) -> None:
    parts = _parts(tmp_path)

    def without(*keys: tuple[str, str]) -> list[PublicPart]:
        return [p for k, p in parts.items() if k not in keys]

    full = build_registry(parts.values())
    assert sorted(full.dsos) == ["north", "south"] and full.tso is not None
    # no DSO at all: allowed (the regions are still the households')
    bare = build_registry(without(("dso", "north"), ("dso", "south"), ("tso", "tso")))
    assert (bare.dsos, bare.tso, bare.regions) == ({}, None, ("north", "south"))
    # some DSOs given: every household's region needs one
    with pytest.raises(KeygenError, match="household 'bo': region 'south' has no DSO"):
        build_registry(without(("dso", "south")))
    # a DSO whose region has no household is allowed
    extra = keygen("dso", "east", tmp_path / "east").part
    assert build_registry([*parts.values(), extra]).regions == ("east", "north", "south")
    # one meter key for two households is refused
    import dataclasses as dc

    ana = parts[("household", "ana")]
    ana_key = load_signing_key(tmp_path / "ana" / "ana.key")
    ana_meter = load_signing_key(tmp_path / "ana" / "ana.meter.key")
    bo_key = load_signing_key(tmp_path / "bo" / "bo.key")
    twin = dc.replace(parts[("household", "bo")], meter_key=ana.meter_key).signed(
        bo_key, ana_meter
    )
    with pytest.raises(KeygenError, match="reuses a key"):
        build_registry([*without(("household", "bo")), twin])
    # a meter key that is the household's own key is refused
    same = dc.replace(ana, meter_key=ana.key).signed(ana_key, ana_key)
    with pytest.raises(KeygenError, match="must not be the household's own"):
        build_registry([*without(("household", "ana")), same])
    # a household part without region or meter (made before them) is refused, clearly
    old = PublicPart("household", "old", bo_key.public_key().public_bytes_raw(),
                     supplier="green").signed(bo_key)  # fmt: skip
    with pytest.raises(KeygenError, match="no region"):
        old.check()
    # a TSO is a single party with the id 'tso'
    with pytest.raises(KeygenError, match="two public parts for tso"):
        build_registry([*parts.values(), keygen("tso", "tso", tmp_path / "tso2").part])


def test_public_parts_round_trip_with_region_and_meter_key(tmp_path: Path) -> None:
    made = keygen("household", "ana", tmp_path / "ana", supplier="green", region="north")
    part = PublicPart.from_json(made.public.read_text())
    assert part == made.part and part.region == "north" and len(part.meter_key) == 32
    part.check()
    assert load_parts([tmp_path / "ana"]) == [part]
    meter = tmp_path / "ana" / "ana.meter.key"
    assert stat.S_IMODE(meter.stat().st_mode) == 0o600
    assert raw_public(load_signing_key(meter)) == part.meter_key
    assert b"PRIVATE" not in made.public.read_bytes()


def test_install_refuses_tariffs_that_do_not_match_the_registry(tmp_path: Path) -> None:
    parts = _parts(tmp_path)
    registry = build_registry(parts.values())
    (tmp_path / "reg").mkdir()
    (tmp_path / "reg" / "registry.json").write_text(registry.to_json())
    (tmp_path / "reg" / "servers.pem").write_text(registry.trust_pem())
    reg = tmp_path / "reg" / "registry.json"
    with pytest.raises(KeygenError, match=r"no tariff for supplier.*green"):
        install_server(tmp_path / "s0", reg, billing=BillingConfig.default())
    toml = install_server(tmp_path / "s0", reg, period_seconds=60)  # default: one per supplier
    cfg = load_server_config(toml)
    assert cfg.billing.tariffs == {"green": DEFAULT_TARIFF}
    assert cfg.billing.cycle_periods == 30 * 24 * 60


# ------------------------------------------------------------------ [billing] in the TOML


def _toml(tmp_path: Path, made: tuple[Path, Registry], billing: str) -> Path:
    data, _ = made
    text = (data / "server-0" / "server.toml").read_text()
    head = text[: text.index("[billing]")]
    path = tmp_path / "server.toml"
    path.write_text(head + billing)
    return path


def test_billing_table_round_trips_exactly(tmp_path: Path, made: tuple[Path, Registry]) -> None:
    config = BillingConfig(
        {"a.b": Tariff(F("0.123"), F("0.05"), F(0)), "s1": Tariff(F(1000), F(999), F("1.5"))},
        cycle_periods=7,
        reading_grace_periods=1,
    )
    cfg = load_server_config(_toml(tmp_path, made, config.toml()))
    assert cfg.billing == config
    assert cfg.calendar == BillingCalendar(900, 7, 1)
    assert decimal_text(F(1, 20)) == "0.05" and decimal_text(F(120)) == "120"
    assert decimal_text(F(-3, 8)) == "-0.375"
    with pytest.raises(ValueError, match="no finite decimal"):
        decimal_text(F(1, 3))


def test_an_old_toml_without_billing_gets_the_defaults(
    tmp_path: Path, made: tuple[Path, Registry]
) -> None:
    cfg = load_server_config(_toml(tmp_path, made, ""))
    assert cfg.billing == BillingConfig.default(900)
    assert cfg.billing == BillingConfig()
    partial = load_server_config(_toml(tmp_path, made, "[billing]\nreading_grace_periods = 9\n"))
    assert partial.billing == BillingConfig(reading_grace_periods=9)


@pytest.mark.parametrize(
    "billing, fragment",
    [
        ("[billing]\ncycle = 4\n", "unknown key 'cycle'"),
        ("[billing]\ncycle_periods = 0\n", "cycle_periods must be a whole number of at least 1"),
        ("[billing]\ncycle_periods = true\n", "cycle_periods must be a whole number"),
        ("[billing]\nreading_grace_periods = 1.5\n", "reading_grace_periods must be a whole"),
        ("[billing]\ntariffs = 3\n", "must be a table"),
        ('[billing.tariffs.s1]\nretail = "1"\nfeed_in = "1"\nnetwork_fee = "0"\nvat = "2"\n',
         "billing.tariffs.s1]: unknown key 'vat'"),
        ('[billing.tariffs.s1]\nretail = "1"\nfeed_in = "1"\n', "missing network_fee"),
        ('[billing.tariffs.s1]\nretail = "x"\nfeed_in = "1"\nnetwork_fee = "0"\n',
         "billing.tariffs.s1.retail: 'x' is not a decimal number"),
        ('[billing.tariffs.s1]\nretail = 1.1\nfeed_in = "1"\nnetwork_fee = "0"\n',
         "billing.tariffs.s1.retail must be a decimal number written as a string"),
        ('[billing.tariffs.s1]\nretail = "1"\nfeed_in = "1"\nnetwork_fee = "2"\n',
         "network fee must not exceed the retail price"),
        ('[billing.tariffs.s1]\nretail = "-1"\nfeed_in = "1"\nnetwork_fee = "0"\n',
         "must not be negative"),
    ],
)  # fmt: skip
def test_a_bad_billing_table_is_a_config_error_naming_the_key(
    tmp_path: Path, made: tuple[Path, Registry], billing: str, fragment: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_server_config(_toml(tmp_path, made, billing))
    assert fragment in str(caught.value), str(caught.value)


def test_tariffs_must_match_the_registered_suppliers() -> None:
    billing = BillingConfig.default(900, ["s1", "s2"])
    billing.check_suppliers(["s2", "s1"])
    with pytest.raises(ConfigError, match=r"no tariff for supplier.*s3"):
        billing.check_suppliers(["s1", "s2", "s3"])
    with pytest.raises(ConfigError, match="s2, which are not registered"):
        billing.check_suppliers(["s1"])


# ------------------------------------------------------------------ cycle arithmetic


def test_default_cycle_is_a_30_day_month_of_periods() -> None:
    assert default_cycle_periods(900) == 2880 and default_cycle_periods(1800) == 1440
    assert default_cycle_periods(60) == 43200 and default_cycle_periods(7) == 370285
    assert default_cycle_periods(10**9) == 1
    with pytest.raises(ValueError):
        default_cycle_periods(0)


def test_cycles_by_example() -> None:
    cal = BillingCalendar(period_seconds=900, cycle_periods=96, reading_grace_periods=4)
    assert cal.cycle_of("2026-11-22T21:15:00Z") == "2026-11-22T00:00:00Z"  # a day of periods
    assert cal.first_period("2026-11-22T00:00:00Z") == "2026-11-22T00:00:00Z"
    assert cal.last_period("2026-11-22T00:00:00Z") == "2026-11-22T23:45:00Z"
    assert cal.next_cycle("2026-11-22T00:00:00Z") == "2026-11-23T00:00:00Z"
    assert cal.position("2026-11-22T21:15:00Z") == 85
    assert iso(cal.reading_deadline("2026-11-22T21:15:00Z")) == "2026-11-22T22:30:00Z"
    assert iso(cal.billing_time("2026-11-22T00:00:00Z")) == "2026-11-23T01:00:00Z"
    periods = cal.periods("2026-11-22T00:00:00Z")
    assert len(periods) == 96 and periods[0] == "2026-11-22T00:00:00Z"
    # the default: 30 days of 15-minute periods from the epoch
    month = BillingCalendar()
    assert month.cycle_of("1970-01-31T00:00:00Z") == "1970-01-31T00:00:00Z"
    assert month.cycle_of("1970-01-30T23:45:00Z") == "1970-01-01T00:00:00Z"


@pytest.mark.parametrize(
    "cycle, fragment",
    [
        ("2026-11-22T21:15:00Z", "not the start of a billing cycle (cycles of 96 periods from "
                                 "1970-01-01T00:00:00Z); the cycle containing it starts at "
                                 "2026-11-22T00:00:00Z"),
        ("2026-11-22T00:00:01Z", "not the start of a trading period"),
        ("2026-11-22T00:00:00", "not the start of a trading period"),
        ("2026-11-22T01:00:00+01:00", "not the start of a trading period"),
        ("next month", "not the start of a trading period"),
    ],
)  # fmt: skip
def test_a_cycle_id_that_is_not_a_cycle_start_is_refused(cycle: str, fragment: str) -> None:
    cal = BillingCalendar(900, 96, 4)
    with pytest.raises(ValueError) as caught:
        cal.parse_cycle(cycle)
    assert fragment in str(caught.value)
    with pytest.raises(ValueError):
        cal.periods(cycle)


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.cycle_of("0001-01-01T00:15:00Z"),
        lambda c: c.parse_cycle("0001-01-01T00:00:00Z"),
        lambda c: c.reading_deadline("9999-12-31T23:45:00Z"),
        lambda c: c.billing_time(c.cycle_of("9999-12-31T00:00:00Z")),
        lambda c: c.cycle_of("0001-01-01T00:00:00+01:00"),
    ],
)
def test_absurd_dates_are_a_value_error_not_an_overflow(call) -> None:
    cal = BillingCalendar(900, 2880, 4)
    with pytest.raises(ValueError) as caught:
        call(cal)
    assert not isinstance(caught.value, OverflowError)


def test_a_calendar_refuses_nonsense_parameters() -> None:
    for bad in ({"cycle_periods": 0}, {"reading_grace_periods": 0}, {"period_seconds": -900},
                {"cycle_periods": True}):  # fmt: skip
        with pytest.raises(ValueError):
            BillingCalendar(**bad)


_STARTS = st.integers(min_value=-(10**6), max_value=10**7)  # periods from the epoch


@settings(max_examples=150, deadline=None)
@given(
    period_seconds=st.sampled_from([60, 300, 900, 1800, 3600, 7]),
    cycle=st.integers(min_value=1, max_value=50),
    grace=st.integers(min_value=1, max_value=10),
    k=_STARTS,
)
def test_cycle_properties(period_seconds: int, cycle: int, grace: int, k: int) -> None:
    cal = BillingCalendar(period_seconds, cycle, grace)
    step = dt.timedelta(seconds=period_seconds)
    start = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + k * step
    period = Schedule(period_seconds).period_id(start)
    c = cal.cycle_of(period)
    periods = cal.periods(c)
    # the period lies in its cycle, exactly once, at its position
    assert periods.count(period) == 1 and periods[cal.position(period)] == period
    assert len(periods) == cycle and periods[0] == c == cal.first_period(c)
    assert periods[-1] == cal.last_period(c)
    # consecutive periods, and the next cycle starts right after the last one
    times = [parse_time(p) for p in periods]
    assert all(b - a == step for a, b in itertools.pairwise(times))
    after = cal.next_cycle(c)
    assert parse_time(after) - times[-1] == step and cal.cycle_of(after) == after
    # ... and the period before the cycle is in the previous cycle, not this one
    before = iso(times[0] - step)
    assert cal.cycle_of(before) != c and cal.next_cycle(cal.cycle_of(before)) == c
    # the cycle's name round-trips and names every period of it
    assert cal.parse_cycle(c) == times[0] and iso(cal.parse_cycle(c)) == c
    assert all(cal.cycle_of(p) == c for p in (periods[0], periods[-1], period))
    # cycles are counted from the epoch
    assert (times[0] - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) % (cycle * step) == dt.timedelta(0)
    # deadlines: the period's end plus G periods; the cycle is billed at its last one's
    assert cal.reading_deadline(period) == start + (1 + grace) * step
    billed = cal.billing_time(c)
    assert billed == cal.reading_deadline(periods[-1]) == times[-1] + (1 + grace) * step
    assert all(cal.reading_deadline(p) <= billed for p in periods)


# ------------------------------------------------------------------ the command line


def test_init_command_with_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    households = _csv(tmp_path, "household,supplier,region\nana,green,north\nbo,grey,north\n")
    tariffs = _csv(tmp_path, "supplier,retail,feed_in,network_fee\ngreen,30,8,4\ngrey,31,7,4.5\n",
                   "tariffs.csv")  # fmt: skip
    code = main(["init", "--data-dir", str(tmp_path / "d"), "--base-port", "19900",
                 "--households-csv", str(households), "--tariffs", str(tariffs),
                 "--cycle-periods", "4", "--reading-grace-periods", "2"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    assert "regions (one DSO each): north; TSO: tso" in out and "cycles of 4 periods" in out
    cfg = load_server_config(tmp_path / "d" / "server-2" / "server.toml")
    assert cfg.billing.tariffs["grey"] == Tariff(F(31), F(7), F("4.5"))
    assert (cfg.billing.cycle_periods, cfg.billing.reading_grace_periods) == (4, 2)
    registry = Registry.load(tmp_path / "d" / "registry.json")
    assert registry.contract("bo").supplier == "grey" and sorted(registry.dsos) == ["north"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["--households-csv", "{dir}/bad.csv"], "bad.csv line 3: duplicate_household"),
        (["--households-csv", "{dir}/bad.csv", "--households", "3"], "choose one"),
        (["--tariffs", "{dir}/short.csv"], "no tariff for supplier(s) s3"),
        (["--tariffs", "{dir}/broken.csv"], "broken.csv line 2: malformed: retail"),
        (["--cycle-periods", "0"], "--cycle-periods must be at least 1"),
        (["--reading-grace-periods", "0"], "--reading-grace-periods must be at least 1"),
    ],
)
def test_init_command_errors_name_the_file_line_and_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], fragment: str
) -> None:
    _csv(tmp_path, "household,supplier,region\nh1,s1,r1\nh1,s1,r2\n", "bad.csv")
    _csv(tmp_path, "supplier,retail,feed_in,network_fee\ns1,1,1,0\ns2,1,1,0\n", "short.csv")
    _csv(tmp_path, "supplier,retail,feed_in,network_fee\ns1,x,1,0\n", "broken.csv")
    argv = ["init", "--data-dir", str(tmp_path / "d"), "--base-port", "19950"]
    assert main([*argv, *(a.format(dir=tmp_path) for a in args)]) == 1
    assert fragment in capsys.readouterr().err
    assert not any((tmp_path / "d").rglob("*.key"))


def test_keygen_command_for_a_household_a_dso_and_the_tso(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def run(*args: str) -> dict[str, object]:
        assert main(["keygen", *args, "--json"]) == 0
        got: dict[str, object] = json.loads(capsys.readouterr().out)
        return got

    home = run("--role", "household", "--id", "h1", "--supplier", "s1", "--region", "r1",
               "--out", str(tmp_path / "h1"))  # fmt: skip
    assert [Path(str(p)).name for p in home["private"]] == ["h1.key", "h1.meter.key"]  # type: ignore[attr-defined]
    assert (home["supplier"], home["region"]) == ("s1", "r1")
    assert run("--role", "dso", "--id", "r1", "--out", str(tmp_path / "r1"))["id"] == "r1"
    assert run("--role", "tso", "--id", "tso", "--out", str(tmp_path / "tso"))["role"] == "tso"
    assert main(["keygen", "--role", "household", "--id", "h2", "--supplier", "s1",
                 "--out", str(tmp_path / "h2")]) == 1  # fmt: skip
    assert "needs its region" in capsys.readouterr().err
    assert main(["keygen", "--role", "tso", "--id", "t2", "--out", str(tmp_path / "t2")]) == 1
    assert "TSO's id is 'tso'" in capsys.readouterr().err


def test_the_running_market_refuses_bids_too_large_to_settle() -> None:
    """Every bid is settled, and the settlement's exact truncation is bounded: a maximum
    quantity above MAX_SETTLED_WH is refused with the rule, the bound itself is taken."""
    from sealgrid.protocol.billing import MAX_SETTLED_WH, ClaimLayout
    from sealgrid.service.config import MarketConfig

    assert MarketConfig(max_quantity_wh=MAX_SETTLED_WH).max_quantity_wh == MAX_SETTLED_WH
    with pytest.raises(ValueError, match="at most 32767 Wh"):
        MarketConfig(max_quantity_wh=MAX_SETTLED_WH + 1)
    with pytest.raises(ValueError, match="the settlement takes bids of at most"):
        ClaimLayout.of(MAX_SETTLED_WH + 1)
    assert ClaimLayout.of(MAX_SETTLED_WH).quantity_bits + 20 == 35
