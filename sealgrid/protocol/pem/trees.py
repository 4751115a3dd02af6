"""Aggregation and broadcast trees over public lists of agents; assumes only public inputs.

A tree over ``members`` is the heap layout of fan-out :data:`FANOUT`: ``members[0]`` is the root
and ``members[i]``'s parent is ``members[(i − 1) // FANOUT]``. Every agent derives the same trees
from the window's public order and roles; the caches only spare recomputing them per agent.
"""

from __future__ import annotations

import functools

from sealgrid.protocol.pem.params import FANOUT

Members = tuple[int, ...]


@functools.lru_cache(maxsize=128)
def _positions(members: Members) -> dict[int, int]:
    return {m: i for i, m in enumerate(members)}


def links(members: Members, me: int) -> tuple[int | None, Members]:
    """``me``'s parent (``None`` at the root) and children in the tree over ``members``."""
    pos = _positions(members)[me]
    parent = members[(pos - 1) // FANOUT] if pos else None
    return parent, members[FANOUT * pos + 1 : FANOUT * pos + 1 + FANOUT]


def position(members: Members, me: int) -> int:
    """``me``'s index in ``members``."""
    return _positions(members)[me]


@functools.lru_cache(maxsize=128)
def without(members: Members, excluded: frozenset[int]) -> Members:
    """``members`` less the ``excluded`` agents, order kept."""
    return tuple(m for m in members if m not in excluded)


@functools.lru_cache(maxsize=128)
def rooted(members: Members, root: int) -> Members:
    """``root`` first, then the other ``members`` in order."""
    return (root, *(m for m in members if m != root))


@functools.lru_cache(maxsize=128)
def select(members: Members, mask: int) -> Members:
    """The ``members`` whose bit is set in ``mask``, order kept."""
    return tuple(m for m in members if mask >> m & 1)
