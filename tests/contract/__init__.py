"""Contract suites: one abstract test class per port, subclassed once per backend.

A backend passes the contract when its subclass only says how to build a fresh, started
instance; every behaviour is asserted through the port, so a behaviour that differs
between backends fails the same test.
"""

import pytest

# The contract modules are imported by the per-backend test modules; let pytest explain their asserts.
pytest.register_assert_rewrite("tests.contract.eventlog_contract", "tests.contract.readstore_contract")
