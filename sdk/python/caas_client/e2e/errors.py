"""Errors of the end-to-end encryption layer: each names the rule a message broke."""

from __future__ import annotations


class E2EError(Exception):
    """Base class: a message could not be encrypted or decrypted."""


class MalformedMessage(E2EError):
    """The bytes are not a message of the CAAS wire format (docs/e2e-protocol.md)."""


class DecryptionFailed(E2EError):
    """Authentication failed: the ciphertext, its header or its associated data was altered, or
    the message was made for another session. The session's state is left unchanged."""


class ReplayedMessage(E2EError):
    """The message's key was already used (or dropped): every message decrypts once."""


class TooManySkipped(E2EError):
    """The message lies more than MAX_SKIP messages ahead of its chain."""


class BadSignature(E2EError):
    """A signed prekey's or a sender-key message's Ed25519 signature does not verify."""


class UnknownPrekey(E2EError):
    """A prekey message names a signed or one-time prekey this device does not hold (used,
    expired, or never issued)."""


class NoSession(E2EError):
    """No pairwise session or sender key exists for the message's sender."""


class IdentityChanged(E2EError):
    """A known device showed another identity key and the app's ``on_identity_change`` hook (by
    default: refuse for a device the app marked verified) refused it. Nothing was changed."""
