"""End-to-end encryption for ``e2e`` channels: X3DH, the Double Ratchet and sender keys with
PyNaCl (libsodium), in the byte format of docs/e2e-protocol.md shared with the TypeScript SDK."""

from caas_client.e2e.device import Device, Session, address
from caas_client.e2e.errors import (
    BadSignature,
    DecryptionFailed,
    E2EError,
    MalformedMessage,
    NoSession,
    ReplayedMessage,
    TooManySkipped,
    UnknownPrekey,
)
from caas_client.e2e.keys import Bundle, IdentityKey, KeyPair

__all__ = [
    "BadSignature",
    "Bundle",
    "DecryptionFailed",
    "Device",
    "E2EError",
    "IdentityKey",
    "KeyPair",
    "MalformedMessage",
    "NoSession",
    "ReplayedMessage",
    "Session",
    "TooManySkipped",
    "UnknownPrekey",
    "address",
]
