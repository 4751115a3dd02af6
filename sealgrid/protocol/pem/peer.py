"""One PEM agent among its peers (paper xie2020 Protocols 1–4); assumes semi-honest agents,
private authenticated channels, a public per-window seed, and that roles (seller/buyer) are public.

Not an MPC server (that is :mod:`sealgrid.protocol.party`): every household runs one
:class:`PemPeer` for itself. A peer holds only its own data and keys plus everyone's public
keys; it talks to the others only through its :class:`~sealgrid.protocol.pem.net.Endpoint`.
Aggregations run up a tree (fan-out :data:`~sealgrid.protocol.pem.params.FANOUT`) instead of
the paper's chain: every intermediate value is a ciphertext under the designated agent's key,
as in the chain.
Values this agent learns in clear are all taken through :meth:`PemPeer._reveal`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from functools import partial

from sealgrid.mechanism.pem import (
    FIXED,
    Agent,
    MarketKind,
    PemInputError,
    PemMarket,
    optimal_load,
    stackelberg_price,
)
from sealgrid.protocol.pem import dgk, wire
from sealgrid.protocol.pem import paillier as pa
from sealgrid.protocol.pem.net import Endpoint
from sealgrid.protocol.pem.params import (
    CANDIDATES,
    PER_KEY,
    RATIO_BITS,
    Designation,
    check_net,
    compare_bits,
    designate,
    noisy_inverse,
    nonce_bits,
    ratio_width,
    window_order,
)
from sealgrid.protocol.pem.trees import Members, links, position, rooted, select, without
from sealgrid.protocol.pem.wire import RemoteProtocolError, Topic

Values = tuple[int, ...]
#: Protocol 4 scaling factor K.
K = 1 << RATIO_BITS


@dataclass(frozen=True)
class Directory:
    """Everyone's public keys, by agent id (distributed once, Protocol 1 lines 1–2)."""

    paillier: tuple[pa.PublicKey, ...]
    dgk: tuple[dgk.DgkPublicKey, ...]


@dataclass(frozen=True)
class PeerOutput:
    """What one agent knows at the end of a window.

    In a general market each seller, in an extreme market each buyer, holds ``scaled``: for every
    counterpart ``j`` the decrypted noisy ``D'_j = E·q'_j + η_j`` (``q'_j ≈ K/|sn_j|``, see
    :func:`~sealgrid.protocol.pem.params.noisy_inverse`), from which :meth:`trades` computes its
    pairwise amounts ``|sn_me|·K / D'_j``.
    """

    agent: int
    kind: MarketKind
    price: Fraction
    optimal_load: Fraction | None
    amount: int = 0
    scaled: tuple[tuple[int, int], ...] = ()

    def trades(self) -> list[tuple[int, int, Fraction]]:
        """``(seller id, buyer id, energy)`` in input units for this agent's pairs."""
        out = []
        for other, inverse in self.scaled:
            energy = Fraction(self.amount * K, inverse * FIXED)
            pair = (self.agent, other) if self.kind is MarketKind.GENERAL else (other, self.agent)
            out.append((*pair, energy))
        return out


def _union(a: Values, b: Values) -> Values:
    if len(a) != len(b) or any(x & y for x, y in zip(a[:1], b[:1], strict=True)):
        raise RemoteProtocolError("role masks overlap or differ in length")
    return tuple(x | y for x, y in zip(a, b, strict=True))


def _pack(values: Sequence[int], width: int) -> int:
    """Pack non-negative integers below ``2^width`` into one integer, first value lowest."""
    packed = 0
    for v in reversed(values):
        packed = packed << width | v
    return packed


def _unpack(packed: int, width: int, count: int) -> list[int]:
    if packed < 0 or packed >> (width * count):
        raise RemoteProtocolError("a packed list has the wrong size")
    mask = (1 << width) - 1
    return [packed >> (width * i) & mask for i in range(count)]


