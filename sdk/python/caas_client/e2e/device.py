"""One device's end-to-end state: its keys, a Double Ratchet session per peer device, and the
sender keys of its group channels. No network: the SDK's E2E client (e2e/client.py) moves the
bytes; an app persists ``to_json()`` and restores it with ``Device.from_json``.

Peers are addressed as ``"user_id/device_id"`` (:func:`address`)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from caas_client.e2e import primitives as p
from caas_client.e2e import ratchet, x3dh
from caas_client.e2e.errors import (
    DecryptionFailed,
    E2EError,
    IdentityChanged,
    MalformedMessage,
    NoSession,
    ReplayedMessage,
    UnknownPrekey,
)
from caas_client.e2e.keys import Bundle, IdentityKey, KeyPair, OneTimePrekey, SignedPrekey
from caas_client.e2e.ratchet import RatchetState
from caas_client.e2e.sender_keys import OwnSenderKey, ReceivedSenderKey
from caas_client.e2e.wire import NormalMessage, PrekeyMessage, SenderKeyMessage, decode

OLD_SIGNED_PREKEYS = 3  # rotated signed prekeys kept, so sessions started from an older bundle still open
ARCHIVED_SESSIONS = 3  # replaced sessions kept per peer: two devices that started sessions to each other at once
USED_BASE_KEYS = 5000  # ephemeral keys of prekey messages that opened a session: a replay of one is refused


IdentityChangeHook = Callable[[str, bytes, bytes], bool]
"""``(peer, previous identity key, new identity key) -> accept?``: asked when a known device shows
another identity key (a safety-number change), before anything uses the new key."""


def address(user_id: str, device_id: str) -> str:
    return f"{user_id}/{device_id}"


@dataclass
class Session:
    """A Double Ratchet session with one peer device.

    ``pending`` (initiator): X3DH's ephemeral key and prekey ids, sent in every message until the
    peer's first reply. ``their_ephemeral`` (responder): the ephemeral key that opened it, so the
    initiator's further prekey messages reuse this session."""

    state: RatchetState
    their_identity: bytes
    pending: tuple[bytes, int, int] | None = None
    their_ephemeral: bytes | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state.to_json(),
            "their_identity": p.b64(self.their_identity),
            "pending": None if self.pending is None else [p.b64(self.pending[0]), self.pending[1], self.pending[2]],
            "their_ephemeral": None if self.their_ephemeral is None else p.b64(self.their_ephemeral),
        }

    @staticmethod
    def from_json(data: dict[str, Any]) -> Session:
        pending = data["pending"]
        return Session(
            RatchetState.from_json(data["state"]),
            p.unb64(data["their_identity"]),
            None if pending is None else (p.unb64(pending[0]), int(pending[1]), int(pending[2])),
            None if data["their_ephemeral"] is None else p.unb64(data["their_ephemeral"]),
        )


