"""The HTTP API reference: an OpenAPI 3 document rendered as Markdown, one section per operation."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from docsite.markdown import JSON, Schemas, code, example, sentence, slug, table

METHODS = ("get", "put", "post", "patch", "delete", "head", "options", "trace")


def operations(document: JSON) -> list[tuple[str, str, JSON]]:
    """``(METHOD, path, operation)`` in the document's order."""
    found: list[tuple[str, str, JSON]] = []
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                found.append((method.upper(), path, item[method]))
    return found


def group_of(path: str, operation: JSON) -> str:
    """An operation's section: its first tag, or else the first segment of its path after the
    version (``/v1/channels/{cid}`` → ``channels``)."""
    tags = operation.get("tags")
    if tags:
        return str(tags[0])
    parts = [p for p in path.split("/") if p]
    if not (parts and parts[0].startswith("v") and parts[0][1:].isdigit()):
        return "unversioned"  # /healthz, /readyz
    return parts[1].replace("-", " ") if len(parts) > 1 else "root"


def anchor(method: str, path: str, operation: JSON) -> str:
    return "op-" + slug(str(operation.get("operationId") or f"{method} {path}"))


def render(document: JSON, errors: Mapping[str, int] | None = None) -> str:
    """The whole reference: the credentials, an index of the operations, a section per group of
    operations, the error codes (``errors``: code → status) and every schema used."""
    schemas = Schemas(document)
    info = document.get("info", {})
    ops = operations(document)
    out: list[str] = []
    title = f"{info.get('title', 'API')} {info.get('version', '')}".strip()
    intro = f"Rendered from the OpenAPI {document.get('openapi', '3')} document ({title}) when this site was built."
    out.append(" ".join(p for p in (sentence(info.get("description", "")), intro) if p))
    out.append(_credentials(document, schemas))

    groups: dict[str, list[tuple[str, str, JSON]]] = {}
    for method, path, op in ops:
        groups.setdefault(group_of(path, op), []).append((method, path, op))
    tag_text = {t["name"]: t.get("description", "") for t in document.get("tags", []) if "name" in t}

    index = [
        [f"[{code(f'{m} {p}')}](#{anchor(m, p, op)})", str(op.get("summary", "")), _security(document, op)]
        for m, p, op in ops
    ]
    out.append("## Operation index { #operation-index }\n\n" + table(["operation", "summary", "credential"], index))
    for group, members in groups.items():
        section = [f"## {group[:1].upper()}{group[1:]} {{ #group-{slug(group)} }}"]
        if tag_text.get(group):
            section.append(sentence(tag_text[group]))
        section += [_operation(document, schemas, m, p, op) for m, p, op in members]
        out.append("\n\n".join(section))
    if errors:
        rows = [[code(c), str(s)] for c, s in sorted(errors.items(), key=lambda kv: (kv[1], kv[0]))]
        out.append(
            "## Error codes { #error-codes }\n\n"
            'Every error answers `{"error": {"code", "message", "details"}}` with one of these codes and its '
            "status ([the contract](../api.md#errors) says when each is used):\n\n" + table(["code", "status"], rows)
        )
    definitions = schemas.definitions("###")
    if definitions:
        out.append("## Schemas\n\n" + definitions)
    return "\n\n".join(out) + "\n"


def _credentials(document: JSON, schemas: Schemas) -> str:
    found = document.get("components", {}).get("securitySchemes", {})
    if not found:
        return ""
    rows = []
    for name, raw in found.items():
        scheme = schemas.resolve(raw)
        how = scheme.get("type", "")
        if how == "http":
            how = f"HTTP {scheme.get('scheme', '')}".strip()
            if scheme.get("bearerFormat"):
                how += f" ({scheme['bearerFormat']})"
        elif how == "apiKey":
            how = f"{scheme.get('in', '')} {code(str(scheme.get('name', '')))}"
        rows.append([code(name), how, sentence(str(scheme.get("description", "")))])
    return "## Security schemes { #security-schemes }\n\n" + table(["scheme", "sent as", "description"], rows)


def _security(document: JSON, op: JSON) -> str:
    """Who may call: the operation's security requirements (any one of them), else the
    document's; ``none`` for an operation without a credential."""
    requirements = op.get("security", document.get("security"))
    if not requirements:
        return "none"
    options = [" and ".join(code(name) for name in req) or "none" for req in requirements]
    return " or ".join(dict.fromkeys(options))