class PemPeer:
    """An agent of the private PEM: its keys, its randomizer pools and its protocol steps."""

    def __init__(
        self,
        me: int,
        agents: int,
        market: PemMarket | None,
        seed: int,
        endpoint: Endpoint,
        paillier_key: pa.SecretKey,
        dgk_key: dgk.DgkSecretKey,
        rng: random.Random | None = None,
    ) -> None:
        self.me = me
        self.n = agents
        self.market = market
        self.seed = seed
        self.net = endpoint
        self.sk = paillier_key
        self.dsk = dgk_key
        self.rng = rng or random.SystemRandom()
        self.pool = pa.RandomizerPool()
        self.directory: Directory | None = None
        #: Every value this agent saw in clear, by name (the disclosure door's log).
        self.revealed: dict[str, object] = {}

    def rekey(self, paillier_key: pa.SecretKey, dgk_key: dgk.DgkSecretKey) -> None:
        """Replace this agent's keys (a new key lifetime): randomizers made for the old keys are
        dropped, and the public keys must be distributed again before the next window."""
        self.sk, self.dsk = paillier_key, dgk_key
        self.pool.clear()
        self.directory = None

    # -- the disclosure door -------------------------------------------------------------
    def _reveal(self, name: str, value: object) -> None:
        """Record a value this agent learns in clear (names listed in docs/pem.md)."""
        self.revealed[name] = value

    # -- offline --------------------------------------------------------------------------
    def offline(self, window: int) -> None:
        """Precompute randomizers for the keys this window may need (before its data exist).

        Paillier: :data:`PER_KEY` for the key of every other agent in the window's head (they
        stay for later windows). DGK, only for an agent in the head, which may be ``H_r1`` (the
        first seller) or ``H_r2`` (the first buyer): ``compare_bits`` of its own (as ``H_r2``),
        and for the ``H_r2`` it would meet as ``H_r1`` — any head agent's if it comes first in
        the order, else the first agent's (the agents before ``H_r1`` are not sellers, so the
        first of them is ``H_r2`` unless it is off the market: then the comparison pays online,
        a pool miss). DGK values for other keys are dropped, so memory stays bounded.
        """
        d = self._dir()
        head = window_order(self.seed, window, self.n)[:CANDIDATES]
        others = [x for x in head if x != self.me]
        for x in others:
            self.pool.fill(x, PER_KEY, partial(pa.randomizer, d.paillier[x], self.rng))
        dgk_keys: list[int] = []  # the H_r2 this agent may meet as H_r1
        if self.me in head:
            dgk_keys = others if head[0] == self.me else [head[0]]
        keep = {-1 - x for x in dgk_keys} | ({-1 - self.me} if self.me in head else set())
        for owner in self.pool.owners():
            if owner < 0 and owner not in keep:
                self.pool.drop(owner)
        if self.me in head:
            length = compare_bits(self.n)
            for x in dgk_keys:
                self.pool.fill(-1 - x, length, partial(dgk.rerandomizer, d.dgk[x], self.rng))
            self.pool.fill(-1 - self.me, length, partial(dgk.own_rerandomizer, self.dsk, self.rng))

    # -- helpers --------------------------------------------------------------------------
    def _prices(self) -> PemMarket:
        if self.market is None:
            raise RuntimeError("no market prices for the window")
        return self.market

    def _dir(self) -> Directory:
        if self.directory is None:
            raise RuntimeError("public keys not distributed yet")
        return self.directory

    def _encrypt(self, owner: int, m: int) -> int:
        pk = self._dir().paillier[owner]
        return pa.encrypt(pk, m, self.pool.take(owner, lambda: pa.randomizer(pk, self.rng)))

    def _multiplier(self, owner: int) -> Callable[[Values, Values], Values]:
        pk = self._dir().paillier[owner]

        def combine(a: Values, b: Values) -> Values:
            if len(a) != len(b):
                raise RemoteProtocolError("aggregates of different lengths")
            return tuple(pa.add(pk, x, y) for x, y in zip(a, b, strict=True))

        return combine

    async def _gather(
        self, w: int, topic: Topic, members: Members, mine: Values,
        combine: Callable[[Values, Values], Values],
    ) -> Values | None:
        """Aggregate up the tree over ``members``; the root gets the total, others ``None``."""
        parent, children = links(members, self.me)
        acc = mine
        for child in children:
            acc = combine(acc, await self.net.recv(w, topic, child))
        if parent is None:
            return acc
        self.net.send(parent, topic, w, acc)
        return None

    async def _spread(
        self, w: int, topic: Topic, members: Members, value: Values | None
    ) -> Values:
        """Broadcast down the tree over ``members`` from ``members[0]`` (who passes ``value``)."""
        parent, children = links(members, self.me)
        if parent is not None:
            value = await self.net.recv(w, topic, parent)
        if value is None:
            raise RuntimeError("the broadcast root has no value")
        for child in children:
            self.net.send(child, topic, w, value)
        return value

    # -- one window (Protocol 1) ------------------------------------------------------------
    async def run_window(self, w: int, agent: Agent) -> PeerOutput:
        """Run Protocols 1–4 for window ``w`` with this agent's data for the window."""
        check_net(agent.net)
        net = agent.net
        role = (net > 0) - (net < 0)
        order = window_order(self.seed, w, self.n)
        bit = 1 << self.me  # roles travel as bit masks: (present, sellers, buyers)
        mine = (bit, bit if role > 0 else 0, bit if role < 0 else 0)
        up = await self._gather(w, Topic.ROLES_UP, order, mine, _union)
        present, selling, buying = await self._spread(w, Topic.ROLES, order, up)
        if present != (1 << self.n) - 1 or selling & buying or (selling | buying) >> self.n:
            raise RemoteProtocolError("the role vector is malformed")
        sellers, buyers = select(order, selling), select(order, buying)
        if not sellers:
            return PeerOutput(self.me, MarketKind.NO_SELLERS, self._prices().retail, None)
        scaled: tuple[tuple[int, int], ...] = ()
        if not buyers:  # E_b = 0 ≤ E_s is public once the roles are: an extreme market, no trades
            kind, price = MarketKind.EXTREME, self._prices().low
        else:
            d = designate(sellers, buyers, order[:CANDIDATES])
            kind = await self._evaluate(w, order, net, d)
            if kind is MarketKind.GENERAL:
                price = await self._price(w, order, sellers, agent, d)
            else:
                price = self._prices().low
            scaled = await self._distribute(w, sellers, buyers, net, kind, d)
        load = optimal_load(agent, price) if role > 0 else None
        return PeerOutput(self.me, kind, price, load, abs(net), scaled)

    # -- Protocol 2: Private Market Evaluation ---------------------------------------------
    async def _evaluate(self, w: int, order: Members, net: int, d: Designation) -> MarketKind:
        """Protocol 2. One tree over everyone but ``H_r1`` and ``H_r2`` carries both sums as a
        pair ``(Enc_r1(·), Enc_r2(·))``; ``H_r1`` and ``H_r2`` send each other their share."""
        nonce = self.rng.randrange(1 << nonce_bits(self.n))
        demand = max(-net, 0) + nonce  # |sn_j| + r_j for a buyer, r_i for a seller
        supply = max(net, 0) + nonce  # sn_i + r_i for a seller, r_j for a buyer
        members = without(order, frozenset((d.r1, d.r2)))
        general: int | None = None
        if self.me in (d.r1, d.r2):
            other = d.r2 if self.me == d.r1 else d.r1
            mine = supply if self.me == d.r1 else demand  # under the other one's key
            self.net.send(other, Topic.EVAL_DIRECT, w, (self._encrypt(other, mine),))
            cts = list(await self.net.recv(w, Topic.EVAL_DIRECT, other))
            if members:
                total = Topic.EVAL_TOTAL_R1 if self.me == d.r1 else Topic.EVAL_TOTAL_R2
                cts += await self.net.recv(w, total, members[0])
            if len(cts) != (2 if members else 1):
                raise RemoteProtocolError("an evaluation total is malformed")
            masked = self.sk.decrypt(pa.add(self.sk.public, *cts)) + nonce
            self._reveal("masked_demand" if self.me == d.r1 else "masked_supply", masked)
            general = await self._compare(w, masked, d)
        else:
            pair = (self._encrypt(d.r1, demand), self._encrypt(d.r2, supply))
            agg = await self._gather(w, Topic.EVAL_UP, members, pair, self._pair_multiplier(d))
            if agg is not None:
                self.net.send(d.r1, Topic.EVAL_TOTAL_R1, w, agg[:1])
                self.net.send(d.r2, Topic.EVAL_TOTAL_R2, w, agg[1:])
        value = None if general is None else (general,)
        (bit,) = await self._spread(w, Topic.KIND, rooted(order, d.r1), value)
        return MarketKind.GENERAL if bit else MarketKind.EXTREME

    def _pair_multiplier(self, d: Designation) -> Callable[[Values, Values], Values]:
        pk1, pk2 = self._dir().paillier[d.r1], self._dir().paillier[d.r2]

        def combine(a: Values, b: Values) -> Values:
            if len(a) != 2 or len(b) != 2:
                raise RemoteProtocolError("an evaluation aggregate is not a pair")
            return (pa.add(pk1, a[0], b[0]), pa.add(pk2, a[1], b[1]))

        return combine

    async def _compare(self, w: int, masked: int, d: Designation) -> int:
        """The DGK comparison between H_r1 (A, input 2·R_b) and H_r2 (B, input 2·R_s + 1)."""
        length = compare_bits(self.n)
        if self.me == d.r2:
            rands = [self.pool.take(-1 - self.me, lambda: dgk.own_rerandomizer(self.dsk, self.rng))
                     for _ in range(length)]
            self.net.send(d.r1, Topic.CMP_BITS, w,
                          dgk.encrypt_bits(self.dsk, 2 * masked + 1, length, rands))
            blinded = list(await self.net.recv(w, Topic.CMP_BLINDED, d.r1))
            if len(blinded) != length:
                raise RemoteProtocolError("wrong number of blinded comparison values")
            share = dgk.zero_test(self.dsk, blinded)
            self.net.send(d.r1, Topic.CMP_SHARE_B, w, (share,))
            (other,) = await self.net.recv(w, Topic.CMP_SHARE_A, d.r1)
        else:
            bits = list(await self.net.recv(w, Topic.CMP_BITS, d.r2))
            if len(bits) != length:
                raise RemoteProtocolError("wrong number of encrypted comparison bits")
            dpk = self._dir().dgk[d.r2]
            rands = [self.pool.take(-1 - d.r2, lambda: dgk.rerandomizer(dpk, self.rng))
                     for _ in range(length)]
            blinded, share = dgk.blind(dpk, 2 * masked, bits, rands, self.rng)
            self.net.send(d.r2, Topic.CMP_BLINDED, w, blinded)
            (other,) = await self.net.recv(w, Topic.CMP_SHARE_B, d.r2)
            self.net.send(d.r2, Topic.CMP_SHARE_A, w, (share,))
        if other not in (0, 1):
            raise RemoteProtocolError("a comparison share is not a bit")
        result = share ^ other
        self._reveal("market_is_general", result)
        return result

    # -- Protocol 3: Private Pricing ---------------------------------------------------------
    async def _price(
        self, w: int, order: Members, sellers: Members, agent: Agent, d: Designation
    ) -> Fraction:
        hb = d.pricer
        if agent.net > 0:
            mine = (self._encrypt(hb, agent.k), self._encrypt(hb, agent.pricing_term))
            agg = await self._gather(w, Topic.PRICE_UP, sellers, mine, self._multiplier(hb))
            if agg is not None:
                self.net.send(hb, Topic.PRICE_TOTAL, w, agg)
        value: Values | None = None
        if self.me == hb:
            c_k, c_term = await self.net.recv(w, Topic.PRICE_TOTAL, sellers[0])
            sum_k, sum_term = self.sk.decrypt(c_k), self.sk.decrypt(c_term)
            self._reveal("sum_k", sum_k)
            self._reveal("sum_pricing_term", sum_term)
            price = stackelberg_price(self._prices(), sum_k, sum_term)
            value = (price.numerator, price.denominator)
        num, den = await self._spread(w, Topic.PRICE, rooted(order, hb), value)
        if den <= 0:
            raise RemoteProtocolError("the broadcast price is malformed")
        return Fraction(num, den)

    # -- Protocol 4: Private Distribution ----------------------------------------------------
    async def _distribute(
        self, w: int, sellers: Members, buyers: Members, net: int, kind: MarketKind,
        d: Designation,
    ) -> tuple[tuple[int, int], ...]:
        general = kind is MarketKind.GENERAL
        holder = d.holder_general if general else d.holder_extreme
        contributors, receivers = (buyers, sellers) if general else (sellers, buyers)
        amount = abs(net)
        width = ratio_width(self.n)  # D' = E·q' + η < 2^width
        pk = self._dir().paillier[holder]
        slots = (pk.bits // 2 - 2) // width  # slots per plaintext (below p/2)
        per = wire.MAX_VALUE_BYTES * 8 // width  # ratios per wire value of the broadcast
        if slots < 1:
            raise PemInputError("key too small for the Protocol 4 ratios (512 bits or more)")
        if self.me in contributors:
            mine = (self._encrypt(holder, amount),)
            agg = await self._gather(w, Topic.DIST_UP, contributors, mine, self._multiplier(holder))
            if agg is not None:  # the root shifts Enc(E) to every slot: Enc(E·2^(width·k))
                bases = [agg[0]]
                for _ in range(slots - 1):
                    bases.append(pa.scale(pk, bases[-1], 1 << width))
                agg = tuple(bases)
            bases_down = await self._spread(w, Topic.DIST_TOTAL, contributors, agg)
            if len(bases_down) != slots:
                raise RemoteProtocolError("wrong number of shifted totals")
            slot = position(contributors, self.me) % slots
            rho = self.pool.take(holder, lambda: pa.randomizer(pk, self.rng))
            q, eta = noisy_inverse(amount, self.n, self.rng)  # drawn here, unknown to the holder
            noise = 1 + pk.n * (eta << (width * slot))  # Enc(η in slot), randomized by rho
            ratio = pa.scale(pk, bases_down[slot], q) * noise % pk.nsquare * rho % pk.nsquare
            self.net.send(holder, Topic.DIST_RATIO, w, (ratio,))
        value: Values | None = None
        if self.me == holder:
            inverses: list[int] = []
            for start in range(0, len(contributors), slots):
                group = contributors[start : start + slots]
                cts = [(await self.net.recv(w, Topic.DIST_RATIO, j))[0] for j in group]
                packed = self.sk.decrypt(pa.add(pk, *cts))  # one decryption per `slots` ratios
                inverses += _unpack(packed, width, len(group))
            if not all(0 < x < 1 << width for x in inverses):
                raise RemoteProtocolError("a scaled ratio is out of range")
            value = tuple(  # in the contributors' public order, one wire value per chunk
                _pack(inverses[at : at + per], width) for at in range(0, len(inverses), per))
        if self.me not in receivers:
            return ()
        members = rooted(receivers, holder)
        chunks = await self._spread(w, Topic.DIST_RATIOS, members, value)
        if len(chunks) != -(-len(contributors) // per):
            raise RemoteProtocolError("wrong number of packed ratio chunks")
        unpacked = [x for at, chunk in zip(range(0, len(contributors), per), chunks, strict=True)
                    for x in _unpack(chunk, width, len(contributors[at : at + per]))]
        scaled = tuple(zip(contributors, unpacked, strict=True))
        self._reveal("scaled_inverse_ratios", scaled)
        if any(inverse <= 0 for _, inverse in scaled):
            raise RemoteProtocolError("a scaled ratio is not positive")
        return scaled