@dataclass
class Device:
    user_id: str
    device_id: str
    identity: IdentityKey
    signed_prekey: SignedPrekey
    old_signed_prekeys: list[SignedPrekey] = field(default_factory=list)
    one_time_prekeys: dict[int, KeyPair] = field(default_factory=dict)
    next_prekey_id: int = 1
    sessions: dict[str, Session] = field(default_factory=dict)
    archived: dict[str, list[Session]] = field(default_factory=dict)  # newest first
    own_sender_keys: dict[str, OwnSenderKey] = field(default_factory=dict)
    # (peer address, channel id, key id) -> chain
    sender_keys: dict[tuple[str, str, int], ReceivedSenderKey] = field(default_factory=dict)
    # ephemeral (base) keys of the prekey messages that started sessions, oldest first (bounded)
    used_base_keys: list[bytes] = field(default_factory=list)
    # the identity key each peer device is known by (first seen, or accepted since): it outlives sessions
    identities: dict[str, bytes] = field(default_factory=dict)
    verified: set[str] = field(default_factory=set)  # peers the app compared safety numbers with
    # None: refuse a new key of a verified peer, accept (and report) any other (docs/sdk/e2e-python.md)
    on_identity_change: IdentityChangeHook | None = field(default=None, repr=False, compare=False)

    @staticmethod
    def create(user_id: str, device_id: str, one_time_prekeys: int = 0, identity: IdentityKey | None = None) -> Device:
        identity = identity or IdentityKey.generate()
        device = Device(user_id, device_id, identity, SignedPrekey.generate(identity, 1))
        device.new_one_time_prekeys(one_time_prekeys)
        return device

    @property
    def address(self) -> str:
        return address(self.user_id, self.device_id)

    # --- keys and what the devices API takes ------------------------------------------------
    def new_one_time_prekeys(self, count: int) -> list[dict[str, Any]]:
        """Makes ``count`` one-time prekeys; their public halves, for ``…/prekeys``."""
        made = []
        for _ in range(count):
            opk = OneTimePrekey(self.next_prekey_id, KeyPair.generate())
            self.one_time_prekeys[opk.key_id] = opk.pair
            self.next_prekey_id += 1
            made.append(opk.public_json())
        return made

    def rotate_signed_prekey(self) -> dict[str, Any]:
        """A new signed prekey (the last few old ones still open sessions); its public form."""
        self.old_signed_prekeys = [self.signed_prekey, *self.old_signed_prekeys][:OLD_SIGNED_PREKEYS]
        self.signed_prekey = SignedPrekey.generate(self.identity, self.signed_prekey.key_id + 1)
        return self.signed_prekey.public_json()

    def registration(self) -> dict[str, Any]:
        """The body of ``PUT /v1/users/{uid}/devices/{device_id}``."""
        return {
            "identity_key": p.b64(self.identity.public),
            "signed_prekey": self.signed_prekey.public_json(),
            "one_time_prekeys": [OneTimePrekey(i, k).public_json() for i, k in sorted(self.one_time_prekeys.items())],
        }

    def bundle(self, one_time_prekey_id: int | None = None) -> Bundle:
        """This device's public bundle, as the server would hand it out (tests and the driver)."""
        opk = self.one_time_prekeys.get(one_time_prekey_id) if one_time_prekey_id is not None else None
        return Bundle(
            self.user_id,
            self.device_id,
            self.identity.public,
            self.signed_prekey.key_id,
            self.signed_prekey.pair.public,
            self.signed_prekey.signature,
            one_time_prekey_id if opk else None,
            opk.public if opk else None,
        )

    # --- pairwise ---------------------------------------------------------------------------
    def has_session(self, peer: str) -> bool:
        return peer in self.sessions

    def start_session(
        self, bundle: Bundle, ephemeral: KeyPair | None = None, ratchet_key: KeyPair | None = None
    ) -> None:
        """X3DH from a fetched bundle (its signed prekey signature is checked: BadSignature)."""
        peer = address(bundle.user_id, bundle.device_id)
        self._check_identity(peer, bundle.identity_key)
        init = x3dh.initiate(self.identity, bundle, ephemeral)
        state = RatchetState.initiator(init.sk, init.ad, bundle.spk_public, ratchet_key)
        self._trust(peer, bundle.identity_key)
        self._install(peer, Session(state, bundle.identity_key, (init.ephemeral, init.spk_id, init.opk_id)))

    # --- identities -------------------------------------------------------------------------
    def _check_identity(self, peer: str, key: bytes) -> None:
        """Raises IdentityChanged when ``peer`` is known by another key and the hook refuses."""
        known = self.identities.get(peer)
        if known is None or known == key:
            return
        accept = self.on_identity_change or (lambda who, _old, _new: who not in self.verified)
        if not accept(peer, known, key):
            raise IdentityChanged(f"{peer} shows a new identity key; refused")

    def _trust(self, peer: str, key: bytes) -> None:
        if self.identities.get(peer) != key:
            self.verified.discard(peer)  # the new key was not compared with anyone
            self.identities[peer] = key

    def mark_verified(self, peer: str, verified: bool = True) -> None:
        """The user compared safety numbers with ``peer`` (its current identity key): by default a
        later key change of that device is refused (IdentityChanged) until this is undone."""
        (self.verified.add if verified else self.verified.discard)(peer)

    def _install(self, peer: str, session: Session) -> None:
        """``session`` becomes the one this device sends with; the one it replaces is archived,
        since the peer may still be sending on it (both started a session at the same time)."""
        old = self.sessions.get(peer)
        if old is not None and old is not session:
            self.archived[peer] = [old, *(s for s in self.archived.get(peer, []) if s is not session)]
            self.archived[peer] = self.archived[peer][:ARCHIVED_SESSIONS]
        elif old is None:
            self.archived[peer] = [s for s in self.archived.get(peer, []) if s is not session]
        self.sessions[peer] = session

    def _candidates(self, peer: str) -> list[Session]:
        current = self.sessions.get(peer)
        return ([current] if current else []) + self.archived.get(peer, [])

    def encrypt(self, peer: str, plaintext: bytes) -> bytes:
        """A prekey message until the peer has answered, a normal message afterwards."""
        session = self.sessions.get(peer)
        if session is None:
            raise NoSession(f"no session with {peer}: start one from its bundle")
        session.state, header, ct = ratchet.encrypt(session.state, plaintext)
        if session.pending is None:
            return NormalMessage(header, ct).encode()
        ek, spk_id, opk_id = session.pending
        return PrekeyMessage(self.identity.public, ek, spk_id, opk_id, header, ct).encode()

    def decrypt(self, peer: str, body: bytes) -> bytes:
        """The plaintext of a pairwise message from ``peer``. A ``sender_key`` distribution in it
        is stored, so that peer's group messages decrypt next."""
        msg = decode(body)
        if isinstance(msg, PrekeyMessage):
            plaintext = self._decrypt_prekey(peer, msg)
        elif isinstance(msg, NormalMessage):
            plaintext = self._decrypt_normal(peer, msg)
        else:
            raise MalformedMessage("a sender-key message is not pairwise: use decrypt_group")
        self._absorb_sender_key(peer, plaintext)
        return plaintext

    def _decrypt_normal(self, peer: str, msg: NormalMessage) -> bytes:
        """With the current session, else an archived one, which then becomes current."""
        candidates = self._candidates(peer)
        if not candidates:
            raise NoSession(f"no session with {peer}")
        first_error: E2EError | None = None
        for session in candidates:
            try:
                session.state, plaintext = ratchet.decrypt(session.state, msg.header, msg.ciphertext)
            except E2EError as exc:
                first_error = first_error or exc
                continue
            session.pending = None
            self._install(peer, session)
            return plaintext
        assert first_error is not None
        raise first_error

    def _decrypt_prekey(self, peer: str, msg: PrekeyMessage) -> bytes:
        for session in self._candidates(peer):
            if session.their_ephemeral == msg.ephemeral:
                if session.their_identity != msg.identity_key:
                    raise DecryptionFailed("a prekey message whose identity key does not match its session")
                session.state, plaintext = ratchet.decrypt(session.state, msg.header, msg.ciphertext)
                self._install(peer, session)
                return plaintext
        spk = next(
            (s for s in [self.signed_prekey, *self.old_signed_prekeys] if s.key_id == msg.spk_id),
            None,
        )
        if msg.ephemeral in self.used_base_keys:  # its session was evicted or forgotten: X3DH must not rerun
            raise ReplayedMessage("a prekey message of a session already started")
        if spk is None:
            raise UnknownPrekey(f"signed prekey {msg.spk_id} is not held (rotated out?)")
        opk = None
        if msg.opk_id != x3dh.NO_OPK:
            opk = self.one_time_prekeys.get(msg.opk_id)
            if opk is None:
                raise UnknownPrekey(f"one-time prekey {msg.opk_id} is used or unknown")
        self._check_identity(peer, msg.identity_key)
        agreed = x3dh.respond(self.identity, spk.pair, opk, msg.identity_key, msg.ephemeral)
        state = RatchetState.responder(agreed.sk, agreed.ad, spk.pair)
        state, plaintext = ratchet.decrypt(state, msg.header, msg.ciphertext)
        self._trust(peer, msg.identity_key)
        self._install(peer, Session(state, msg.identity_key, None, msg.ephemeral))
        if opk is not None:
            del self.one_time_prekeys[msg.opk_id]
        self.used_base_keys = [*self.used_base_keys, msg.ephemeral][-USED_BASE_KEYS:]
        return plaintext

    def forget(self, peer: str) -> None:
        """Drops every session with ``peer`` (its identity key changed: start again from a bundle).
        The identity key it was known by stays: the next one is checked against it."""
        self.sessions.pop(peer, None)
        self.archived.pop(peer, None)

    def identity_of(self, peer: str) -> bytes | None:
        """The identity key the peer device is known by (for safety numbers)."""
        return self.identities.get(peer)

    # --- groups -----------------------------------------------------------------------------
    def encrypt_group(
        self, channel_id: str, plaintext: bytes, recipients: list[str], bundles: Mapping[str, Bundle] | None = None
    ) -> tuple[dict[str, bytes], bytes]:
        """(pairwise ciphertexts carrying this device's sender key to the recipients that lack it,
        the sender-key message). ``recipients`` are every other device of the channel's members,
        this user's included; when one that held the key is gone, a new key (next key id) goes
        to the remaining ones only. ``bundles`` start the sessions that do not exist yet."""
        own = self.own_sender_keys.get(channel_id)
        wanted = set(recipients) - {self.address}
        if own is None or own.recipients - wanted:
            key_id = (own.key_id + 1) % 2**32 if own else secrets.randbelow(2**31)
            own = OwnSenderKey.generate(channel_id, key_id)
            self.own_sender_keys[channel_id] = own
        distribution = own.distribution()
        pairwise = {}
        for peer in sorted(wanted - own.recipients):
            if peer not in self.sessions:
                bundle = (bundles or {}).get(peer)
                if bundle is None:
                    raise NoSession(f"no session with {peer} and no bundle to start one")
                self.start_session(bundle)
            pairwise[peer] = self.encrypt(peer, distribution)
            own.recipients.add(peer)
        return pairwise, own.encrypt(plaintext)

    def decrypt_group(self, peer: str, channel_id: str, body: bytes) -> bytes:
        msg = decode(body)
        if not isinstance(msg, SenderKeyMessage):
            raise MalformedMessage("not a sender-key message")
        held = self.sender_keys.get((peer, channel_id, msg.key_id))
        if held is None:
            raise NoSession(f"no sender key {msg.key_id} of {peer} in {channel_id}")
        new, plaintext = held.decrypt(body)
        self.sender_keys[(peer, channel_id, msg.key_id)] = new
        return plaintext

    def _absorb_sender_key(self, peer: str, plaintext: bytes) -> None:
        try:
            data = json.loads(plaintext)
        except ValueError:
            return
        if isinstance(data, dict) and data.get("type") == "sender_key":
            key = ReceivedSenderKey.from_distribution(data)
            self.sender_keys[(peer, key.channel_id, key.key_id)] = key

    # --- persistence ------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "device_id": self.device_id,
            "identity": p.b64(self.identity.seed),
            "signed_prekey": self.signed_prekey.to_json(),
            "old_signed_prekeys": [s.to_json() for s in self.old_signed_prekeys],
            "one_time_prekeys": {str(i): k.to_json() for i, k in self.one_time_prekeys.items()},
            "next_prekey_id": self.next_prekey_id,
            "sessions": {peer: s.to_json() for peer, s in self.sessions.items()},
            "archived": {peer: [s.to_json() for s in old] for peer, old in self.archived.items()},
            "own_sender_keys": {c: k.to_json() for c, k in self.own_sender_keys.items()},
            "sender_keys": [[peer, c, kid, k.to_json()] for (peer, c, kid), k in self.sender_keys.items()],
            "used_base_keys": [p.b64(k) for k in self.used_base_keys],
            "identities": {peer: p.b64(k) for peer, k in self.identities.items()},
            "verified": sorted(self.verified),
        }

    @staticmethod
    def from_json(data: dict[str, Any], on_identity_change: IdentityChangeHook | None = None) -> Device:
        sessions = {peer: Session.from_json(s) for peer, s in data["sessions"].items()}
        archived = {peer: [Session.from_json(s) for s in old] for peer, old in data.get("archived", {}).items()}
        if "used_base_keys" in data:
            used = [p.unb64(k) for k in data["used_base_keys"]]
        else:  # a state saved before the list existed: the sessions it holds were started by these
            opened = [*sessions.values(), *(s for old in archived.values() for s in old)]
            used = [s.their_ephemeral for s in opened if s.their_ephemeral is not None]
        if "identities" in data:
            identities = {peer: p.unb64(k) for peer, k in data["identities"].items()}
        else:  # saved before: the sessions knew the keys
            identities = {peer: s.their_identity for peer, s in sessions.items()}
        return Device(
            user_id=str(data["user_id"]),
            device_id=str(data["device_id"]),
            identity=IdentityKey(p.unb64(data["identity"])),
            signed_prekey=SignedPrekey.from_json(data["signed_prekey"]),
            old_signed_prekeys=[SignedPrekey.from_json(s) for s in data["old_signed_prekeys"]],
            one_time_prekeys={int(i): KeyPair.from_json(k) for i, k in data["one_time_prekeys"].items()},
            next_prekey_id=int(data["next_prekey_id"]),
            sessions=sessions,
            archived=archived,
            own_sender_keys={c: OwnSenderKey.from_json(k) for c, k in data["own_sender_keys"].items()},
            sender_keys={
                (peer, c, int(kid)): ReceivedSenderKey.from_json(k) for peer, c, kid, k in data["sender_keys"]
            },
            used_base_keys=used,
            identities=identities,
            verified=set(data.get("verified", [])),
            on_identity_change=on_identity_change,
        )
