"""The household's and the billing readers' side of the running market's settlement, without
a server: the credential and its enrolment, the identity every bid carries, the claim a meter
reading carries, the local refusal of readings out of range, and the rebuilding of billing
outputs (statements, bills, DSO and TSO totals) from every server's signed shares.

The servers are stood in for by :class:`FakeServers`, which answers each request the way the
server contract says, signed with the real servers' keys of a ``sealgrid init`` directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import stat
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sealgrid.cli import main
from sealgrid.mechanism.bids import Bid, Side
from sealgrid.protocol import encoding
from sealgrid.protocol import field as F
from sealgrid.protocol.billing import Claim, ClaimLayout
from sealgrid.service import bills, wire
from sealgrid.service import client as client_module
from sealgrid.service.agent import (
    AgentError,
    HouseholdAgent,
    NotYetSettled,
    PseudonymRecord,
    PseudonymStore,
    reading_wh,
    rebuild_billing,
)
from sealgrid.service.client import Client, ServiceError
from sealgrid.service.keys import Registry, load_signing_key
from sealgrid.service.setup import init_data_dir
from sealgrid.service.wire import (
    AuthRequest,
    Enrolled,
    Enrolment,
    MarketInfo,
    MeterReading,
    OutputShares,
    PriceGridInfo,
    RateLimit,
    ReadingReceipt,
)

PERIOD = "2026-11-29T10:45:00Z"
CYCLE = "2026-11-29T10:30:00Z"
MAX_Q = 16_000
SERVERS = 3


# --------------------------------------------------------------------------- the stand-in


class FakeServers:
    """Three servers' answers, signed with their real keys; every request is kept in ``seen``.

    ``enrol``, ``reading`` and ``output`` may be replaced to answer otherwise (refuse, forge).
    """

    def __init__(self, data_dir: Path) -> None:
        self.registry = Registry.load(data_dir / "registry.json")
        self.keys = [load_signing_key(data_dir / f"server-{i}" / "signing.key")
                     for i in range(SERVERS)]
        self.seen: list[tuple[int, str, str, bytes | None]] = []
        self.outputs: dict[tuple[str, str, str], Callable[[int], tuple[str, bytes, str]]] = {}

    def info(self, server: int) -> MarketInfo:
        return wire.sign(MarketInfo(
            party=server, servers=SERVERS, signing_key=wire.raw_public(self.keys[server]),
            wire_version=1, now="2026-11-29T12:00:00Z", period_seconds=900,
            first_open_period="2026-11-29T12:30:00Z", max_payload_bytes=4096,
            rate_limit=RateLimit(5, 30), suppliers=("s1", "s2", "s3"),
            price_grid=PriceGridInfo("0.04", "0.2", "0.001"), max_quantity_wh=MAX_Q,
            min_accepted_per_side=1, stats={},
        ), self.keys[server])  # fmt: skip

    def enrol(self, server: int, msg: Enrolment) -> tuple[int, bytes]:
        assert wire.verify(msg, self.registry.households[msg.household])
        ack = Enrolled(server, msg.household, wire.sha256(msg.share))
        return 200, wire.encode(wire.sign(ack, self.keys[server]))

    def reading(self, server: int, msg: MeterReading) -> tuple[int, bytes]:
        assert wire.verify(msg, self.registry.contracts[msg.household].meter_key)
        receipt = ReadingReceipt(server, msg.period, msg.household, wire.sha256(msg.shares))
        return 200, wire.encode(wire.sign(receipt, self.keys[server]))

    def output(self, server: int, req: AuthRequest) -> tuple[int, bytes]:
        status, shares, public = self.outputs[req.role, req.subject, req.period](server)
        out = OutputShares(server, req.period, req.role, req.subject, status, shares, public)
        return 200, wire.encode(wire.sign(out, self.keys[server]))

    async def call(self, server: int, method: str, path: str, body: bytes | None
                   ) -> tuple[int, bytes]:
        self.seen.append((server, method, path, body))
        if (method, path) == ("GET", "/v1/info"):
            return 200, wire.encode(self.info(server))
        if (method, path) == ("POST", "/v1/challenge"):
            return 200, json.dumps({"nonce": wire.b64e(bytes([server]) * 16)}).encode()
        assert body is not None or method == "GET"
        if (method, path) == ("POST", "/v1/enrol"):
            return self.enrol(server, wire.decode(Enrolment, body or b""))
        if (method, path) == ("POST", "/v1/readings"):
            return self.reading(server, wire.decode(MeterReading, body or b""))
        if (method, path) == ("POST", "/v1/outputs"):
            return self.output(server, wire.decode(AuthRequest, body or b""))
        if method == "GET" and path.startswith("/v1/periods/"):
            return 404, b'{"error": "not_finished", "message": "not cleared yet"}'
        raise AssertionError(f"unexpected request {method} {path}")

    def paths(self, path: str) -> list[tuple[int, bytes | None]]:
        return [(i, b) for i, _, p, b in self.seen if p == path]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    init_data_dir(tmp_path / "d", households=4, base_port=40200)
    return tmp_path / "d"


@pytest.fixture
def servers(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> FakeServers:
    fake = FakeServers(data_dir)

    async def send(self: Client, server: int, method: str, path: str,
                   body: bytes | None = None) -> Any:
        status, answer = await fake.call(server, method, path, body)
        return client_module._Answer(status, answer, None)

    # one request as the wire sees it: every step of the client (its retries, its signed
    # requests over a fresh challenge) runs as it does against real servers
    monkeypatch.setattr(Client, "_send", send)
    return fake


def _agent(data_dir: Path, household: str = "h0002") -> HouseholdAgent:
    return HouseholdAgent.from_data_dir(data_dir, household)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _with(agent: HouseholdAgent, work: Callable[[HouseholdAgent], Any]) -> Any:
    async with agent:
        return await work(agent)


def _field(numerator: int, denominator: int) -> int:
    return numerator * pow(denominator, F.MODULUS - 2, F.MODULUS) % F.MODULUS


def _shares(values: list[int], parties: int = SERVERS) -> list[bytes]:
    """Fresh degree-t shares of signed integers, raw little-endian u64, by server."""
    t = encoding.threshold(parties)
    secret = F.from_ints(values)
    coeffs = [F.stream(bytes(16 - j) + b"x" * j, "test", len(values)) for j in range(t)]
    return [np.asarray(s, dtype="<u8").tobytes() for s in F.share(secret, t, parties, coeffs)]


def _serve(fake: FakeServers, role: str, subject: str, values: list[int],
           public: dict[str, Any], status: str = "billed") -> list[bytes]:
    parts = _shares(values)
    text = bills.public_text(public)
    fake.outputs[role, subject, CYCLE] = lambda i: (status, parts[i], text)
    return parts


# --------------------------------------------------------------------------- the credential


def test_the_credential_is_made_once_kept_private_and_its_shares_rebuild_it(data_dir) -> None:
    agent = _agent(data_dir)
    first = agent.credential()
    path = data_dir / "households" / "h0002.pseudonyms" / "credential.json"
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert 1 <= first.kappa < F.MODULUS and len(first.shares) == SERVERS
    rebuilt = F.reconstruct([np.array([s], dtype=F.U64) for s in first.shares], 1)
    assert int(rebuilt[0]) == first.kappa
    assert len(set(first.shares)) == SERVERS and first.kappa not in first.shares
    # made once: the same credential for a second agent, and another household has its own
    assert _agent(data_dir).credential() == first
    assert PseudonymStore.of(data_dir, "h0002").credential(SERVERS) == first
    assert _agent(data_dir, "h0003").credential().kappa != first.kappa
    assert first.share_bytes(1) == np.asarray([first.shares[1]], "<u8").tobytes()
    # a kept credential whose shares do not rebuild it, or made for other servers, is refused
    with pytest.raises(AgentError, match="made for 3 servers, the registry has 5"):
        PseudonymStore.of(data_dir, "h0002").credential(5)
    doc = json.loads(path.read_text())
    doc["shares"][2] = (doc["shares"][2] + 1) % F.MODULUS
    path.write_text(json.dumps(doc))
    with pytest.raises(AgentError, match="do not lie on one polynomial"):
        agent.credential()


def test_enrolment_sends_each_server_its_share_once_and_the_same_share_again(
        data_dir, servers) -> None:
    agent = _agent(data_dir)
    credential = agent.credential()
    enrolled, refused = run(_with(agent, lambda a: a.enrol()))
    assert refused == {} and sorted(enrolled) == [0, 1, 2]
    sent = {i: wire.decode(Enrolment, b or b"") for i, b in servers.paths("/v1/enrol")}
    assert sorted(sent) == [0, 1, 2]
    for i, msg in sent.items():
        assert (msg.household, msg.server, msg.share) == ("h0002", i, credential.share_bytes(i))
        assert enrolled[i] == wire.sha256(credential.share_bytes(i))
    # remembered: asking again sends nothing; told to, it sends exactly the same shares
    kept = PseudonymStore.of(data_dir, "h0002").credential(SERVERS)
    assert kept.enrolled == enrolled and kept.kappa == credential.kappa
    servers.seen.clear()
    run(_with(_agent(data_dir), lambda a: a.enrol()))
    assert servers.paths("/v1/enrol") == []
    run(_with(_agent(data_dir), lambda a: a.enrol(again=True)))
    again = {i: wire.decode(Enrolment, b or b"").share for i, b in servers.paths("/v1/enrol")}
    assert again == {i: m.share for i, m in sent.items()}


def test_the_named_session_for_tokens_enrols_first_and_only_until_acknowledged(
        data_dir, servers) -> None:
    agent = _agent(data_dir)
    record = PseudonymRecord(PERIOD, Ed25519PrivateKey.generate(), None, None,
                             tokens={i: b"t" for i in range(SERVERS)})
    pseudonym = record.pseudonym()
    assert run(_with(agent, lambda a: a._obtain([record], [pseudonym]))) == {}
    assert [p for _, _, p, _ in servers.seen] == ["/v1/enrol"] * SERVERS  # no token asked
    servers.seen.clear()
    run(_with(agent, lambda a: a._obtain([record], [pseudonym])))
    assert servers.seen == []  # every token kept, every server enrolled: nothing is asked


@pytest.mark.parametrize("forgery", ["other key", "other share", "other household", "refused"])
def test_an_enrolment_answer_that_does_not_verify_is_not_remembered(
        data_dir, servers, forgery) -> None:
    honest = servers.enrol
    stranger = Ed25519PrivateKey.generate()

    def enrol(server: int, msg: Enrolment) -> tuple[int, bytes]:
        if server != 1:
            return honest(server, msg)
        ack = Enrolled(1, msg.household, wire.sha256(msg.share))
        if forgery == "refused":
            return 409, json.dumps({"error": "already_enrolled", "message": "x"}).encode()
        if forgery == "other share":
            ack = dataclasses.replace(ack, share_sha256=wire.sha256(b"\x00" * 8))
        if forgery == "other household":
            ack = dataclasses.replace(ack, household="h0003")
        key = stranger if forgery == "other key" else servers.keys[1]
        return 200, wire.encode(wire.sign(ack, key))

    servers.enrol = enrol
    agent = _agent(data_dir)
    if forgery == "refused":
        enrolled, refused = run(_with(agent, lambda a: a.enrol()))
        assert [r.reason.value for r in refused.values()] == ["already_enrolled"]
        assert sorted(enrolled) == [0, 2] and sorted(refused) == [1]
        assert agent.enrolment_refusals == refused
    else:
        with pytest.raises(ServiceError, match="server 1's enrolment answer does not verify"):
            run(_with(agent, lambda a: a.enrol()))
    assert 1 not in PseudonymStore.of(data_dir, "h0002").credential(SERVERS).enrolled


# --------------------------------------------------------------------------- bids


def test_every_bid_carries_the_households_index_and_credential(data_dir, servers) -> None:
    agent = _agent(data_dir, "h0003")
    bid = Bid("h0003", Side.SELL, 2_500, 40, "s3")

    async def work(a: HouseholdAgent) -> list[bytes]:
        prepared = await a.prepare(bid, "2026-11-29T12:30:00Z")
        return prepared.payloads

    payloads = run(_with(agent, work))
    shares = [encoding.BidShares.from_bytes(p) for p in payloads]
    lay = shares[0].layout
    identity = F.reconstruct([s.values[lay.identity] for s in shares], 1)
    assert [int(v) for v in identity] == [3, agent.credential().kappa]  # h0003 is the third
    # everything else is the bid as before: its quantity and supplier one-hot
    whole = F.reconstruct([s.values for s in shares], 1)
    assert [int(v) for v in whole[lay.supplier]] == [0, 0, 1]


# --------------------------------------------------------------------------- the claim


def _kept(data_dir: Path, household: str, side: Side, quantity: int, status: str | None,
          output: int | None) -> None:
    PseudonymStore.of(data_dir, household).save(PseudonymRecord(
        PERIOD, Ed25519PrivateKey.generate(), side, quantity, result_status=status,
        result_output=output))


@pytest.mark.parametrize("side, quantity, status, output, accepted, ratio", [
    # a long-side seller: S = 1200, V = 900; its 4000 Wh accepted at the ratio 3/4
    (Side.SELL, 4_000, "cleared", _field(4_000 * 900, 1_200), 4_000, Fraction(3, 4)),
    # a short-side buyer: ratio 1
    (Side.BUY, 2_500, "cleared", 2_500, 2_500, Fraction(1)),
    # a long-side buyer rationed to an odd ratio: settled Wh round down by the one rule
    (Side.BUY, 7_777, "cleared", _field(7_777 * 1_000, 3_001), 7_777, Fraction(1_000, 3_001)),
    (Side.SELL, 3_000, "cleared", 0, 0, Fraction(1)),  # not accepted
    (Side.BUY, 3_000, "no_trade", None, 0, Fraction(1)),  # nothing traded in the period
    (Side.SELL, 3_000, "excluded/unknown", None, 0, Fraction(1)),  # a bid not every server had
])
def test_the_claim_from_a_kept_result_is_the_honest_claim(
        data_dir, servers, side, quantity, status, output, accepted, ratio) -> None:
    _kept(data_dir, "h0001", side, quantity, status, output)
    claim = run(_with(_agent(data_dir, "h0001"), lambda a: a.claim(PERIOD, 5_123, 250)))
    expected = Claim.of(side is Side.SELL, accepted, ratio, 5_123, 250)
    assert claim == expected
    assert servers.seen == []  # the kept result is used, nothing fetched
    if accepted and ratio != 1:
        assert claim.traded_wh < accepted  # the ratio counted (a seller's 3000 of 4000 …)


def test_a_household_that_did_not_bid_claims_nothing_traded(data_dir, servers) -> None:
    claim = run(_with(_agent(data_dir, "h0004"), lambda a: a.claim(PERIOD, 1_000, 0)))
    assert claim == Claim.of(False, 0, Fraction(1), 1_000, 0) and claim.traded_wh == 0


def test_a_reading_waits_for_a_result_that_is_not_final(data_dir, servers) -> None:
    _kept(data_dir, "h0001", Side.BUY, 2_000, None, None)
    pseudonym = PseudonymStore.of(data_dir, "h0001").load(PERIOD).pseudonym()
    subject = wire.b64e(pseudonym.public)
    servers.outputs["household", subject, PERIOD] = lambda i: (
        "pending" if i == 2 else "cleared", b"", "")
    with pytest.raises(AgentError, match="must wait for the result"):
        run(_with(_agent(data_dir, "h0001"), lambda a: a.read_meter(PERIOD, 2_000, 0)))
    assert servers.paths("/v1/readings") == []
    # once final, the result is fetched, kept and the claim built from it
    out = _shares([_field(2_000 * 5, 8)])
    servers.outputs["household", subject, PERIOD] = lambda i: (
        "cleared", encoding.OutputShare(i, np.frombuffer(out[i], "<u8").astype(F.U64)).to_bytes(),
        "")
    claim = run(_with(_agent(data_dir, "h0001"), lambda a: a.claim(PERIOD, 2_000, 0)))
    assert claim == Claim.of(False, 2_000, Fraction(5, 8), 2_000, 0)
    assert PseudonymStore.of(data_dir, "h0001").load(PERIOD).result_status == "cleared"


def test_a_reading_sends_each_server_its_share_of_the_claim_signed_by_the_meter(
        data_dir, servers) -> None:
    _kept(data_dir, "h0001", Side.SELL, 4_000, "cleared", _field(4_000 * 900, 1_200))
    got = run(_with(_agent(data_dir, "h0001"), lambda a: a.read_meter(PERIOD, 120, 3_456)))
    assert got.refusals == {} and sorted(got.receipts) == [0, 1, 2]
    layout = ClaimLayout.of(MAX_Q)
    sent = {i: wire.decode(MeterReading, b or b"") for i, b in servers.paths("/v1/readings")}
    assert all((m.household, m.server, m.period) == ("h0001", i, PERIOD)
               for i, m in sent.items())
    vectors = [np.frombuffer(sent[i].shares, "<u8").astype(F.U64) for i in range(SERVERS)]
    claim = Claim.of(True, 4_000, Fraction(3, 4), 120, 3_456)
    assert np.array_equal(F.reconstruct(vectors, 1), claim.vector(layout))
    assert got.claim == claim
    assert all(got.receipts[i].shares_sha256 == wire.sha256(sent[i].shares) for i in sent)


@pytest.mark.parametrize("forgery", ["other shares", "other period", "other key"])
def test_a_reading_receipt_that_does_not_verify_is_refused(data_dir, servers, forgery) -> None:
    honest = servers.reading

    def reading(server: int, msg: MeterReading) -> tuple[int, bytes]:
        if server != 2:
            return honest(server, msg)
        receipt = ReadingReceipt(2, msg.period, msg.household, wire.sha256(msg.shares))
        key = servers.keys[2]
        if forgery == "other shares":
            receipt = dataclasses.replace(receipt, shares_sha256=wire.sha256(b""))
        elif forgery == "other period":
            receipt = dataclasses.replace(receipt, period=CYCLE)
        else:
            key = servers.keys[0]
        return 200, wire.encode(wire.sign(receipt, key))

    servers.reading = reading
    with pytest.raises(ServiceError, match="server 2's reading receipt does not verify"):
        run(_with(_agent(data_dir, "h0004"), lambda a: a.read_meter(PERIOD, 1, 2)))


def test_meter_read_reports_each_servers_receipt_or_refusal(data_dir, servers, capsys) -> None:
    honest = servers.reading

    def reading(server: int, msg: MeterReading) -> tuple[int, bytes]:
        if server == 1:
            body = {"error": "too_early", "message": "too_early: wait", "detail": ""}
            return 422, json.dumps(body).encode()
        return honest(server, msg)

    servers.reading = reading
    args = ["meter", "read", "--data-dir", str(data_dir), "--household", "h0004",
            "--period", PERIOD, "--import-kwh", "1.5", "--export-kwh", "0.002", "--json"]
    assert main(args) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["household"] == "h0004" and doc["period"] == PERIOD
    assert (doc["import_kwh"], doc["export_kwh"]) == (1.5, 0.002)
    assert doc["refused"] == {"1": "too_early"} and sorted(doc["receipts"]) == ["0", "2"]
    sent = dict(servers.paths("/v1/readings"))
    assert doc["receipts"]["0"] == wire.sha256(
        wire.decode(MeterReading, sent[0] or b"").shares).hex()
    servers.reading = honest
    assert main(args) == 0


@pytest.mark.parametrize("imp, exp, fragment", [
    ("-0.001", "0", "import -0.001 kWh"),
    ("1.0005", "0", "import 1.0005 kWh is not whole Wh"),
    ("0", "1048.576", "export 1048.576 kWh"),
    ("0", "lots", "export 'lots' is not a number"),
    ("nan", "0", "is not a number"),
])
def test_meter_read_refuses_readings_out_of_range_before_sending(
        data_dir, servers, capsys, imp, exp, fragment) -> None:
    args = ["meter", "read", "--data-dir", str(data_dir), "--household", "h0001",
            "--period", PERIOD, "--import-kwh", imp, "--export-kwh", exp]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith("sealgrid: error: reading_out_of_range: ") and fragment in err
    assert "allowed 0 … 1048.575 kWh" in err and len(err.strip().splitlines()) == 1
    assert servers.seen == []  # nothing was asked or sent


def test_the_largest_reading_is_allowed() -> None:
    assert reading_wh("import", "1048.575") == 1_048_575 == ClaimLayout.of(MAX_Q).max_reading_wh()
    assert reading_wh("export", "0") == 0 and reading_wh("export", " 2.50 ") == 2_500


# --------------------------------------------------------------------------- billing outputs


def _outputs(values: list[int], public: str, role: str = "bill", subject: str = "s1"
             ) -> list[OutputShares]:
    parts = _shares(values)
    return [OutputShares(i, CYCLE, role, subject, "billed", parts[i], public)
            for i in range(SERVERS)]


def test_a_billing_output_is_rebuilt_to_signed_integers() -> None:
    public = bills.public_text({"status": "billed", "regions": ["r1", "r2"]})
    got = rebuild_billing(_outputs([-1_250_000, 7, 0, 2**40], public))
    assert got.values == [-1_250_000, 7, 0, 2**40]
    assert got.public == {"status": "billed", "regions": ["r1", "r2"]}
    empty = rebuild_billing([OutputShares(i, CYCLE, "tso", "tso", "pending", b"",
                                          '{"status":"pending"}') for i in range(SERVERS)])
    assert empty.values == [] and empty.public["status"] == "pending"


def test_a_billing_output_with_public_parts_that_differ_is_refused() -> None:
    out = _outputs([1, 2], bills.public_text({"status": "billed", "regions": ["r1"]}))
    out[2] = dataclasses.replace(out[2], public=bills.public_text(
        {"status": "billed", "regions": ["r2"]}))
    with pytest.raises(AgentError, match="public parts of the output differ") as info:
        rebuild_billing(out)
    assert not isinstance(info.value, NotYetSettled)


def test_a_billing_output_some_servers_have_not_settled_yet_says_so() -> None:
    """One server has billed the cycle, the others not yet: ask again, not a disagreement."""
    out = _outputs([1, 2], bills.public_text({"status": "billed", "regions": ["r1"]}))
    for i in (0, 1):
        out[i] = dataclasses.replace(out[i], status="pending", shares=b"",
                                     public=bills.public_text({"status": "pending"}))
    with pytest.raises(NotYetSettled, match="not all settled this yet"):
        rebuild_billing(out)


@pytest.mark.parametrize("damage", ["one value", "short", "outside the field", "missing"])
def test_billing_shares_that_do_not_agree_are_refused(damage: str) -> None:
    out = _outputs([1, 2, 3], '{"status":"billed"}')
    values = np.frombuffer(out[1].shares, "<u8").astype(F.U64).copy()
    if damage == "one value":
        values[2] = F.add(values[2:3], np.array([1], F.U64))[0]
        out[1] = dataclasses.replace(out[1], shares=values.astype("<u8").tobytes())
        fragment = "do not agree"
    elif damage == "short":
        out[1] = dataclasses.replace(out[1], shares=out[1].shares[:-8])
        fragment = "malformed"
    elif damage == "outside the field":
        values[0] = np.uint64(2**64 - 1)
        out[1] = dataclasses.replace(out[1], shares=values.astype("<u8").tobytes())
        fragment = "outside the field"
    else:  # server 1's share twice, server 2's missing
        out = [out[0], out[1], out[1]]
        fragment = "one output share from every server"
    with pytest.raises(AgentError, match=fragment):
        rebuild_billing(out)


@pytest.mark.parametrize("forgery", ["other key", "other subject", "other cycle"])
def test_a_billing_output_that_does_not_verify_is_refused(data_dir, servers, capsys,
                                                          forgery) -> None:
    public = {"status": "billed", "customers": ["h0001", "h0004"]}
    parts = _serve(servers, "bill", "s1", [-2_000_000, -2_100_000, 1_000, 0, 0, 0, 0, 0,
                                           0], public)
    honest = servers.output

    def output(server: int, req: AuthRequest) -> tuple[int, bytes]:
        if server != 0:
            return honest(server, req)
        out = OutputShares(0, req.period, req.role, req.subject, "billed", parts[0],
                           bills.public_text(public))
        key = servers.keys[0]
        if forgery == "other key":
            key = servers.keys[1]
        elif forgery == "other subject":
            out = dataclasses.replace(out, subject="s2")
        else:
            out = dataclasses.replace(out, period=PERIOD)
        return 200, wire.encode(wire.sign(out, key))

    servers.output = output
    args = ["bills", "--data-dir", str(data_dir), "--supplier", "s1", "--cycle", CYCLE]
    assert main(args) == 1
    assert "server 0's output shares do not verify" in capsys.readouterr().err


def test_sealgrid_bills_prints_each_customers_amount(data_dir, servers, capsys) -> None:
    # h0001 pays 12.345678 with the market (13.50 without), h0004 is paid 0.50; s1 bought
    # 1.5 kWh, sold 0.25 kWh, its customers imported 9 kWh and exported 2 kWh; fees 0.27;
    # s1 itself bought 0.4 kWh on the market, paying 40.00
    values = [-12_345_678, -13_500_000, 500_000, 400_000,
              1_500, 250, 9_000, 2_000, 270_000, 400, 0, -40_000_000]
    _serve(servers, "bill", "s1", values, {"status": "billed", "customers": ["h0001", "h0004"]})
    base = ["bills", "--data-dir", str(data_dir), "--supplier", "s1", "--cycle", CYCLE]
    assert main([*base, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["supplier"] == "s1" and doc["cycle"] == CYCLE and doc["status"] == "billed"
    assert doc["customers"] == [
        {"household": "h0001", "amount": 12.35, "amount_without_market": 13.5},
        {"household": "h0004", "amount": -0.5, "amount_without_market": -0.4},
    ]
    assert (doc["bought_kwh"], doc["sold_kwh"], doc["network_fees"]) == (1.5, 0.25, 0.27)
    assert (doc["own_bought_kwh"], doc["own_sold_kwh"], doc["own_position"]) == (0.4, 0.0, -40.0)
    # the bill was asked for with the supplier's own key, for this cycle
    asked = [wire.decode(AuthRequest, b or b"") for _, b in servers.paths("/v1/outputs")]
    key = servers.registry.suppliers["s1"]
    assert all((r.role, r.subject, r.period) == ("bill", "s1", CYCLE) and wire.verify(r, key)
               for r in asked) and len(asked) == SERVERS
    assert main(base) == 0
    text = capsys.readouterr().out
    assert "supplier s1, cycle 2026-11-29T10:30:00Z: billed" in text
    assert "h0001" in text and "12.35" in text and "-0.50" in text
    assert main(["bills", "--data-dir", str(data_dir), "--supplier", "s9", "--cycle",
                 CYCLE]) == 1
    assert "no key of supplier 's9'" in capsys.readouterr().err


def test_aggregates_for_a_dso_and_the_tso_read_their_cycle_totals(data_dir, servers,
                                                                  capsys) -> None:
    _serve(servers, "dso", "r1", [9_000, 2_000, 4_500, 0],
           {"status": "billed", "suppliers": ["s1", "s3"]})
    _serve(servers, "tso", "tso", [13_500, 2_000, 1_250, 750],
           {"status": "pending", "regions": ["r1", "r2"]}, status="pending")
    base = ["aggregates", "--data-dir", str(data_dir), "--cycle", CYCLE, "--json"]
    assert main([*base, "--role", "dso", "--id", "r1"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "units": {"price": "ct/kWh", "money": "ct", "energy": "kWh"},
        "region": "r1", "cycle": CYCLE, "status": "billed",
        "suppliers": [{"supplier": "s1", "import_kwh": 9.0, "export_kwh": 2.0},
                      {"supplier": "s3", "import_kwh": 4.5, "export_kwh": 0.0}]}
    assert main([*base, "--role", "tso", "--id", "tso"]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "units": {"price": "ct/kWh", "money": "ct", "energy": "kWh"},
        "cycle": CYCLE, "status": "pending",
        "regions": [{"region": "r1", "import_kwh": 13.5, "export_kwh": 2.0},
                    {"region": "r2", "import_kwh": 1.25, "export_kwh": 0.75}]}
    asked = [wire.decode(AuthRequest, b or b"") for _, b in servers.paths("/v1/outputs")]
    assert {(r.role, r.subject) for r in asked} == {("dso", "r1"), ("tso", "tso")}
    dso_key, tso_key = servers.registry.dsos["r1"], servers.registry.tso
    assert all(wire.verify(r, dso_key if r.role == "dso" else tso_key) for r in asked)
    assert main(["aggregates", "--data-dir", str(data_dir), "--cycle", CYCLE, "--role", "dso",
                 "--id", "r1"]) == 0
    assert "DSO of region r1" in capsys.readouterr().out
    assert main([*base, "--role", "dso", "--id", "r9"]) == 1
    assert "no key of the DSO of region 'r9'" in capsys.readouterr().err


@pytest.mark.parametrize("args", [
    ["--role", "dso", "--id", "r1"],  # a cycle's totals need --cycle
    ["--role", "tso", "--id", "tso", "--period", PERIOD],
    ["--role", "supplier", "--id", "s1"],  # a period's totals need --period, as before
    ["--role", "operator", "--id", "dso", "--cycle", CYCLE],
])
def test_aggregates_asks_each_role_for_its_own_option(data_dir, args, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["aggregates", "--data-dir", str(data_dir), *args])
    assert exit_.value.code == 2 and "takes --" in capsys.readouterr().err


def test_a_household_statement_is_rebuilt_line_by_line(data_dir, servers, capsys) -> None:
    periods = [{"period": CYCLE, "status": "settled", "price": "0.1"},
               {"period": PERIOD, "status": "missing_reading", "price": None}]
    # first period: bought 2 kWh, imported 2.5 kWh, paid 0.25 (0.30 without the market)
    values = [2_000, 0, 2_500, 0, -250_000, -300_000,
              0, 0, 0, 0, 0, 0]
    _serve(servers, "statement", "h0002", values, {"status": "pending", "periods": periods})
    base = ["household", "statement", "--data-dir", str(data_dir), "--household", "h0002",
            "--cycle", CYCLE]
    assert main([*base, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc == bills.statement_doc("h0002", CYCLE, bills.Rebuilt(
        {"status": "pending", "periods": periods}, values))
    assert doc["amount"] == 0.25 and doc["periods"][1]["status"] == "missing_reading"
    asked = [wire.decode(AuthRequest, b or b"") for _, b in servers.paths("/v1/outputs")]
    key = servers.registry.households["h0002"]
    assert all((r.role, r.subject) == ("statement", "h0002") and wire.verify(r, key)
               for r in asked)
    assert main(base) == 0
    out = capsys.readouterr().out
    assert "amount to pay: 0.25" in out and "missing_reading" in out


def test_a_statement_whose_values_do_not_fit_its_periods_is_one_error(data_dir, servers,
                                                                      capsys) -> None:
    _serve(servers, "statement", "h0002", [1, 2, 3],
           {"status": "billed", "periods": [{"period": CYCLE, "status": "settled",
                                             "price": None}]})
    assert main(["household", "statement", "--data-dir", str(data_dir), "--household",
                 "h0002", "--cycle", CYCLE]) == 1
    assert "does not read as one" in capsys.readouterr().err


def test_a_kept_result_reads_back_and_a_record_without_one_keeps_its_old_form(
        data_dir) -> None:
    store = PseudonymStore.of(data_dir, "h0001")
    store.save(PseudonymRecord(PERIOD, Ed25519PrivateKey.generate(), Side.BUY, 1_000))
    back = store.load(PERIOD)
    assert back.result_status is None and back.result_output is None
    assert "result" not in json.loads(store.path(PERIOD).read_text())
    back.result_status, back.result_output = "cleared", F.MODULUS - 1
    store.save(back)
    again = store.load(PERIOD)
    assert (again.result_status, again.result_output) == ("cleared", F.MODULUS - 1)
