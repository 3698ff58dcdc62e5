"""Markdown building blocks shared by the generated reference pages, and JSON Schema as tables.

Both the OpenAPI and the AsyncAPI documents describe their bodies in JSON Schema with ``$ref``s
into ``#/components/schemas``; :class:`Schemas` renders a schema as a type (``array of
[Message](#schema-message)``), its constraints as prose, an object as a table of its fields, and
every schema a page referred to as a section of its own at the end of that page.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

JSON = Mapping[str, Any]
MAX_INT = 2**63 - 1


def code(text: str) -> str:
    """``text`` as an inline code span, whatever backticks it holds."""
    ticks = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (ticks + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def cell(text: str) -> str:
    """Text for a table cell: one line, pipes outside code spans escaped."""
    parts = re.split(r"(`+[^`]*?`+)", " ".join(text.split()))
    return "".join(p if p.startswith("`") else p.replace("|", "\\|") for p in parts)


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(cell(c) or " " for c in row) + " |" for row in rows]
    return "\n".join(lines)


def slug(text: str) -> str:
    """An HTML id: lower case letters, digits, ``-`` and ``_``."""
    return re.sub(r"[^a-z0-9_]+", "-", text.lower()).strip("-")


def literal(value: Any) -> str:
    """A JSON value as inline code; 2^63-1, the largest seq or position, by its name."""
    if value == MAX_INT and not isinstance(value, bool):
        return "2⁶³−1"
    return code(json.dumps(value, ensure_ascii=False))


def example(value: Any, title: str) -> str:
    body = json.dumps(value, ensure_ascii=False, indent=2)
    return f"{title}:\n\n```json\n{body}\n```"


def sentence(text: str) -> str:
    """``text`` with a capital first letter and a full stop (help strings are lower case)."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".:!?" else text + "."


