"""The documentation site's build-time generators (``mkdocs.yml`` loads ``docsite/hooks.py``).

The reference pages are rendered from what the server itself serves or parses, so they cannot
drift from it: the HTTP reference from ``api.routes.openapi()``, the websocket reference from the
AsyncAPI document, the command-line reference from ``api.cli.parser()``.
"""
