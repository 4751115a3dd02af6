"""Golden vectors of the byte formats and of the tiny cryptographic keys (see make.py)."""
