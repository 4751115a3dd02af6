"""The market as a running service; assumes the protocol and mechanism layers below it.

Modules, bottom up: ``wire`` (messages and their canonical bytes), ``keys`` (the data
directory: demo CA, TLS and signing keys, registry), ``schedule`` (trading periods),
``intake`` (the pure bid-intake state machine), ``storage`` (durable bids and outputs),
``clearing`` (the narrow door to the secure clearing in :mod:`sealgrid.protocol`),
``api`` (the HTTP shell), ``server`` (one computation server process), ``client``
(household, supplier and grid-operator clients).
"""
