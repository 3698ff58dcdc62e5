"""The Double Ratchet (Signal's specification) with the CAAS KDFs and header.

``encrypt`` and ``decrypt`` work on a copy of the state and return the new state only when the
message authenticated, so a forged or altered message never changes a session. Skipped message
keys are kept (at most MAX_SKIP ahead per chain, MAX_STORED in all); a used key is deleted, so
a replay is refused with ReplayedMessage."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from caas_client.e2e import primitives as p
from caas_client.e2e.errors import DecryptionFailed, MalformedMessage, NoSession, ReplayedMessage, TooManySkipped
from caas_client.e2e.keys import KeyPair

MAX_SKIP = 1000
MAX_STORED = 2000  # skipped keys kept in all chains; the oldest go first
OLD_CHAINS = 20  # earlier remote ratchet keys remembered, to name a late message's failure a replay
HEADER_LEN = 40


@dataclass(frozen=True)
class Header:
    dh: bytes
    pn: int
    n: int

    def encode(self) -> bytes:
        return self.dh + p.u32(self.pn) + p.u32(self.n)

    @staticmethod
    def decode(data: bytes) -> Header:
        if len(data) != HEADER_LEN:
            raise MalformedMessage("a ratchet header is 40 bytes")
        return Header(data[:32], p.read_u32(data, 32), p.read_u32(data, 36))


def kdf_rk(rk: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    out = p.hkdf(dh_out, rk, b"CAAS_Ratchet", 64)
    return out[:32], out[32:]


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    """(next chain key, message key)."""
    return p.hmac_sha256(ck, b"\x02"), p.hmac_sha256(ck, b"\x01")


def message_key_nonce(mk: bytes) -> bytes:
    return p.hkdf(mk, p.ZERO_SALT, b"CAAS_MessageKeys", 56)


@dataclass
class RatchetState:
    dhs: KeyPair
    dhr: bytes | None
    rk: bytes
    cks: bytes | None
    ckr: bytes | None
    ns: int = 0
    nr: int = 0
    pn: int = 0
    ad: bytes = b""
    skipped: dict[tuple[bytes, int], bytes] = field(default_factory=dict)
    old_dhr: list[bytes] = field(default_factory=list)

    def copy(self) -> RatchetState:
        """A copy to change (bytes and key pairs are immutable: the containers are copied)."""
        return replace(self, skipped=dict(self.skipped), old_dhr=list(self.old_dhr))

    @staticmethod
    def initiator(sk: bytes, ad: bytes, their_ratchet_key: bytes, own: KeyPair | None = None) -> RatchetState:
        dhs = own or KeyPair.generate()
        rk, cks = kdf_rk(sk, p.dh(dhs.private, their_ratchet_key))
        return RatchetState(dhs=dhs, dhr=their_ratchet_key, rk=rk, cks=cks, ckr=None, ad=ad)

    @staticmethod
    def responder(sk: bytes, ad: bytes, own_spk: KeyPair) -> RatchetState:
        return RatchetState(dhs=own_spk, dhr=None, rk=sk, cks=None, ckr=None, ad=ad)

    def to_json(self) -> dict[str, Any]:
        def opt(b: bytes | None) -> str | None:
            return None if b is None else p.b64(b)

        return {
            "dhs": self.dhs.to_json(),
            "dhr": opt(self.dhr),
            "rk": p.b64(self.rk),
            "cks": opt(self.cks),
            "ckr": opt(self.ckr),
            "ns": self.ns,
            "nr": self.nr,
            "pn": self.pn,
            "ad": p.b64(self.ad),
            "skipped": [[p.b64(k[0]), k[1], p.b64(mk)] for k, mk in self.skipped.items()],
            "old_dhr": [p.b64(k) for k in self.old_dhr],
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> RatchetState:
        def opt(s: str | None) -> bytes | None:
            return None if s is None else p.unb64(s)

        return RatchetState(
            dhs=KeyPair.from_json(data["dhs"]),
            dhr=opt(data["dhr"]),
            rk=p.unb64(data["rk"]),
            cks=opt(data["cks"]),
            ckr=opt(data["ckr"]),
            ns=int(data["ns"]),
            nr=int(data["nr"]),
            pn=int(data["pn"]),
            ad=p.unb64(data["ad"]),
            skipped={(p.unb64(k), int(n)): p.unb64(mk) for k, n, mk in data["skipped"]},
            old_dhr=[p.unb64(k) for k in data["old_dhr"]],
        )


def encrypt(state: RatchetState, plaintext: bytes) -> tuple[RatchetState, bytes, bytes]:
    """(new state, header bytes, AEAD ciphertext)."""
    if state.cks is None:
        raise NoSession("a responder's session cannot send before it has received a message")
    new = state.copy()
    new.cks, mk = kdf_ck(state.cks)
    header = Header(new.dhs.public, new.pn, new.ns).encode()
    new.ns += 1
    return new, header, p.aead_encrypt(message_key_nonce(mk), plaintext, new.ad + header)


def decrypt(
    state: RatchetState, header_bytes: bytes, ciphertext: bytes, next_key: KeyPair | None = None
) -> tuple[RatchetState, bytes]:
    """(new state, plaintext); the state passed in is never changed. ``next_key`` fixes the
    ratchet key pair a DH ratchet step makes (known-answer vectors); a fresh one otherwise."""
    header = Header.decode(header_bytes)
    aad = state.ad + header_bytes
    new = state.copy()
    mk = new.skipped.pop((header.dh, header.n), None)
    if mk is None:
        if header.dh in new.old_dhr or (header.dh == new.dhr and header.n < new.nr):
            raise ReplayedMessage("this message was already decrypted (or its key was dropped)")
        if header.dh != new.dhr:
            _skip(new, header.pn)
            _dh_ratchet(new, header, next_key or KeyPair.generate())
        _skip(new, header.n)
        if new.ckr is None:
            raise DecryptionFailed("no receiving chain for this message")
        new.ckr, mk = kdf_ck(new.ckr)
        new.nr += 1
    plaintext = p.aead_decrypt(message_key_nonce(mk), ciphertext, aad)
    return new, plaintext


def _skip(state: RatchetState, until: int) -> None:
    if state.ckr is None:
        return
    if until > state.nr + MAX_SKIP:
        raise TooManySkipped(f"the message is {until - state.nr} messages ahead (at most {MAX_SKIP})")
    assert state.dhr is not None
    while state.nr < until:
        state.ckr, mk = kdf_ck(state.ckr)
        state.skipped[(state.dhr, state.nr)] = mk
        state.nr += 1
    while len(state.skipped) > MAX_STORED:
        del state.skipped[next(iter(state.skipped))]


def _dh_ratchet(state: RatchetState, header: Header, next_key: KeyPair) -> None:
    if state.dhr is not None:
        state.old_dhr = [*state.old_dhr, state.dhr][-OLD_CHAINS:]
    state.pn = state.ns
    state.ns = 0
    state.nr = 0
    state.dhr = header.dh
    state.rk, state.ckr = kdf_rk(state.rk, p.dh(state.dhs.private, state.dhr))
    state.dhs = next_key
    state.rk, state.cks = kdf_rk(state.rk, p.dh(state.dhs.private, state.dhr))
