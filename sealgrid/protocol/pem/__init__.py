"""PEM computed by the households themselves (paper xie2020 §IV); assumes semi-honest agents.

Protocols 1–4 over Paillier (phe + gmpy2) with a DGK secure comparison; see docs/pem.md for
what each step reveals. Entry point: :func:`run_pem_secure`.
"""

from sealgrid.protocol.pem.harness import PemStats
from sealgrid.protocol.pem.runner import run_pem_secure

__all__ = ["PemStats", "run_pem_secure"]
