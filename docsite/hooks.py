"""MkDocs hooks (``mkdocs.yml``: ``hooks: [docsite/hooks.py]``).

- The reference pages hold a marker (``<!-- caas:openapi -->``, ``<!-- caas:asyncapi -->``,
  ``<!-- caas:cli -->``, ``<!-- caas:events -->``) that is replaced, at every build, by what the
  code renders: the OpenAPI document of ``api.routes``, the AsyncAPI document of ``api.asyncapi``,
  the parser of ``api.cli``, the event types of ``domain.events``.
- The folders in :data:`PUBLISHED` are published beside ``docs/`` (the roadmap status), and
  links between the repository's Markdown files are made to work on the site
  (:mod:`docsite.links`).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ("phases",)  # repository folders whose Markdown is published under the same path
# Pages other branches are writing: until one exists, a link to it is shown as plain text.
PLANNED: frozenset[str] = frozenset()  # pages linked before they are written: shown as plain text


def openapi_page() -> str:
    from api.errors import STATUS
    from api.routes import openapi
    from docsite import openapi as render

    return render.render(openapi(), {str(code): status for code, status in STATUS.items()})


def asyncapi_page() -> str:
    from api.asyncapi import asyncapi
    from docsite import asyncapi as render

    return render.render(asyncapi())


def cli_page() -> str:
    from api.cli import parser
    from api.settings import Settings
    from docsite import cli as render

    settings = {name: (f"CAAS_{name.upper()}", field.default) for name, field in Settings.model_fields.items()}
    return render.render(parser(), settings)


def events_page() -> str:
    from docsite import events as render
    from domain.events import EVENT_TYPES

    return render.render(EVENT_TYPES)


MARKERS: dict[str, Callable[[], str]] = {
    "<!-- caas:openapi -->": openapi_page,
    "<!-- caas:asyncapi -->": asyncapi_page,
    "<!-- caas:cli -->": cli_page,
    "<!-- caas:events -->": events_page,
}


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    # MkDocs puts this file's folder on sys.path only while it loads it; the generators import
    # the project's packages (api, docsite) from the repository root at build time
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return config


def on_files(files: Files, config: MkDocsConfig) -> Files:
    for folder in PUBLISHED:
        for source in sorted((ROOT / folder).rglob("*.md")):
            uri = source.relative_to(ROOT).as_posix()
            if files.get_file_from_path(uri) is None:
                files.append(File.generated(config, uri, abs_src_path=str(source)))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    from docsite.links import Linker

    for marker, render in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    linker = Linker(ROOT, Path(config.docs_dir).resolve().relative_to(ROOT).as_posix(), PUBLISHED, PLANNED)

    def exists(uri: str) -> bool:
        return files.get_file_from_path(uri) is not None

    return linker.rewrite(markdown, page.file.src_uri, exists)
