"""Links that work both on the repository's pages and on the site.

The Markdown files link to each other by their paths in the repository (``docs/design.md`` links
to ``../phases/README.md``), which is right when the files are read in the repository. On the
site, ``docs/`` is the root and a few other folders are published beside it (``phases/``), so a
link that leaves ``docs/`` is rewritten to where its target is published. A link to a repository
file that is not published becomes its path in code (the file exists; the site has no page for
it), and a link to a page that is planned but not written yet becomes plain text. Anything else
is left alone, so MkDocs' own check (``--strict``) fails the build on a broken link.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Container
from pathlib import Path

LINK = re.compile(r"(?<!!)\[(?P<text>[^\]\n]*)\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
CODE_SPAN = re.compile(r"(`+)(?:.|\n)*?(?<!`)\1(?!`)")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|//|#|/)", re.IGNORECASE)


def substitute(markdown: str, replace: Callable[[re.Match[str]], str]) -> str:
    """``markdown`` with each inline link (``[text](target)``, not an image) outside code blocks
    and code spans replaced by ``replace(match)``."""
    out: list[str] = []
    fenced = False
    for line in markdown.splitlines(keepends=True):
        fence = FENCE.match(line) is not None
        fenced = fenced != fence  # a fence line opens or closes a block
        if fence or fenced:
            out.append(line)
            continue
        spans = [(m.start(), m.end()) for m in CODE_SPAN.finditer(line)]

        def one(match: re.Match[str], spans: list[tuple[int, int]] = spans) -> str:
            if any(start <= match.start() < end for start, end in spans):
                return match.group(0)  # `[shown](as code)`
            return replace(match)

        out.append(LINK.sub(one, line))
    return "".join(out)


def targets(markdown: str) -> list[str]:
    """The targets of the inline links of ``markdown`` (outside code), in order."""
    found: list[str] = []

    def keep(match: re.Match[str]) -> str:
        found.append(match.group("target"))
        return match.group(0)

    substitute(markdown, keep)
    return found


class Linker:
    """Rewrites the links of one site: ``repo`` is the repository's root, ``docs`` its
    documentation folder (the site's root), ``published`` the other folders of the repository
    whose Markdown is published under the same path, ``planned`` the site paths of pages that
    may not exist yet."""

    def __init__(self, repo: Path, docs: str, published: tuple[str, ...], planned: Container[str]) -> None:
        self.repo = repo
        self.docs = docs.strip("/")
        self.published = tuple(p.strip("/") for p in published)
        self.planned = planned

    def repo_path(self, site_path: str) -> str:
        """Where a page of the site lives in the repository."""
        if site_path.split("/")[0] in self.published:
            return site_path
        return f"{self.docs}/{site_path}"

    def site_path(self, repo_path: str) -> str | None:
        """Where a repository file is published on the site, if it is."""
        if repo_path.startswith(self.docs + "/"):
            return repo_path[len(self.docs) + 1 :]
        if repo_path.split("/")[0] in self.published:
            return repo_path
        return None

    def rewrite(self, markdown: str, page: str, exists: Callable[[str], bool]) -> str:
        """``markdown`` of the page at site path ``page``, its links made to work on the site;
        ``exists`` tells whether a site path is a page of this build."""
        return substitute(markdown, lambda m: self._link(m, page, exists))

    def _link(self, match: re.Match[str], page: str, exists: Callable[[str], bool]) -> str:
        text, target = match.group("text"), match.group("target")
        if EXTERNAL.match(target):
            return match.group(0)
        path, hash_, fragment = target.partition("#")
        here = posixpath.dirname(self.repo_path(page))
        in_repo = posixpath.normpath(posixpath.join(here, path))
        if in_repo.startswith("../"):
            return match.group(0)  # outside the repository: MkDocs reports it
        site = self.site_path(in_repo)
        if site is not None and not exists(site) and site in self.planned:
            return text  # a page someone is writing: a link once it exists
        if site is not None:
            relative = posixpath.relpath(site, posixpath.dirname(page) or ".")
            return f"[{text}]({relative}{hash_}{fragment})"
        if (self.repo / in_repo).exists():
            shown = in_repo + ("/" if (self.repo / in_repo).is_dir() else "")
            return text if shown.rstrip("/") in text else f"{text} ({'`' + shown + '`'} in the repository)"
        return match.group(0)  # no such file: MkDocs reports it
