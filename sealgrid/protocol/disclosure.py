"""The one door through which the secure clearing opens values; assumes the caller is a server.

Every value any sealgrid protocol opens passes through :func:`reveal` (a secret-shared MPyC
value) or :func:`reveal_shares` (this party's NumPy shares, opened to every server). Each call
names what it opens; the name must be in :data:`DISCLOSED`, and ``docs/privacy.md`` lists the
same names with the reason each is harmless. A test keeps the three in step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

#: name → why opening it is harmless (kept equal to docs/privacy.md by a test).
DISCLOSED: dict[str, str] = {
    "challenge_seed": "fresh server randomness, independent of every bid",
    "validity_check": "0 for every well-formed bid; only pass/fail is published",
    "degree_check": "a bid combination plus a uniform random mask: uniform on its own",
    "masked_quantities": "q·r + 0 per bid, r fresh and random: uniform for every bid with q ≥ 1",
    "trade": "whether the period trades, the published status",
    "clearing_level": "the clearing level k*, the published price (opened only on a trade)",
    "masked_demand_at_clearing": "D(k*)·r + 0, r fresh and random: uniform, as D(k*) ≥ 1",
    "masked_supply_at_clearing": "S(k*)·r + 0, r fresh and random: uniform, as S(k*) ≥ 1",
    "shuffled_identities": "the households that bid in a period, in an order no server knows",
    "credential_checks": "(κ − κ_h)·r + 0: 0 for a bid under its own household's name",
    "rationing_ratios": "V/D(k*) and V/S(k*), each known to that side's accepted households "
                        "and to their suppliers; neither V nor D nor S",
    "claim_challenge_seed": "fresh server randomness, independent of every claim",
    "claim_checks": "three random folds of a claim's checks times a fresh random r, plus a "
                    "zero mask: 0 when honest, uniform on the non-zero elements otherwise",
}


class UndeclaredDisclosure(RuntimeError):
    """Code tried to open a value that docs/privacy.md does not list (a local bug)."""


#: Names opened so far in this process, in order (tests read it).
LOG: list[str] = []


def _admit(name: str) -> None:
    if name not in DISCLOSED:
        raise UndeclaredDisclosure(f"opening {name!r} is not declared in the disclosure table")
    LOG.append(name)


async def reveal(name: str, value: Any, output: Callable[[Any], Awaitable[Any]]) -> Any:
    """Open the secret-shared ``value`` to every server (``output`` is MPyC's ``mpc.output``)."""
    _admit(name)
    return await output(value)


async def reveal_shares(
    name: str | tuple[str, ...], own: np.ndarray,
    all_to_all: Callable[[np.ndarray], Awaitable[list[np.ndarray]]],
) -> list[np.ndarray]:
    """Open sharings held as NumPy arrays: send ``own`` to all servers, return every share.

    ``name`` may be a tuple naming the rows of ``own`` when several are opened in one message.
    """
    for n in (name,) if isinstance(name, str) else name:
        _admit(n)
    return await all_to_all(own.reshape(-1))
