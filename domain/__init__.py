"""The pure core of CAAS: commands, events, aggregates and their rules.

Nothing in this package performs I/O or imports a framework other than pydantic.
"""
