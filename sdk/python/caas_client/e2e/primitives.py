"""The primitives of the CAAS E2E protocol: X25519, Ed25519, HKDF/HMAC-SHA256 and
XChaCha20-Poly1305 (libsodium through PyNaCl), and the wire's integer and base64 encodings."""

from __future__ import annotations

import base64
import hashlib
import hmac as _hmac
import os
import struct

from nacl import bindings as sodium
from nacl.exceptions import BadSignatureError, CryptoError
from nacl.exceptions import RuntimeError as NaclRuntimeError

from caas_client.e2e.errors import BadSignature, DecryptionFailed

ZERO_SALT = bytes(32)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return _hmac.new(key, data, hashlib.sha256).digest()


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 (RFC 5869)."""
    prk = hmac_sha256(salt, ikm)
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac_sha256(prk, block + info + bytes([counter]))
        out += block
        counter += 1
    return out[:length]


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def read_u32(data: bytes, offset: int) -> int:
    return int(struct.unpack_from(">I", data, offset)[0])


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"), validate=True)


def random_bytes(n: int) -> bytes:
    return os.urandom(n)


# --- X25519 ------------------------------------------------------------------------------------
def x25519_public(private: bytes) -> bytes:
    return bytes(sodium.crypto_scalarmult_base(private))


def dh(private: bytes, public: bytes) -> bytes:
    """X25519; a low-order public key (an all-zero result) is refused as a failed decryption."""
    try:
        return bytes(sodium.crypto_scalarmult(private, public))
    except (CryptoError, NaclRuntimeError, ValueError) as exc:
        raise DecryptionFailed("invalid X25519 public key") from exc


# --- Ed25519 -----------------------------------------------------------------------------------
def ed25519_keypair(seed: bytes) -> tuple[bytes, bytes]:
    """(public 32, secret 64) from a 32-byte seed."""
    pk, sk = sodium.crypto_sign_seed_keypair(seed)
    return bytes(pk), bytes(sk)


def sign(secret: bytes, message: bytes) -> bytes:
    return bytes(sodium.crypto_sign(message, secret)[: sodium.crypto_sign_BYTES])


def verify(public: bytes, message: bytes, signature: bytes) -> None:
    if len(signature) != sodium.crypto_sign_BYTES or len(public) != 32:
        raise BadSignature("signature or key of the wrong length")
    try:
        sodium.crypto_sign_open(signature + message, public)
    except (BadSignatureError, CryptoError, ValueError) as exc:
        raise BadSignature("the Ed25519 signature does not verify") from exc


def ed25519_pk_to_x25519(public: bytes) -> bytes:
    try:
        return bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(public))
    except (CryptoError, NaclRuntimeError, ValueError) as exc:
        raise DecryptionFailed("invalid Ed25519 identity key") from exc


def ed25519_sk_to_x25519(secret: bytes) -> bytes:
    return bytes(sodium.crypto_sign_ed25519_sk_to_curve25519(secret))


# --- AEAD --------------------------------------------------------------------------------------
def aead_encrypt(key_nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """XChaCha20-Poly1305-IETF under ``key_nonce`` = key (32) ‖ nonce (24)."""
    return bytes(sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(plaintext, aad, key_nonce[32:56], key_nonce[:32]))


def aead_decrypt(key_nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    try:
        return bytes(
            sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(ciphertext, aad, key_nonce[32:56], key_nonce[:32])
        )
    except (CryptoError, ValueError) as exc:
        raise DecryptionFailed("the message does not authenticate") from exc
