"""End-to-end encryption for ``e2e`` channels: X3DH, the Double Ratchet and sender keys with
PyNaCl (libsodium), in the byte format of docs/e2e-protocol.md shared with the TypeScript SDK."""

from caas_client.e2e.client import Decrypted, E2EClient
from caas_client.e2e.device import Device, Session, address
from caas_client.e2e.errors import (
    BadSignature,
    DecryptionFailed,
    E2EError,
    IdentityChanged,
    MalformedMessage,
    NoSession,
    ReplayedMessage,
    TooManySkipped,
    UnknownPrekey,
)
from caas_client.e2e.keys import Bundle, IdentityKey, KeyPair
from caas_client.e2e.store import DeviceStore, FileDeviceStore, MemoryDeviceStore

__all__ = [
    "BadSignature",
    "Bundle",
    "Decrypted",
    "DecryptionFailed",
    "Device",
    "DeviceStore",
    "E2EClient",
    "E2EError",
    "FileDeviceStore",
    "IdentityChanged",
    "IdentityKey",
    "KeyPair",
    "MalformedMessage",
    "MemoryDeviceStore",
    "NoSession",
    "ReplayedMessage",
    "Session",
    "TooManySkipped",
    "UnknownPrekey",
    "address",
]
