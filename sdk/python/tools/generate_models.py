"""Generate ``caas_client/models.py`` from the server's OpenAPI document.

    python sdk/python/tools/generate_models.py http://127.0.0.1:8000   # a running server
    python sdk/python/tools/generate_models.py openapi.json           # a saved document

The output is committed; a test regenerates it from a live server and compares, so the models
cannot drift from the API. Needs the ``generate`` extra (datamodel-code-generator) and ruff.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TARGET = HERE.parent / "caas_client" / "models.py"
HEADER = (
    '# mypy: disable-error-code="assignment"\n'
    "# (the generator gives optional constrained values a None default that pydantic accepts)\n"
    '"""Request and response models, generated from the server\'s ``/openapi.json``: do not edit.\n\n'
    'Regenerate with ``python sdk/python/tools/generate_models.py <server url>``.\n"""\n'
)


def generate(document: dict[str, Any]) -> str:
    """The models module for ``document`` (an OpenAPI 3.1 dict), formatted as the repository is."""
    from datamodel_code_generator import DataModelType, Formatter, InputFileType, PythonVersion  # type: ignore[attr-defined]
    from datamodel_code_generator import generate as codegen

    with tempfile.TemporaryDirectory() as tmp:
        source, out = Path(tmp) / "openapi.json", Path(tmp) / "models.py"
        source.write_text(json.dumps(document))
        codegen(
            source,
            output=out,
            input_file_type=InputFileType.OpenAPI,
            output_model_type=DataModelType.PydanticV2BaseModel,
            target_python_version=PythonVersion.PY_311,
            disable_timestamp=True,
            use_standard_collections=True,
            use_union_operator=True,
            enum_field_as_literal="all",  # type: ignore[arg-type]
            field_constraints=True,
            use_annotated=True,
            collapse_root_models=True,
            use_field_description=True,
            custom_file_header=HEADER,
            formatters=[Formatter.BUILTIN],
        )
        code = out.read_text()
    return _format(code)


def _format(code: str) -> str:
    ruff = Path(sys.executable).with_name("ruff")
    command = [str(ruff) if ruff.exists() else "ruff"]
    name = ["--stdin-filename", str(TARGET)]
    fixed = subprocess.run([*command, "check", "--fix-only", "--quiet", *name, "-"], input=code, text=True,
                           capture_output=True, check=True, cwd=HERE).stdout  # fmt: skip
    return subprocess.run([*command, "format", "--quiet", *name, "-"], input=fixed, text=True,
                          capture_output=True, check=True, cwd=HERE).stdout  # fmt: skip


def load(source: str) -> dict[str, Any]:
    if source.startswith(("http://", "https://")):
        import httpx

        document: dict[str, Any] = httpx.get(source.rstrip("/") + "/openapi.json", timeout=30).json()
        return document
    loaded: dict[str, Any] = json.loads(Path(source).read_text())
    return loaded


if __name__ == "__main__":
    TARGET.write_text(generate(load(sys.argv[1])))
    print(f"wrote {TARGET}")
