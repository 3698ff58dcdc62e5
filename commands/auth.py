"""Credentials: the admin token, tenant API keys and end-user JWTs.

- API keys look like ``caas_sk_<tenant_id>_<key_id>_<secret>``. Only a SHA-256 hash of the
  secret is recorded (in ``ApiKeyIssued``); the key is shown once. Comparison is constant
  time.
- End-user tokens are HS256 JWTs. Each tenant's signing keys are derived from the server's
  secret key, the tenant id and the key id (``kid``). A tenant rotates its key with
  ``SigningKeyRotated``: new tokens use the new key, tokens of the previous key keep
  verifying until the next rotation, so nobody is logged out by one rotation. ``iss``,
  ``aud``, ``exp``, ``nbf`` and ``iat`` are checked with a small clock-skew allowance; only
  HS256 is accepted (``alg: none`` and algorithm confusion fail). The subject (``sub``) must
  be a user id registered in the token's tenant: a token signed for anyone else is refused,
  whoever holds the key that signed it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import jwt

from commands.service import Commands
from domain.base import ID_PATTERN, Actor, format_time
from domain.errors import UserIsErased

API_KEY_PREFIX = "caas_sk_"
SESSION_PREFIX = "caas_cs_"  # a tenant portal session: caas_cs_<tenant_id>_<session_id>_<secret>
ISSUER = "caas"
LEEWAY_SECONDS = 30


class Unauthenticated(Exception):
    """No valid credential was presented."""


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling, as proven by their credential. The tenant comes only from here."""

    kind: Literal["admin", "tenant", "user"]
    tenant_id: str = ""
    user_id: str = ""
    key_id: str = ""

    @property
    def actor(self) -> Actor:
        if self.kind == "user":
            return Actor("user", self.user_id)
        if self.kind == "tenant":
            return Actor("tenant", self.key_id)
        return Actor("admin", "admin")


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_api_key(tenant_id: str, key_id: str) -> tuple[str, str]:
    """A fresh API key and the hash to record for it."""
    secret = secrets.token_urlsafe(32)
    return f"{API_KEY_PREFIX}{tenant_id}_{key_id}_{secret}", hash_secret(secret)


def new_console_session(tenant_id: str, session_id: str) -> tuple[str, str]:
    """A fresh tenant portal session credential (the cookie's value) and the hash to record."""
    secret = secrets.token_urlsafe(32)
    return f"{SESSION_PREFIX}{tenant_id}_{session_id}_{secret}", hash_secret(secret)


def session_parts(credential: str) -> tuple[str, str, str]:
    """A portal session credential's tenant id, session id and secret (``Unauthenticated`` if malformed)."""
    parts = credential[len(SESSION_PREFIX) :].split("_", 2) if credential.startswith(SESSION_PREFIX) else []
    if len(parts) != 3 or not all(parts):
        raise Unauthenticated("malformed console session")
    return parts[0], parts[1], parts[2]


def erased_user(user_id: str) -> UserIsErased:
    """The refusal of anything an erased user would do or be given (docs/erasure.md)."""
    return UserIsErased(f"user {user_id!r} was erased: it gets no token and can do nothing")


