"""Benchmark: the Python SDK's Double Ratchet, encrypt + decrypt per message, beside raw
libsodium secretbox (crypto_secretbox + crypto_secretbox_open) of the same plaintext.

No server: the cost is the client's. Rounds interleave the variants in one process and report CPU
µs per message (time.process_time) and same-run ratios:
- ``ratchet_chain``: one sender, the receiver in step (a symmetric-key ratchet step per message);
- ``ratchet_turns``: the two sides take turns (a DH ratchet step, two X25519, on every message);
- ``sender_key``: a group message (chain step, AEAD, Ed25519 sign and verify);
- ``secretbox``: XSalsa20-Poly1305 with a fresh random nonce, nothing else.

    .venv/bin/python -m tests.perf.bench_e2e [--messages 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nacl import bindings as sodium

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sdk" / "python"))
from caas_client.e2e import Device
from caas_client.e2e.sender_keys import OwnSenderKey, ReceivedSenderKey

from tests.perf.common import machine

PLAINTEXT = json.dumps(
    {"type": "message", "text": "hello, this is a chat message " + "x" * 70, "attachments": []}
).encode()


def sessions() -> tuple[Device, Device]:
    alice, bob = Device.create("alice", "a1"), Device.create("bob", "b1", 1)
    alice.start_session(bob.bundle(1))
    bob.decrypt("alice/a1", alice.encrypt("bob/b1", b"open"))
    alice.decrypt("bob/b1", bob.encrypt("alice/a1", b"answer"))
    return alice, bob


def ratchet_chain(n: int) -> float:
    alice, bob = sessions()
    start = time.process_time()
    for _ in range(n):
        assert bob.decrypt("alice/a1", alice.encrypt("bob/b1", PLAINTEXT)) == PLAINTEXT
    return time.process_time() - start


def ratchet_turns(n: int) -> float:
    alice, bob = sessions()
    start = time.process_time()
    for i in range(n):
        a, b = (alice, bob) if i % 2 else (bob, alice)
        assert b.decrypt(a.address, a.encrypt(b.address, PLAINTEXT)) == PLAINTEXT
    return time.process_time() - start


def sender_key(n: int) -> float:
    own = OwnSenderKey.generate("room", 1)
    held = ReceivedSenderKey.from_distribution(json.loads(own.distribution()))
    start = time.process_time()
    for _ in range(n):
        held, out = held.decrypt(own.encrypt(PLAINTEXT))
        assert out == PLAINTEXT
    return time.process_time() - start


def secretbox(n: int) -> float:
    key = os.urandom(32)
    start = time.process_time()
    for _ in range(n):
        nonce = os.urandom(24)
        box = sodium.crypto_secretbox(PLAINTEXT, nonce, key)
        assert sodium.crypto_secretbox_open(box, nonce, key) == PLAINTEXT
    return time.process_time() - start


VARIANTS: dict[str, Callable[[int], float]] = {
    "ratchet_chain": ratchet_chain,
    "ratchet_turns": ratchet_turns,
    "sender_key": sender_key,
    "secretbox": secretbox,
}


def run(messages: int = 2000, rounds: int = 5) -> dict[str, object]:
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    for _ in range(rounds):
        for name, variant in VARIANTS.items():
            samples[name].append(variant(messages) / messages * 1e6)
    us = {name: round(statistics.median(v), 2) for name, v in samples.items()}
    return {
        "messages_per_round": messages,
        "rounds": rounds,
        "plaintext_bytes": len(PLAINTEXT),
        "cpu_us_per_message_median": us,
        "cpu_us_per_message_rounds": {name: [round(x, 2) for x in v] for name, v in samples.items()},
        "ratio_to_secretbox": {name: round(us[name] / us["secretbox"], 1) for name in VARIANTS},
        "loadavg": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(json.dumps({"machine": machine(), "e2e": run(args.messages, args.rounds)}, indent=2))


if __name__ == "__main__":
    main()
