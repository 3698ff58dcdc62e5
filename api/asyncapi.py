"""The AsyncAPI 3.0 document of ``WS /v1/ws`` (``GET /asyncapi.json``), generated from the frame
models of :mod:`streams.frames`: the document cannot say what the server does not send."""

from __future__ import annotations

import re
from typing import Any

from streams import frames as f

CHANNEL = "/v1/ws"
HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")
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
    "unsubscribed": f.Unsubscribed,
    "presence": f.Presence,
    "typing": f.Typing,
    "pong": f.Pong,
    "error": f.Error,
}

PROTOCOL = """\
Connect with a user token: `WS /v1/ws?token=<user jwt>` (mint one with
`POST /v1/users/{user_id}/tokens`). Frames are JSON text, one object with a `type` per frame.
A bad frame gets an `error` frame and the socket stays open.

This document describes the server: it **receives** the client's frames and **sends** its own.

**Resume.** Every event of a channel carries its `seq`, gapless per channel. Keep the last `seq`
received per channel; after any disconnect, reconnect and send
`{"type": "subscribe", "channel_id": …, "since_seq": <last seq>}`: the server replays every
event after it, from any point of the history (no time limit), then switches to the live tail
with no gap and no duplicate. `since_seq: 0` replays the whole channel.

**Close codes.**
""" + "".join(f"\n- `{code}`: {why}. Client: {todo}." for code, (why, todo) in f.CLOSE_CODES.items())


def asyncapi(host: str = "localhost:8000") -> dict[str, Any]:
    """The document; ``host`` is the server the client reached (the request's ``Host``, if it
    is a host name or address with an optional port)."""
    if not HOST.match(host):
        host = "localhost"
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
                "host": host,
                "protocol": "ws",
                "description": "the CAAS node that served this document (wss behind TLS)",
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
                            "properties": {"token": {"type": "string", "description": "a user token (JWT)"}},
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