class Authenticator:
    """Turns a bearer credential into a :class:`Principal`, and mints end-user tokens."""

    def __init__(self, service: Commands, *, admin_token: str, secret_key: str) -> None:
        self.service = service
        self._admin = admin_token.encode()
        self._secret = secret_key.encode()
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    def _signing_key(self, tenant_id: str, kid: str) -> bytes:
        return hmac.new(self._secret, f"caas-jwt/{tenant_id}/{kid}".encode(), hashlib.sha256).digest()

    async def authenticate(self, credential: str, now: datetime) -> Principal:
        if not credential:
            raise Unauthenticated("send Authorization: Bearer <admin token | API key | user token>")
        if hmac.compare_digest(credential.encode(), self._admin):
            return Principal("admin")
        if credential.startswith(API_KEY_PREFIX):
            return await self._api_key(credential)
        return await self._user_token(credential, now)

    async def _api_key(self, credential: str) -> Principal:
        parts = credential[len(API_KEY_PREFIX) :].split("_", 2)
        if len(parts) != 3:
            raise Unauthenticated("malformed API key")
        tenant_id, key_id, secret = parts
        try:
            state = await self.service.tenant(tenant_id)
        except ValueError as exc:
            raise Unauthenticated("unknown API key") from exc
        key = state.keys.get(key_id)
        if key is None or not hmac.compare_digest(hash_secret(secret), key.key_hash):
            raise Unauthenticated("unknown API key")
        if key.revoked:
            raise Unauthenticated("this API key was revoked")
        return Principal("tenant", tenant_id=tenant_id, key_id=key_id)

    async def console_session(self, credential: str, now: datetime) -> Principal:
        """The tenant a portal session acts for, as the API key it signed in with: refused once
        signed out, expired, or once that key is revoked."""
        tenant_id, session_id, secret = session_parts(credential)
        try:
            state = await self.service.tenant(tenant_id)
        except ValueError as exc:
            raise Unauthenticated("unknown console session") from exc
        session = state.sessions.get(session_id)
        if session is None or not hmac.compare_digest(hash_secret(secret), session.secret_hash):
            raise Unauthenticated("no such console session (signed out?); sign in again")
        if session.expires_at <= format_time(now):
            raise Unauthenticated("the console session expired; sign in again")
        key = state.keys.get(session.key_id)
        if key is None or key.revoked:
            raise Unauthenticated("the API key this console session signed in with was revoked; sign in again")
        return Principal("tenant", tenant_id=tenant_id, key_id=session.key_id)

    def csrf_token(self, credential: str) -> str:
        """The anti-CSRF token of a portal session: derived from its credential with the server's
        secret, so only a page that was given it (same origin) can send it back."""
        return hmac.new(self._secret, f"caas-console-csrf/{credential}".encode(), hashlib.sha256).hexdigest()

    def csrf_valid(self, credential: str, token: str) -> bool:
        return hmac.compare_digest(self.csrf_token(credential).encode(), token.encode())

    async def mint(self, tenant_id: str, user_id: str, now: datetime, ttl_seconds: int) -> tuple[str, datetime]:
        state = await self.service.tenant(tenant_id)
        kid = state.signing_keys[0]
        expires = now + timedelta(seconds=ttl_seconds)
        claims = {
            "iss": ISSUER,
            "aud": f"caas:{tenant_id}",
            "sub": user_id,
            "tid": tenant_id,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
            "jti": base64.urlsafe_b64encode(secrets.token_bytes(9)).decode(),
        }
        token = jwt.encode(claims, self._signing_key(tenant_id, kid), algorithm="HS256", headers={"kid": kid})
        return token, expires

    async def _user_token(self, token: str, now: datetime) -> Principal:
        cached = self._verified.get(token)
        if cached is not None and cached[1] > now.timestamp():
            principal = cached[0]
            state = await self.service.tenant(principal.tenant_id)
            if principal.key_id in state.verifying_keys:
                await self._not_erased(principal.tenant_id, principal.user_id)
                return principal
            del self._verified[token]
        try:
            header = jwt.get_unverified_header(token)
            unverified: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
            tenant_id = unverified.get("tid")
            kid = header.get("kid")
            if header.get("alg") != "HS256" or not isinstance(tenant_id, str) or not isinstance(kid, str):
                raise Unauthenticated("token not issued by CAAS")
            state = await self.service.tenant(tenant_id)
            if not state.exists or kid not in state.verifying_keys:
                raise Unauthenticated("the token's signing key was rotated out; mint a new token")
            claims = jwt.decode(
                token,
                self._signing_key(tenant_id, kid),
                algorithms=["HS256"],
                audience=f"caas:{tenant_id}",
                issuer=ISSUER,
                leeway=LEEWAY_SECONDS,
                options={"require": ["exp", "iat", "nbf", "sub", "aud", "iss"]},
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"invalid user token: {exc}") from exc
        principal = Principal("user", tenant_id=tenant_id, user_id=await self._subject(tenant_id, claims), key_id=kid)
        self._verified[token] = (principal, float(claims["exp"]) + LEEWAY_SECONDS)
        if len(self._verified) > 50_000:
            self._verified.popitem(last=False)
        return principal

    async def _subject(self, tenant_id: str, claims: dict[str, Any]) -> str:
        """The verified token's user: a registered user of its tenant.

        Checked once per token (the verified-token cache keeps the answer; users are never
        removed), and only after the signature, so made-up tokens cost no lookup.
        """
        user_id = claims["sub"]
        if not isinstance(user_id, str) or not re.fullmatch(ID_PATTERN, user_id):
            raise Unauthenticated("the token's subject (sub) is not a user id")
        user = await self.service.user(tenant_id, user_id)
        if not user.exists:
            raise Unauthenticated(f"the token's user {user_id!r} is not registered in its tenant")
        if user.erased_seq:
            raise erased_user(user_id)
        return user_id

    async def _not_erased(self, tenant_id: str, user_id: str) -> None:
        """Refuse a verified token of a user erased since (docs/erasure.md): ``410 user_erased``."""
        if (await self.service.user(tenant_id, user_id)).erased_seq:
            raise erased_user(user_id)

    def accepted_until(self, token: str) -> float:
        """When an end-user token that :meth:`authenticate` accepted stops being accepted: its
        ``exp`` plus the clock-skew allowance, in seconds since the epoch. An open websocket
        closes then, so it never outlives what HTTP would still accept. Read from what
        :meth:`authenticate` just recorded; decoded again only if that was evicted meanwhile."""
        cached = self._verified.get(token)
        if cached is not None:
            return cached[1]
        claims: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
        return float(claims["exp"]) + LEEWAY_SECONDS
