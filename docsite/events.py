"""The event types a tenant can see (``domain.events.EVENT_TYPES``) as a table of their payloads."""

from __future__ import annotations

import inspect
from collections.abc import Mapping

from pydantic import BaseModel

from docsite.markdown import code, sentence, table


def render(types: Mapping[str, type[BaseModel]]) -> str:
    rows = []
    for name, model in types.items():
        fields = [code(f) + ("" if info.is_required() else "?") for f, info in model.model_fields.items()]
        words = inspect.getdoc(model) or ""
        inherited = any(words == inspect.getdoc(base) for base in model.__mro__[1:] if base is not object)
        first = words.split("\n\n")[0]  # the docstring's first paragraph
        rows.append([code(name), ", ".join(fields) or "—", "" if inherited else sentence(" ".join(first.split()))])
    return table(["type", "payload fields (`?`: may be absent)", "notes"], rows) + "\n"
