"""X3DH key agreement (docs/e2e-protocol.md): the initiator's and the responder's halves, both
yielding the shared secret SK and the associated data AD = IK_A ‖ IK_B (Ed25519 publics)."""

from __future__ import annotations

from dataclasses import dataclass

from caas_client.e2e import primitives as p
from caas_client.e2e.errors import MalformedMessage
from caas_client.e2e.keys import Bundle, IdentityKey, KeyPair

INFO = b"CAAS_X3DH"
NO_OPK = 0xFFFFFFFF


@dataclass(frozen=True)
class Agreement:
    sk: bytes
    ad: bytes


@dataclass(frozen=True)
class Initiation(Agreement):
    """What the initiator puts in its prekey messages besides the ratchet header."""

    ephemeral: bytes
    spk_id: int
    opk_id: int  # NO_OPK when the bundle had none


def _sk(dhs: list[bytes]) -> bytes:
    return p.hkdf(b"\xff" * 32 + b"".join(dhs), p.ZERO_SALT, INFO, 32)


def initiate(identity: IdentityKey, bundle: Bundle, ephemeral: KeyPair | None = None) -> Initiation:
    """A's half: checks the bundle's signed prekey signature first (BadSignature otherwise)."""
    bundle.verify()
    if bundle.opk_id == NO_OPK:
        raise MalformedMessage("one-time prekey id 0xFFFFFFFF means none on the wire: the bundle is unusable")
    ek = ephemeral or KeyPair.generate()
    dhs = [
        p.dh(identity.dh_private, bundle.spk_public),
        p.dh(ek.private, p.ed25519_pk_to_x25519(bundle.identity_key)),
        p.dh(ek.private, bundle.spk_public),
    ]
    if bundle.opk_public is not None:
        dhs.append(p.dh(ek.private, bundle.opk_public))
    opk_id = bundle.opk_id if bundle.opk_id is not None and bundle.opk_public is not None else NO_OPK
    return Initiation(_sk(dhs), identity.public + bundle.identity_key, ek.public, bundle.spk_id, opk_id)


def respond(
    identity: IdentityKey, spk: KeyPair, opk: KeyPair | None, their_identity: bytes, their_ephemeral: bytes
) -> Agreement:
    """B's half, from the prekeys the prekey message names."""
    dhs = [
        p.dh(spk.private, p.ed25519_pk_to_x25519(their_identity)),
        p.dh(identity.dh_private, their_ephemeral),
        p.dh(spk.private, their_ephemeral),
    ]
    if opk is not None:
        dhs.append(p.dh(opk.private, their_ephemeral))
    return Agreement(_sk(dhs), their_identity + identity.public)
