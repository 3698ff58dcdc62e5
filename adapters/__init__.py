"""Concrete edges: event logs, read stores, clock and ids."""
