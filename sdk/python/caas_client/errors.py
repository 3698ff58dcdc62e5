"""Errors the client raises: the server's error envelope, typed."""

from __future__ import annotations

from typing import Any


class CaasError(Exception):
    """An error answer of the API: ``{"error": {"code", "message", "details"}}`` and its status.

    ``code`` is the stable name to branch on (docs/api.md#errors); ``retry_after`` is the
    ``Retry-After`` header in seconds, when the server sent one."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later: rate limits and unavailability."""
        return self.status in (429, 503) or self.status >= 500


class ConnectionLost(Exception):
    """The request may or may not have reached the server (the connection broke, or timed out)."""


class FrameTooBig(Exception):
    """The server closed the socket with 1009: a frame this client sent was over the limit."""


class SocketRefused(Exception):
    """The server refused the socket (1008) and no token-refresh callback could fix it."""


class FrameUnreadable(Exception):
    """An event frame of the channel did not fit the frame model: the channel ends with it rather
    than skip an event (``__cause__`` is the validation error)."""


class SubscriptionRefused(Exception):
    """The server refused the channel's subscription (an ``invalid_request`` naming it, e.g. too
    many subscriptions on the socket): the channel ends with it."""
