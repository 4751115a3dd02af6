"""A day of a neighbourhood: data, agents, runs, metrics, plots and report; assumes no network.

Layers: this package imports :mod:`sealgrid.mechanism` (and, lazily, :mod:`sealgrid.protocol`
for ``secure=True``), never the service or the command line.
"""
