"""CAAS for analysts: the event log as files and Arrow tables (``caas.analytics``).

The command line's ``caas export`` writes what :mod:`caas.export` builds; ``caas replay`` and the
exports share the row formats of :mod:`caas.rows`.
"""
