"""Protocols: the mechanisms computed under MPC or Paillier."""
