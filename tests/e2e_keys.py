"""Real key material for the devices API in tests (docs/e2e.md): an Ed25519 identity key, an
X25519 signed prekey signed by it, X25519 one-time prekeys, all standard base64 as on the wire."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from nacl.public import PrivateKey
from nacl.signing import SigningKey


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def x25519_public() -> str:
    return b64(bytes(PrivateKey.generate().public_key))


@dataclass
class Device:
    """One installation: its identity key and the ids of the keys it uploaded so far."""

    identity: SigningKey = field(default_factory=SigningKey.generate)
    next_key_id: int = 1

    @property
    def identity_key(self) -> str:
        return b64(bytes(self.identity.verify_key))

    def signed_prekey(self, key_id: int = 1) -> dict[str, Any]:
        public = bytes(PrivateKey.generate().public_key)
        return {"key_id": key_id, "public_key": b64(public), "signature": b64(self.identity.sign(public).signature)}

    def prekeys(self, n: int) -> list[dict[str, Any]]:
        keys = [{"key_id": self.next_key_id + i, "public_key": x25519_public()} for i in range(n)]
        self.next_key_id += n
        return keys

    def bundle(self, prekeys: int = 0) -> dict[str, Any]:
        """The body of ``PUT /v1/users/{uid}/devices/{device_id}``."""
        return {
            "identity_key": self.identity_key,
            "signed_prekey": self.signed_prekey(),
            "one_time_prekeys": self.prekeys(prekeys),
        }


def envelope(sender_device: str, recipients: list[tuple[str, str]], group: bool = False) -> dict[str, Any]:
    """An e2e ciphertext envelope with opaque ciphertexts (the server never reads them)."""
    found: dict[str, Any] = {
        "sender_device": sender_device,
        "ciphertexts": [
            {"user_id": u, "device_id": d, "body": b64(b"\x01\x02" + f"{u}/{d}".encode() + bytes(40))}
            for u, d in recipients
        ],
    }
    if group:
        found["group"] = b64(b"\x01\x03" + bytes(80))
    return found
