"""The message bytes of docs/e2e-protocol.md: version 0x01, then a type byte."""

from __future__ import annotations

from dataclasses import dataclass

from caas_client.e2e import primitives as p
from caas_client.e2e.errors import MalformedMessage
from caas_client.e2e.ratchet import HEADER_LEN

VERSION = 0x01
PREKEY = 0x01
NORMAL = 0x02
SENDER_KEY = 0x03
AEAD_TAG = 16
SIGNATURE = 64


@dataclass(frozen=True)
class PrekeyMessage:
    identity_key: bytes
    ephemeral: bytes
    spk_id: int
    opk_id: int
    header: bytes
    ciphertext: bytes

    def encode(self) -> bytes:
        return (
            bytes([VERSION, PREKEY])
            + self.identity_key
            + self.ephemeral
            + p.u32(self.spk_id)
            + p.u32(self.opk_id)
            + self.header
            + self.ciphertext
        )


@dataclass(frozen=True)
class NormalMessage:
    header: bytes
    ciphertext: bytes

    def encode(self) -> bytes:
        return bytes([VERSION, NORMAL]) + self.header + self.ciphertext


@dataclass(frozen=True)
class SenderKeyMessage:
    key_id: int
    iteration: int
    ciphertext: bytes
    signature: bytes

    @staticmethod
    def signed_part(key_id: int, iteration: int, ciphertext: bytes) -> bytes:
        return bytes([VERSION, SENDER_KEY]) + p.u32(key_id) + p.u32(iteration) + ciphertext

    def encode(self) -> bytes:
        return self.signed_part(self.key_id, self.iteration, self.ciphertext) + self.signature


def decode(data: bytes) -> PrekeyMessage | NormalMessage | SenderKeyMessage:
    if len(data) < 2 or data[0] != VERSION:
        raise MalformedMessage("not a version 1 CAAS E2E message")
    kind, body = data[1], data[2:]
    if kind == PREKEY:
        if len(body) < 72 + HEADER_LEN + AEAD_TAG:
            raise MalformedMessage("prekey message too short")
        return PrekeyMessage(
            body[:32], body[32:64], p.read_u32(body, 64), p.read_u32(body, 68), body[72:112], body[112:]
        )
    if kind == NORMAL:
        if len(body) < HEADER_LEN + AEAD_TAG:
            raise MalformedMessage("message too short")
        return NormalMessage(body[:HEADER_LEN], body[HEADER_LEN:])
    if kind == SENDER_KEY:
        if len(body) < 8 + AEAD_TAG + SIGNATURE:
            raise MalformedMessage("sender-key message too short")
        return SenderKeyMessage(p.read_u32(body, 0), p.read_u32(body, 4), body[8:-SIGNATURE], body[-SIGNATURE:])
    raise MalformedMessage(f"unknown message type {kind}")
