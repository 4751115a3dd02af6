"""PEM computed by the households themselves (paper xie2020 §IV); assumes semi-honest agents.

Protocols 1–4 over Paillier (phe + gmpy2) with a DGK secure comparison; see docs/pem.md for
what each step reveals. Entry points: :class:`PemSession` (agents that live across windows:
keys once per key lifetime, pools refilled between windows) and :func:`run_pem_secure` (one
window).
"""

from sealgrid.protocol.pem.harness import PemStats
from sealgrid.protocol.pem.runner import run_pem_secure
from sealgrid.protocol.pem.session import DAY_WINDOWS, PemSession
from sealgrid.protocol.pem.windows import WindowStats

__all__ = ["DAY_WINDOWS", "PemSession", "PemStats", "WindowStats", "run_pem_secure"]