def _parameters(schemas: Schemas, op: JSON, path_item: JSON) -> str:
    params: dict[tuple[str, str], JSON] = {}
    for raw in [*path_item.get("parameters", []), *op.get("parameters", [])]:
        param = schemas.resolve(raw)
        params[(param["name"], param["in"])] = param
    if not params:
        return ""
    rows = []
    for (name, where), param in params.items():
        schema = param.get("schema", {})
        words = param.get("description") or (schema.get("description") if isinstance(schema, Mapping) else "")
        rows.append(
            [code(name), where, schemas.type_of(schema), "yes" if param.get("required") else "",
             schemas.describe(schema, words or "")]
        )  # fmt: skip
    return "**Parameters**\n\n" + table(["name", "in", "type", "required", "description"], rows)


def _body(schemas: Schemas, op: JSON) -> str:
    raw = op.get("requestBody")
    if raw is None:
        return ""
    body = schemas.resolve(raw)
    out: list[str] = []
    for media, content in body.get("content", {}).items():
        schema = content.get("schema", {})
        name = schemas.named(schema)
        needed = "required" if body.get("required") else "optional"
        what = f" {schemas.link(name)}" if name else ""
        out.append(f"**Request body** ({code(media)}, {needed}):{what}")
        if body.get("description"):
            out.append(sentence(body["description"]))
        out.append(schemas.fields(schema))
        out += [example(value, title) for title, value in _examples(content, "Example request")]
    return "\n\n".join(out)


def _examples(content: JSON, title: str) -> list[tuple[str, Any]]:
    """``(title, value)`` of each example of a media type."""
    found: list[tuple[str, Any]] = []
    if "example" in content:
        found.append((title, content["example"]))
    for name, item in content.get("examples", {}).items():
        if isinstance(item, Mapping) and "value" in item:
            found.append((f"{title} ({item.get('summary') or name})", item["value"]))
    return found


def _responses(schemas: Schemas, op: JSON) -> str:
    """A row per status; the response headers once, with the statuses that carry each; each
    distinct example once, with the statuses it is given for."""
    rows: list[list[str]] = []
    headers: dict[str, tuple[str, list[str]]] = {}
    shown: dict[str, tuple[Any, list[str]]] = {}
    responses = sorted(op.get("responses", {}).items(), key=lambda kv: str(kv[0]))
    for status, raw in responses:
        response = schemas.resolve(raw)
        bodies = [
            f"{schemas.type_of(c.get('schema'))}" + ("" if media == "application/json" else f" ({code(media)})")
            for media, c in response.get("content", {}).items()
        ]
        for header, spec in response.get("headers", {}).items():
            words = str(schemas.resolve(spec).get("description", ""))
            headers.setdefault(header, (words, []))[1].append(str(status))
        rows.append([code(str(status)), sentence(str(response.get("description", ""))), ", ".join(bodies) or "—"])
        for content in response.get("content", {}).values():
            for _, value in _examples(content, ""):
                key = json.dumps(value, sort_keys=True)
                shown.setdefault(key, (value, []))[1].append(str(status))
    out = ["**Responses**", table(["status", "meaning", "body"], rows)]
    if headers:
        every = len(responses)
        header_rows = [
            [code(name), "every response" if len(on) == every else ", ".join(code(s) for s in on), sentence(words)]
            for name, (words, on) in headers.items()
        ]
        out.append("**Response headers**\n\n" + table(["header", "on", "meaning"], header_rows))
    out += [example(value, f"Example response {', '.join(on)}") for value, on in shown.values()]
    return "\n\n".join(out)


def _operation(document: JSON, schemas: Schemas, method: str, path: str, op: JSON) -> str:
    path_item: Any = document["paths"][path]
    parts = [f"### {code(f'{method} {path}')} {{ #{anchor(method, path, op)} }}"]
    if op.get("summary"):
        parts.append(sentence(str(op["summary"])))
    if op.get("deprecated"):
        parts.append("**Deprecated.**")
    meta = [f"**Credential:** {_security(document, op)}"]
    if op.get("operationId"):
        meta.append(f"**Operation id:** {code(str(op['operationId']))}")
    parts.append(" · ".join(meta))
    if op.get("description"):
        parts.append(sentence(str(op["description"])))
    parts += [p for p in (_parameters(schemas, op, path_item), _body(schemas, op), _responses(schemas, op)) if p]
    return "\n\n".join(parts)
