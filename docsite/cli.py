"""The command-line reference: an argparse parser (``api.cli.parser()``) rendered as Markdown."""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from typing import Any

from docsite.markdown import code, sentence, slug, table

WIDTH = 80  # usage lines are wrapped at this width, whatever the terminal that builds the site


def commands(parser: argparse.ArgumentParser) -> Iterator[tuple[argparse.ArgumentParser, str]]:
    """Every command that runs something (a parser without subcommands) and its help line, in
    the order they were defined; ``caas billing sync`` is ``billing sync``."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield parser, parser.description or ""
        return
    helps = {c.dest: c.help or "" for sub in subs for c in sub._choices_actions}
    for sub in subs:
        for name, child in sub.choices.items():
            inner = [a for a in child._actions if isinstance(a, argparse._SubParsersAction)]
            if inner:
                yield from commands(child)
            else:
                yield child, helps.get(name, "")


def usage(parser: argparse.ArgumentParser) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=WIDTH)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return formatter.format_help().strip()


def _option(action: argparse.Action, settings: Mapping[str, tuple[str, Any]]) -> list[str]:
    names = ", ".join(code(s) for s in action.option_strings) or code(action.dest)
    if action.choices is not None:
        value = " or ".join(code(str(c)) for c in action.choices)
    elif action.nargs == 0:
        value = "flag"
    else:
        kind = getattr(action.type, "__name__", None) or "text"
        value = {"int": "integer", "float": "number", "str": "text"}.get(kind, kind)
    words = (action.help or "").replace("%(default)s", str(action.default))
    notes = []
    if action.required:
        notes.append("required")
    if action.dest in settings:  # an option that overrides a setting: name it, give its default
        variable, default = settings[action.dest]
        words = words or f"overrides {code(variable)}"
        if action.default is None:
            words += f" (default {code(str(default))})"
    mentioned = "default" in words
    if action.default not in (None, argparse.SUPPRESS, False) and action.nargs != 0 and not mentioned:
        notes.append(f"default {code(str(action.default))}")
    if notes:
        words = f"{words} ({', '.join(notes)})" if words else ", ".join(notes)
    return [names, value, sentence(words)]


def render(parser: argparse.ArgumentParser, settings: Mapping[str, tuple[str, Any]] | None = None) -> str:
    """A summary table of the commands, then a section per command: its usage line and a table
    of its options. ``settings`` maps an option's ``dest`` to the environment variable it
    overrides and that variable's default."""
    found = list(commands(parser))
    out: list[str] = []
    summary = [[f"[{code(child.prog)}](#{slug(child.prog)})", sentence(help_)] for child, help_ in found]
    out.append(table(["command", "what it does"], summary))
    for child, help_ in found:
        section = [f"## {code(child.prog)} {{ #{slug(child.prog)} }}"]
        if help_:
            section.append(sentence(help_))
        section.append(f"```text\n{usage(child)}\n```")
        options = [_option(a, settings or {}) for a in child._actions if not isinstance(a, argparse._HelpAction)]
        if options:
            section.append(table(["option", "value", "meaning"], options))
        out.append("\n\n".join(section))
    return "\n\n".join(out) + "\n"
