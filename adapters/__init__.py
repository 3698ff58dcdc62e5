"""Concrete edges: event logs, read stores, buses, clock and ids; ``adapters.kafka`` is the
distributed backend. Only the composition root (``api/bootstrap.py``) picks among them."""
