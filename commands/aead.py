"""XChaCha20-Poly1305-IETF, as sealing calls it on the hot path: libsodium's own functions from the
library PyNaCl ships (``nacl._sodium``), called *without releasing the GIL*.

PyNaCl's bindings release the GIL around every libsodium call. Sealing a chat message takes about a
microsecond in libsodium, but each release lets the process's other threads (the log's writer, the
read store's) take the GIL, and the event loop then waits for it back: on a loaded server that cost
more throughput than the encryption itself (tests/perf/bench_encryption.py). Holding the GIL for a
microsecond costs the other threads nothing they notice. Where the library cannot be loaded this
way, PyNaCl's bindings are used: the same function, the same bytes.
"""

from __future__ import annotations

import ctypes
import importlib.util
from collections.abc import Callable

from nacl import bindings
from nacl.exceptions import CryptoError

KEY_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_KEYBYTES  # 32
NONCE_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_NPUBBYTES  # 24
TAG_BYTES = bindings.crypto_aead_xchacha20poly1305_ietf_ABYTES  # 16

Cipher = Callable[[bytes, bytes, bytes, bytes], bytes]  # (message, aad, nonce, key) -> result

_ull = ctypes.c_ulonglong


def _functions() -> tuple[Cipher, Cipher] | None:
    spec = importlib.util.find_spec("nacl._sodium")  # the compiled module PyNaCl ships libsodium in
    try:
        assert spec is not None and spec.origin is not None
        lib = ctypes.PyDLL(spec.origin)  # PyDLL: the GIL is held during calls
        enc, dec = lib.crypto_aead_xchacha20poly1305_ietf_encrypt, lib.crypto_aead_xchacha20poly1305_ietf_decrypt
    except (AssertionError, OSError, AttributeError):
        return None
    out, length, text, size = ctypes.c_char_p, ctypes.POINTER(_ull), ctypes.c_char_p, _ull
    # encrypt(c, clen, m, mlen, ad, adlen, nsec, npub, k); decrypt(m, mlen, nsec, c, clen, ad, adlen, npub, k)
    enc.argtypes = [out, length, text, size, text, size, ctypes.c_void_p, text, text]
    dec.argtypes = [out, length, ctypes.c_void_p, text, size, text, size, text, text]
    enc.restype = dec.restype = ctypes.c_int

    def encrypt(message: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes:
        _check(nonce, key)
        out = ctypes.create_string_buffer(len(message) + TAG_BYTES)
        length = _ull(0)
        if enc(out, ctypes.byref(length), message, len(message), aad, len(aad), None, nonce, key) != 0:
            raise CryptoError("Encryption failed.")
        return out.raw[: length.value]

    def decrypt(ciphertext: bytes, aad: bytes, nonce: bytes, key: bytes) -> bytes:
        _check(nonce, key)
        if len(ciphertext) < TAG_BYTES:
            raise CryptoError("Decryption failed.")
        out = ctypes.create_string_buffer(max(len(ciphertext) - TAG_BYTES, 1))
        length = _ull(0)
        if dec(out, ctypes.byref(length), None, ciphertext, len(ciphertext), aad, len(aad), nonce, key) != 0:
            raise CryptoError("Decryption failed.")
        return out.raw[: length.value]

    return encrypt, decrypt


def _check(nonce: bytes, key: bytes) -> None:
    if len(nonce) != NONCE_BYTES or len(key) != KEY_BYTES:
        raise CryptoError(f"XChaCha20-Poly1305 takes a {KEY_BYTES}-byte key and a {NONCE_BYTES}-byte nonce")


_found = _functions()
encrypt: Cipher = _found[0] if _found else bindings.crypto_aead_xchacha20poly1305_ietf_encrypt
decrypt: Cipher = _found[1] if _found else bindings.crypto_aead_xchacha20poly1305_ietf_decrypt
