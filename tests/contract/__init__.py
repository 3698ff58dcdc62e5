"""Contract suites: one abstract test class per port, subclassed once per backend.

A backend passes the contract when its subclass only says how to build a fresh, started
instance; every behaviour is asserted through the port, so a behaviour that differs
between backends fails the same test.
"""
