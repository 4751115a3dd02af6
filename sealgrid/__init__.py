"""sealgrid: a privacy-preserving local electricity market.

Layers, each importing only those below it: ``mechanism`` (pure integer maths, the plaintext
reference) → ``protocol`` (the same under MPC or Paillier) → ``service`` → ``cli``.

The front door for Python (:mod:`sealgrid.frames`, pandas DataFrames in and out; prices in
¢/kWh, energy in kWh)::

    import pandas as pd, sealgrid
    bids = pd.read_csv("examples/bids.csv")
    allocations = sealgrid.clear(bids, price_floor=4, price_ceiling=20)
    allocations.attrs["price_ct_per_kwh"]   # '11'

``sealgrid.pem(agents, …)`` and ``sealgrid.settle(meters, tariffs, clearing=allocations)`` the
same way. They are imported on first use, so ``import sealgrid`` stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["InputError", "__version__", "clear", "pem", "settle"]


def __getattr__(name: str) -> Any:
    if name in ("clear", "pem", "settle", "InputError"):
        from sealgrid import frames

        return getattr(frames, name)
    raise AttributeError(f"module 'sealgrid' has no attribute {name!r}")
