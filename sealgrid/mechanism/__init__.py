"""The market mechanisms in plaintext: pure integer maths, no cryptography, no I/O.

Every secure protocol in :mod:`sealgrid.protocol` is checked against these functions.
"""
