"""The pure core of CAAS: commands, events, aggregates and their rules.

Nothing in this package performs I/O or imports a framework other than pydantic.
"""

from domain import upcasters as upcasters  # registers the upcasters before any event is read