class Schemas:
    """Renders the JSON Schemas of one document (OpenAPI or AsyncAPI), following its ``$ref``s.

    Every named schema a rendered type links to is remembered, and :meth:`definitions` renders
    them all (and those they refer to) as sections with the anchors the links point at.
    """

    PREFIX = "#/components/schemas/"

    def __init__(self, document: JSON) -> None:
        self.document = document
        self.used: list[str] = []

    # following references -------------------------------------------------------------------
    def resolve(self, node: Any) -> Any:
        """``node`` with its ``$ref`` (a JSON pointer into this document) followed, repeatedly."""
        seen = 0
        while isinstance(node, Mapping) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
            target: Any = self.document
            for part in node["$ref"][2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
            node, seen = target, seen + 1
            if seen > 32:
                raise ValueError(f"a $ref loop at {node!r}")
        return node

    def named(self, node: Any) -> str | None:
        """The component name a schema refers to, if it is a reference to a named schema."""
        ref = node.get("$ref") if isinstance(node, Mapping) else None
        if isinstance(ref, str) and ref.startswith(self.PREFIX):
            return ref[len(self.PREFIX) :]
        return None

    def link(self, name: str) -> str:
        if name not in self.used:
            self.used.append(name)
        return f"[{name}](#{self.anchor(name)})"

    @staticmethod
    def anchor(name: str) -> str:
        return "schema-" + slug(name)

    # one schema -------------------------------------------------------------------------------
    def type_of(self, schema: Any) -> str:
        """A short type: ``string``, ``integer or null``, ``array of [Message](#schema-message)``."""
        if not isinstance(schema, Mapping) or not schema:
            return "any"
        name = self.named(schema)
        if name is not None:
            return self.link(name)
        if "$ref" in schema:
            return self.type_of(self.resolve(schema))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return " or ".join(dict.fromkeys(self.type_of(s) for s in schema[key]))
        if "allOf" in schema:
            return " and ".join(dict.fromkeys(self.type_of(s) for s in schema["allOf"]))
        if "const" in schema:
            return literal(schema["const"])
        if "enum" in schema:
            return " or ".join(literal(v) for v in schema["enum"])
        kind = schema.get("type")
        if isinstance(kind, list):
            return " or ".join(self.type_of({**schema, "type": k}) for k in kind)
        if kind == "array":
            return "array of " + self.type_of(schema.get("items"))
        extra = schema.get("additionalProperties")
        if kind == "object" or "properties" in schema or extra is not None:
            if not schema.get("properties") and isinstance(extra, Mapping):
                return "map of " + self.type_of(extra)
            return "object"
        if kind is None:
            return "any"
        fmt = schema.get("format")
        return f"{kind} ({fmt})" if fmt else str(kind)

    def notes(self, schema: Any) -> str:
        """The constraints and default of a schema (and of the branches of a union), as prose."""
        if not isinstance(schema, Mapping):
            return ""
        parts: list[str] = []
        branches = [schema, *[b for k in ("anyOf", "oneOf") for b in schema.get(k, [])]]
        for branch in branches:
            if not isinstance(branch, Mapping) or self.named(branch) is not None:
                continue
            parts += self._constraints(branch)
            items = branch.get("items")
            if branch.get("type") == "array" and isinstance(items, Mapping) and self.named(items) is None:
                parts += [f"each: {c}" for c in self._constraints(items)]
        if "default" in schema and schema["default"] is not None:
            parts.append(f"default {literal(schema['default'])}")
        return "; ".join(dict.fromkeys(parts))

    @staticmethod
    def _constraints(s: Mapping[str, Any]) -> list[str]:
        parts: list[str] = []
        bounds = [
            ("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"), ("exclusiveMaximum", "<"),
        ]  # fmt: skip
        for key, sign in bounds:
            if key in s and not isinstance(s[key], bool):
                parts.append(f"{sign} {literal(s[key])}")
        for low, high, unit in (("minLength", "maxLength", "characters"), ("minItems", "maxItems", "items")):
            if low in s and high in s:
                parts.append(f"{s[low]} to {s[high]} {unit}")
            elif low in s:
                parts.append(f"at least {s[low]} {unit}")
            elif high in s:
                parts.append(f"at most {s[high]} {unit}")
        if "maxProperties" in s:
            parts.append(f"at most {s['maxProperties']} entries")
        if s.get("uniqueItems"):
            parts.append("unique items")
        if "pattern" in s:
            parts.append(f"pattern {code(s['pattern'])}")
        return parts

    def describe(self, schema: Any, description: str | None = None) -> str:
        """A field's description: its own words, then its constraints."""
        if not isinstance(schema, Mapping):
            schema = {}
        words = description if description is not None else schema.get("description", "")
        notes = self.notes(schema)
        if words and notes:
            return f"{sentence(words)} {notes[0].upper()}{notes[1:]}."
        return sentence(words) if words else (f"{notes[0].upper()}{notes[1:]}." if notes else "")

    # objects as tables -------------------------------------------------------------------------
    def rows(self, schema: Any, prefix: str = "") -> list[list[str]]:
        """One row per field (``name``, type, required, description); an inline object's fields
        follow it as ``name.field``."""
        schema = self.resolve(schema)
        if not isinstance(schema, Mapping):
            return []
        required = set(schema.get("required", []))
        found: list[list[str]] = []
        for name, field in schema.get("properties", {}).items():
            full = f"{prefix}{name}"
            found.append([code(full), self.type_of(field), "yes" if name in required else "", self.describe(field)])
            if isinstance(field, Mapping) and "$ref" not in field and field.get("properties"):
                found += self.rows(field, prefix=f"{full}.")
        return found

    def fields(self, schema: Any) -> str:
        """An object schema as a table of its fields, or its type if it is not an object."""
        rows = self.rows(schema)
        if not rows:
            resolved = self.resolve(schema)
            closed = isinstance(resolved, Mapping) and resolved.get("additionalProperties") is False
            if closed and resolved.get("type") == "object":
                return "An empty object: `{}`."
            return f"Type: {self.type_of(schema)}. {self.describe(resolved)}".strip()
        return table(["field", "type", "required", "description"], rows)

    def definitions(self, heading: str = "##") -> str:
        """A section per named schema referred to so far (and those they refer to), by name."""
        sections: dict[str, str] = {}
        while len(sections) < len(self.used):
            name = next(n for n in self.used if n not in sections)
            sections[name] = self._definition(name, heading)  # may refer to more schemas
        return "\n\n".join(sections[name] for name in sorted(sections, key=str.lower))

    def _definition(self, name: str, heading: str) -> str:
        schema = self.resolve({"$ref": self.PREFIX + name})
        section = [f"{heading} {name} {{ #{self.anchor(name)} }}"]
        if not isinstance(schema, Mapping):
            return section[0]
        if schema.get("description"):
            section.append(sentence(str(schema["description"])))
        section.append(self.fields(schema))
        if schema.get("additionalProperties") is False and schema.get("properties"):
            section.append("Other fields are refused.")
        if isinstance(schema.get("examples"), list):
            section += [example(v, "Example") for v in schema["examples"]]
        elif "example" in schema:
            section.append(example(schema["example"], "Example"))
        return "\n\n".join(section)
