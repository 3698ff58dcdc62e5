"""Generate the SDK's models from the server's documents: ``caas_client/models.py`` (requests and
responses) from ``/openapi.json``, ``caas_client/frame_models.py`` (websocket frames) from
``/asyncapi.json``.

    python sdk/python/tools/generate_models.py http://127.0.0.1:8000   # a running server

The output is committed; a test compares the models' structure with a live server's schemas, so
the models cannot drift from the API. Needs the ``generate`` extra (the pinned
datamodel-code-generator) and ruff.
"""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent / "caas_client"


@dataclass(frozen=True)
class Target:
    module: str  # file name in caas_client/
    document: str  # the server's path that serves the source document
    input_type: str  # datamodel-code-generator's InputFileType member
    what: str
    extra_fields: str | None = None  # override the schemas' additionalProperties
    lenient: bool = False  # frames: a value the server adds later (a status, a code, an id) still parses

    @property
    def path(self) -> Path:
        return PACKAGE / self.module

    def header(self) -> str:
        return (
            '# mypy: disable-error-code="assignment"\n'
            "# ruff: noqa: E501\n"
            "# (the generator gives optional constrained values a None default that pydantic accepts)\n"
            f'"""{self.what}, generated from the server\'s ``{self.document}``: do not edit.\n\n'
            'Regenerate with ``python sdk/python/tools/generate_models.py <server url>``.\n"""\n'
        )


TARGETS = (
    Target("models.py", "/openapi.json", "OpenAPI", "Request and response models"),
    # frames the server adds fields to must still parse in an older client
    Target(
        "frame_models.py", "/asyncapi.json", "AsyncAPI", "Websocket frame models", extra_fields="allow", lenient=True
    ),
)


def generate(target: Target, document: dict[str, Any]) -> str:
    """The module for ``document``, formatted as the repository is."""
    # The generator is an optional extra (`pip install -e 'sdk/python[generate]'`): imported by name,
    # so this module type-checks whether or not it is installed.
    generator: Any = importlib.import_module("datamodel_code_generator")
    DataModelType, Formatter = generator.DataModelType, generator.Formatter
    InputFileType, PythonVersion, codegen = generator.InputFileType, generator.PythonVersion, generator.generate

    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "document.json", Path(tmp) / "out.py"
        source.write_text(json.dumps(document))
        options: dict[str, Any] = {"extra_fields": target.extra_fields} if target.extra_fields else {}
        codegen(
            source,
            output=out,
            input_file_type=InputFileType[target.input_type],
            output_model_type=DataModelType.PydanticV2BaseModel,
            target_python_version=PythonVersion.PY_311,
            disable_timestamp=True,
            use_standard_collections=True,
            use_union_operator=True,
            enum_field_as_literal="all",
            field_constraints=True,
            use_annotated=True,
            collapse_root_models=True,
            use_field_description=True,
            custom_file_header=target.header(),
            formatters=[Formatter.BUILTIN],
            **options,
        )
        code = out.read_text()
    return _format(relax(code) if target.lenient else code, target.path)


def relax(code: str) -> str:
    """Frame models that a newer server's frames still fit: a field the schema types as ``null``
    (an id the server does not fill yet) takes any value, and an enum other than the ``type``
    discriminator (a presence status, an error code) takes any string. A client that refused such a
    frame would lose an event, a presence change or the reason for a close."""
    code = code.replace("Annotated[None, ", "Annotated[Any, ")
    return re.sub(r"(\n    (?!type:)\w+: Annotated\[\s*)Literal\[[^\]]*\]", r"\1str", code)


def _format(code: str, path: Path) -> str:
    ruff = Path(sys.executable).with_name("ruff")
    command = [str(ruff) if ruff.exists() else "ruff"]
    name = ["--stdin-filename", str(path)]
    fixed = subprocess.run([*command, "check", "--fix-only", "--quiet", *name, "-"], input=code, text=True,
                           capture_output=True, check=True, cwd=HERE).stdout  # fmt: skip
    return subprocess.run([*command, "format", "--quiet", *name, "-"], input=fixed, text=True,
                          capture_output=True, check=True, cwd=HERE).stdout  # fmt: skip


def main(server: str) -> None:
    import httpx

    for target in TARGETS:
        document: dict[str, Any] = httpx.get(server.rstrip("/") + target.document, timeout=30).json()
        target.path.write_text(generate(target, document))
        print(f"wrote {target.path}")


if __name__ == "__main__":
    main(sys.argv[1])
