"""The market as a running service; assumes the protocol and mechanism layers below it.

Modules, bottom up: ``wire`` (messages and their canonical bytes), ``keys`` (the data
directory, the registry with the servers' pinned certificates), ``setup`` (each party's
keygen, the registry built from public parts only), ``schedule`` (trading periods),
``intake`` (the pure bid-intake state machine), ``storage`` (durable bids and outputs),
``clearing`` (the narrow door to the secure clearing in :mod:`sealgrid.protocol`),
``api`` (the HTTP shell), ``server`` (one computation server process), ``client``
(household, supplier and grid-operator clients).
"""
