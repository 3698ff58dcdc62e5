"""A device's keys: its Ed25519 identity key, X25519 signed and one-time prekeys, and the
public bundle other devices start sessions from (the devices API's JSON shape)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from caas_client.e2e import primitives as p


@dataclass(frozen=True)
class KeyPair:
    """An X25519 key pair."""

    private: bytes
    public: bytes

    @staticmethod
    def generate() -> KeyPair:
        return KeyPair.from_private(p.random_bytes(32))

    @staticmethod
    def from_private(private: bytes) -> KeyPair:
        return KeyPair(private, p.x25519_public(private))

    def to_json(self) -> str:
        return p.b64(self.private)

    @staticmethod
    def from_json(text: str) -> KeyPair:
        return KeyPair.from_private(p.unb64(text))


@dataclass(frozen=True)
class IdentityKey:
    """An Ed25519 key pair (kept as its 32-byte seed); its X25519 form does the DH of X3DH."""

    seed: bytes

    @staticmethod
    def generate() -> IdentityKey:
        return IdentityKey(p.random_bytes(32))

    @cached_property
    def public(self) -> bytes:
        return p.ed25519_keypair(self.seed)[0]

    @cached_property
    def secret(self) -> bytes:
        return p.ed25519_keypair(self.seed)[1]

    @cached_property
    def dh_private(self) -> bytes:
        return p.ed25519_sk_to_x25519(self.secret)

    def sign(self, message: bytes) -> bytes:
        return p.sign(self.secret, message)


@dataclass(frozen=True)
class SignedPrekey:
    key_id: int
    pair: KeyPair
    signature: bytes

    @staticmethod
    def generate(identity: IdentityKey, key_id: int, pair: KeyPair | None = None) -> SignedPrekey:
        pair = pair or KeyPair.generate()
        return SignedPrekey(key_id, pair, identity.sign(pair.public))

    def public_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "public_key": p.b64(self.pair.public), "signature": p.b64(self.signature)}

    def to_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "private": self.pair.to_json(), "signature": p.b64(self.signature)}

    @staticmethod
    def from_json(data: dict[str, Any]) -> SignedPrekey:
        return SignedPrekey(int(data["key_id"]), KeyPair.from_json(data["private"]), p.unb64(data["signature"]))


@dataclass(frozen=True)
class OneTimePrekey:
    key_id: int
    pair: KeyPair

    def public_json(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "public_key": p.b64(self.pair.public)}


@dataclass(frozen=True)
class Bundle:
    """A device's public prekey bundle, as ``POST /v1/users/{uid}/devices/{device_id}/bundle``
    answers it: verify() checks the signed prekey's signature by the identity key."""

    user_id: str
    device_id: str
    identity_key: bytes
    spk_id: int
    spk_public: bytes
    spk_signature: bytes
    opk_id: int | None = None
    opk_public: bytes | None = None

    def verify(self) -> None:
        p.verify(self.identity_key, self.spk_public, self.spk_signature)

    def to_json(self) -> dict[str, Any]:
        opk = None
        if self.opk_id is not None and self.opk_public is not None:
            opk = {"key_id": self.opk_id, "public_key": p.b64(self.opk_public)}
        return {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "identity_key": p.b64(self.identity_key),
            "signed_prekey": {
                "key_id": self.spk_id,
                "public_key": p.b64(self.spk_public),
                "signature": p.b64(self.spk_signature),
            },
            "one_time_prekey": opk,
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Bundle:
        spk = data["signed_prekey"]
        opk = data.get("one_time_prekey")
        return Bundle(
            user_id=str(data["user_id"]),
            device_id=str(data["device_id"]),
            identity_key=p.unb64(data["identity_key"]),
            spk_id=int(spk["key_id"]),
            spk_public=p.unb64(spk["public_key"]),
            spk_signature=p.unb64(spk["signature"]),
            opk_id=int(opk["key_id"]) if opk else None,
            opk_public=p.unb64(opk["public_key"]) if opk else None,
        )
