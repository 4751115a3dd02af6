"""sealgrid: a privacy-preserving local electricity market.

Layers, each importing only those below it: ``mechanism`` (pure integer maths, the plaintext
reference) → ``protocol`` (the same under MPC or Paillier) → ``service`` → ``cli``.
"""

__version__ = "0.1.0"
