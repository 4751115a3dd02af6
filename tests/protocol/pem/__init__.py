"""Tests of the private PEM (Paillier + DGK among agents)."""
