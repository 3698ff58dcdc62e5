"""The AsyncAPI 3.0 document of ``WS /v1/ws`` (``GET /asyncapi.json``), generated from the frame
models of :mod:`streams.frames`: the document cannot say what the server does not send."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from streams import frames as f

CHANNEL = "/v1/ws"
# a host name or a bracketed IPv6 address, and an optional port (``fullmatch``: nothing after it)
HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::(?P<port>[0-9]{1,5}))?"
)
# the websocket scheme of the HTTP scheme a document was fetched with (a TLS proxy says https)
PROTOCOLS = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}
# A client frame the server answers with one frame: the operation's AsyncAPI ``reply``.
REPLIES: dict[type[f.Frame], str] = {f.Subscribe: "subscribed", f.Unsubscribe: "unsubscribed", f.Ping: "pong"}

# One message name per frame model: the client's and the server's ``typing`` differ in shape.
MESSAGES: dict[str, type[f.Frame]] = {
    "subscribe": f.Subscribe,
    "unsubscribe": f.Unsubscribe,
    "typingSent": f.SendTyping,
    "subscribePresence": f.SubscribePresence,
    "ping": f.Ping,
    "subscribed": f.Subscribed,
    "event": f.EventFrame,
    "compactEvent": f.CompactEvent,
    "unsubscribed": f.Unsubscribed,
    "presence": f.Presence,
    "typing": f.Typing,
    "pong": f.Pong,
    "error": f.Error,
    "userErased": f.UserErasedFrame,
}

PROTOCOL = """\
Connect with a user token: `WS /v1/ws?token=<user jwt>` (mint one with
`POST /v1/users/{user_id}/tokens`). Frames are JSON text, one object with a `type` per frame.
A bad frame gets an `error` frame and the socket stays open.

**Compact events.** `WS /v1/ws?token=…&frames=compact` sends each channel event as a `ev` frame
(`CompactEvent`) instead of `event`: the channel, seq, event type, time and payload, about a third
of the bytes. Order, seqs and resume are the same.

This document describes the server: it **receives** the client's frames and **sends** its own.

**Resume.** Every event of a channel carries its `seq`, gapless per channel. Keep the last `seq`
received per channel; after any disconnect, reconnect and send
`{"type": "subscribe", "channel_id": …, "since_seq": <last seq>}`: the server replays every
event after it, from any point of the history (no time limit), then switches to the live tail
with no gap and no duplicate. `since_seq: 0` replays the whole channel.

**Close codes.**
""" + "".join(f"\n- `{code}`: {why}. Client: {todo}." for code, (why, todo) in f.CLOSE_CODES.items())


def server(host: str, scheme: str = "http") -> dict[str, str]:
    """The AsyncAPI server of a node reached at ``host`` (a request's ``Host``) over ``scheme``
    (its URL's): ``wss`` behind TLS. A ``host`` that is not a host name or address with a valid
    port (1-65535) and nothing else is not echoed: the document names ``localhost``."""
    found = HOST.fullmatch(host)
    if found is None or (found["port"] is not None and not 1 <= int(found["port"]) <= 65535):
        host = "localhost"
    return {"host": host, "protocol": PROTOCOLS.get(scheme, "ws")}


def public_server(url: str) -> dict[str, str]:
    """The AsyncAPI server of a configured public URL (``CAAS_PUBLIC_URL``, checked by
    :class:`api.settings.Settings`): its host, ``wss`` for https, and its path if any."""
    parts = urlsplit(url)
    found = {"host": parts.netloc, "protocol": PROTOCOLS[parts.scheme]}
    if parts.path.rstrip("/"):
        found["pathname"] = parts.path.rstrip("/")
    return found


def served(document: dict[str, Any], where: dict[str, str]) -> dict[str, Any]:
    """``document`` (built once) naming ``where`` as its server: only the ``servers`` entry is
    per request; the rest is shared, not copied."""
    return {**document, "servers": {"caas": {**document["servers"]["caas"], **where}}}


def asyncapi(host: str = "localhost:8000", scheme: str = "http") -> dict[str, Any]:
    """The document; ``host`` is the server the client reached over ``scheme`` (see :func:`server`)."""
    schemas: dict[str, Any] = {}

    def ref(model: type[f.Frame]) -> dict[str, str]:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[model.__name__] = schema
        return {"$ref": f"#/components/schemas/{model.__name__}"}

    messages: dict[str, Any] = {}
    for name, model in MESSAGES.items():
        message: dict[str, Any] = {
            "name": name,
            "title": f"{f.frame_type(model)} ({'client' if model in f.CLIENT_FRAMES else 'server'})",
            "contentType": "application/json",
            "payload": ref(model),
        }
        doc = (model.__doc__ or "").strip()
        if doc:
            message["summary"] = " ".join(doc.split())
        if examples := f.examples(model):
            message["examples"] = [{"payload": example} for example in examples]
        messages[name] = message

    def operation(name: str, model: type[f.Frame]) -> dict[str, Any]:
        sends = model in f.SERVER_FRAMES
        op: dict[str, Any] = {
            "action": "send" if sends else "receive",
            "channel": {"$ref": "#/channels/ws"},
            "summary": f"{'Server sends' if sends else 'Client sends'} a `{f.frame_type(model)}` frame",
            "messages": [{"$ref": f"#/channels/ws/messages/{name}"}],
        }
        if model in REPLIES:
            op["reply"] = {
                "channel": {"$ref": "#/channels/ws"},
                "messages": [{"$ref": f"#/channels/ws/messages/{REPLIES[model]}"}],
            }
        return op

    for union, models in (("ClientFrame", f.CLIENT_FRAMES), ("ServerFrame", f.SERVER_FRAMES)):
        schemas[union] = {  # every frame of one direction, told apart by its ``type``
            "description": f"any frame the {'client' if union == 'ClientFrame' else 'server'} sends",
            "oneOf": [{"$ref": f"#/components/schemas/{model.__name__}"} for model in models],
            "discriminator": "type",
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "CAAS websocket",
            "version": "1.0.0",
            "description": PROTOCOL,
        },
        "defaultContentType": "application/json",
        "servers": {
            "caas": {
                **server(host, scheme),
                "description": "CAAS_PUBLIC_URL if the operator set it, else the host and scheme this "
                "document was fetched with (wss over https)",
            }
        },
        "channels": {
            "ws": {
                "address": CHANNEL,
                "title": "Live channel events, presence and typing",
                "description": PROTOCOL,
                "servers": [{"$ref": "#/servers/caas"}],
                "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in MESSAGES},
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "query": {
                            "type": "object",
                            "properties": {
                                "token": {"type": "string", "description": "a user token (JWT)"},
                                "frames": {
                                    "type": "string",
                                    "enum": list(f.FRAME_FORMATS),
                                    "default": "full",
                                    "description": "how channel events are sent: "
                                    + "; ".join(f"{k}: {v}" for k, v in f.FRAME_FORMATS.items()),
                                },
                            },
                            "required": ["token"],
                        },
                        "bindingVersion": "0.1.0",
                    }
                },
                "x-close-codes": {
                    str(code): {"reason": why, "client": todo} for code, (why, todo) in f.CLOSE_CODES.items()
                },
            }
        },
        "operations": {
            f"{'send' if model in f.SERVER_FRAMES else 'receive'}{name[0].upper()}{name[1:]}": operation(name, model)
            for name, model in MESSAGES.items()
        },
        "components": {"messages": messages, "schemas": schemas},
    }
