"""The documentation site builds with ``mkdocs build --strict`` (what ``make docs`` runs), so a
broken link or anchor fails the suite; its reference pages list everything the code defines; and
the repository's own Markdown links only to files that exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from api.asyncapi import asyncapi
from api.cli import parser
from api.routes import openapi
from docsite import asyncapi as websocket_page
from docsite.cli import commands
from docsite.links import targets
from docsite.markdown import Schemas
from docsite.openapi import anchor, operations

ROOT = Path(__file__).resolve().parents[2]
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "site", "node_modules", "__pycache__", ".caas-data", ".cache", ".*_cache", ".hypothesis"
)


def build(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    """``mkdocs build --strict`` of the repository at ``root`` into ``site``, as ``make docs`` runs it."""
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}  # mkdocs-material's notice about MkDocs 2
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=root, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = build(ROOT, out)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING" not in done.stderr, done.stderr
    return out


def test_every_page_of_the_navigation_is_built(site: Path) -> None:
    for page in ["index", "quickstart", "concepts", "websockets", "api", "design", "meters", "plans", "quotas",
                 "stripe", "websocket-protocol", "reference/api", "reference/websocket", "reference/cli",
                 "phases/index"]:  # fmt: skip
        assert (site / f"{page}.html").is_file(), page


def test_links_between_docs_and_the_roadmap_work_on_the_site(site: Path) -> None:
    """The pages link by their paths in the repository (docs/design.md to ../phases/README.md);
    on the site those links lead to the published pages."""
    assert 'href="phases/index.html"' in (site / "design.html").read_text()
    assert 'href="../design.html"' in (site / "phases" / "index.html").read_text()


def test_a_guide_still_being_written_is_named_without_a_broken_link(site: Path) -> None:
    html = (site / "quickstart.html").read_text()
    for guide in ("sdk/typescript", "sdk/python"):
        written = (ROOT / "docs" / f"{guide}.md").exists()
        assert (f'href="{guide}.html"' in html) == written, guide


def test_the_http_reference_has_every_operation_of_the_openapi_document(site: Path) -> None:
    html = (site / "reference" / "api.html").read_text()
    document = openapi()
    for method, path, op in operations(document):
        assert f'id="{anchor(method, path, op)}"' in html, f"{method} {path}"
        assert f"{method} {path}" in html
    for name in document["components"]["schemas"]:  # type: ignore[index]
        assert f'id="schema-{name.lower()}"' in html, name


def test_the_websocket_reference_has_every_frame_of_the_asyncapi_document(site: Path) -> None:
    html = (site / "reference" / "websocket.html").read_text()
    document = asyncapi()
    found = websocket_page.messages_by_action(document, Schemas(document))
    assert {action for action in found} == {"send", "receive"}
    for action, messages in found.items():
        for name, _ in messages:
            assert f'id="{websocket_page.anchor(f"{action}-{name}")}"' in html, f"{action} {name}"
    assert len([name for messages in found.values() for name, _ in messages]) == len(
        document["channels"]["ws"]["messages"]
    )


def test_the_cli_reference_has_every_command_and_option(site: Path) -> None:
    html = (site / "reference" / "cli.html").read_text()
    for command, _ in commands(parser()):
        assert f"<code>{command.prog}</code>" in html, command.prog
        for action in command._actions:
            for flag in action.option_strings:
                if flag not in ("-h", "--help"):
                    assert f"<code>{flag}</code>" in html, f"{command.prog} {flag}"


def test_the_site_works_offline(site: Path) -> None:
    """No page asks a browser to fetch fonts or scripts from elsewhere."""
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text, page
        for tag in re.findall(r"<(?:script|link)\b[^>]*>", text):
            assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", tag), f"{page}: {tag}"


@pytest.mark.parametrize(
    ("link", "complaint"),
    [("[missing](no-such-page.md)", "no-such-page.md"), ("[anchor](concepts.md#no-such-anchor)", "no-such-anchor")],
)
def test_a_broken_link_fails_the_build(tmp_path: Path, link: str, complaint: str) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(ROOT, copy, ignore=NOT_COPIED)
    index = copy / "docs" / "index.md"
    index.write_text(index.read_text() + f"\nSee {link}.\n")
    done = build(copy, tmp_path / "site")
    assert done.returncode != 0
    assert complaint in done.stderr


def markdown_outside_docs() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / name for name in listed.stdout.split() if not name.startswith("docs/")]


def broken(page: Path, external_allowed: bool) -> list[str]:
    """The links of ``page`` that do not lead to a file of the repository."""
    found = []
    for target in targets(page.read_text()):
        path = target.split("#")[0]
        if EXTERNAL.match(target):
            if not external_allowed:
                found.append(f"{target} (outside the repository)")
            continue
        if path and not (page.parent / path).resolve().is_relative_to(ROOT):
            found.append(f"{target} (outside the repository)")
        elif path and not (page.parent / path).exists():
            found.append(target)
    return found


def test_the_readme_links_only_to_files_of_the_repository() -> None:
    readme = ROOT / "README.md"
    assert targets(readme.read_text()), "the README links to its docs"
    assert broken(readme, external_allowed=False) == []


def test_markdown_outside_docs_links_to_files_that_exist() -> None:
    """``docs/`` is checked by the strict build; every other Markdown file of the repository here."""
    found = {str(page.relative_to(ROOT)): broken(page, external_allowed=True) for page in markdown_outside_docs()}
    assert {page: links for page, links in found.items() if links} == {}
