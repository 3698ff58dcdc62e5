"""Ids drawn from the pre-fetched random pool are unique across processes, forked ones too."""

from __future__ import annotations

import os

from adapters.ids import random_hex, uuid7

DRAWN = 16


def test_a_forked_process_hands_out_ids_its_parent_does_not() -> None:
    uuid7()  # the pool is filled: what is left of it is copied into the child
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids to the parent, then out without running the parent's cleanup
        try:
            os.write(write, " ".join([*(random_hex() for _ in range(DRAWN)), uuid7()]).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and len(child) == DRAWN + 1
    parent = [*(random_hex() for _ in range(DRAWN)), uuid7()]
    assert not set(child) & set(parent)
