"""The websocket reference: an AsyncAPI 3 document rendered as Markdown, one section per message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from docsite.markdown import JSON, Schemas, code, example, sentence, slug, table

DIRECTIONS = {
    "receive": ("Client to server", "Frames the client sends (the server receives them)."),
    "send": ("Server to client", "Frames the server sends."),
}


def anchor(name: str) -> str:
    return "msg-" + slug(name)


def messages_by_action(document: JSON, schemas: Schemas) -> dict[str, list[tuple[str, JSON]]]:
    """``{"receive": [(name, message)…], "send": […]}``: each operation's messages, in the
    document's order, each message once per direction."""
    found: dict[str, list[tuple[str, JSON]]] = {}
    for operation in document.get("operations", {}).values():
        action = str(operation.get("action", ""))
        for ref in operation.get("messages", []):
            message = schemas.resolve(ref)
            name = message_name(schemas, ref)
            if all(name != known for known, _ in found.get(action, [])):
                found.setdefault(action, []).append((name, message))
    return found


def message_name(schemas: Schemas, ref: JSON) -> str:
    message = schemas.resolve(ref)
    return str(message.get("name") or ref.get("$ref", "").rsplit("/", 1)[-1])


def replies(document: JSON, schemas: Schemas) -> dict[str, list[str]]:
    """The messages that answer each message, from the operations' ``reply``."""
    found: dict[str, list[str]] = {}
    for operation in document.get("operations", {}).values():
        answers = [message_name(schemas, r) for r in operation.get("reply", {}).get("messages", [])]
        for ref in operation.get("messages", []) if answers else []:
            known = found.setdefault(message_name(schemas, ref), [])
            known += [a for a in answers if a not in known]
    return found


def render(document: JSON) -> str:
    """The protocol's description, where to connect, the close codes, an index of the frames, a
    section per frame (fields and examples) in each direction, and every schema they refer to."""
    schemas = Schemas(document)
    info = document.get("info", {})
    title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
    out = [f"Rendered from the AsyncAPI {document.get('asyncapi', '3')} document ({title}) when this site was built."]
    if info.get("description"):
        out.append(str(info["description"]).strip())
    out.append(_channels(document, schemas, skip=str(info.get("description", "")).strip()))
    actions = messages_by_action(document, schemas)
    index = []
    for action, found in actions.items():
        direction = DIRECTIONS.get(action, (action, ""))[0]
        for name, m in found:
            link = f"[{code(_frame_type(schemas, m) or name)}](#{anchor(f'{action}-{name}')})"
            index.append([link, direction, sentence(_first_sentence(m))])
    out.append("## Frames\n\n" + table(["frame", "direction", "summary"], index))
    answers = replies(document, schemas)
    sent = {name for name, _ in actions.get("send", [])}
    for action, found in actions.items():
        heading, words = DIRECTIONS.get(action, (action, ""))
        section = [f"## {heading} {{ #{slug(action)} }}", words]
        for name, m in found:
            links = [f"[{code(a)}](#{anchor(f'send-{a}')})" if a in sent else code(a) for a in answers.get(name, [])]
            section.append(_message(schemas, action, name, m, "**Answered by:** " + ", ".join(links) if links else ""))
        out.append("\n\n".join(s for s in section if s))
    definitions = schemas.definitions("###")
    if definitions:
        out.append("## Schemas\n\nThe objects the frames above contain.\n\n" + definitions)
    return "\n\n".join(out) + "\n"


def _channels(document: JSON, schemas: Schemas, skip: str) -> str:
    servers = {name: schemas.resolve(s) for name, s in document.get("servers", {}).items()}
    out: list[str] = []
    for raw in document.get("channels", {}).values():
        channel = schemas.resolve(raw)
        address = str(channel.get("address", ""))
        urls = [
            f"{s.get('protocol', 'ws')}://{s.get('host', '')}{s.get('pathname', '')}{address}" for s in servers.values()
        ]
        part = [f"## Connecting {{ #{slug('connect ' + address)} }}"]
        if channel.get("title"):
            part.append(sentence(str(channel["title"])))
        if urls:
            part.append("```text\n" + "\n".join(urls) + "\n```")
        query = channel.get("bindings", {}).get("ws", {}).get("query")
        if isinstance(query, Mapping) and query.get("properties"):
            part.append("Query parameters:\n\n" + schemas.fields(query))
        description = str(channel.get("description", "")).strip()
        if description and description != skip:
            part.append(description)
        codes = channel.get("x-close-codes")
        if isinstance(codes, Mapping) and codes and not all(f"`{c}`" in skip for c in codes):
            # (unless the document's description, shown above, lists them already)
            rows = [[code(str(c)), sentence(str(v.get("reason", ""))), sentence(str(v.get("client", "")))]
                    for c, v in codes.items()]  # fmt: skip
            part.append("### Close codes\n\n" + table(["code", "why", "what the client does"], rows))
        out.append("\n\n".join(part))
    return "\n\n".join(out)


def _frame_type(schemas: Schemas, message: JSON) -> str | None:
    """The ``type`` a frame's payload is fixed to, if it is."""
    payload = schemas.resolve(message.get("payload", {}))
    kind = payload.get("properties", {}).get("type", {}) if isinstance(payload, Mapping) else {}
    value: Any = kind.get("const", (kind.get("enum") or [None])[0])
    return value if isinstance(value, str) else None


def _first_sentence(message: JSON) -> str:
    text = " ".join(str(message.get("summary") or message.get("description") or "").split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def _message(schemas: Schemas, action: str, name: str, message: JSON, answered: str) -> str:
    kind = _frame_type(schemas, message)
    label = f"{code(kind)} ({name})" if kind and kind != name else code(kind or name)
    parts = [f"### {label} {{ #{anchor(f'{action}-{name}')} }}"]
    words = message.get("description") or message.get("summary")
    if words:
        parts.append(sentence(" ".join(str(words).split())))
    payload = message.get("payload")
    if payload is not None:
        parts.append(schemas.fields(payload))
    if answered:
        parts.append(sentence(answered))
    for item in message.get("examples", []):
        if isinstance(item, Mapping) and "payload" in item:
            parts.append(example(item["payload"], f"Example{' (' + item['name'] + ')' if item.get('name') else ''}"))
    return "\n\n".join(parts)
