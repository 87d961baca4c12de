"""Generates the gRPC stubs in edgefer/v1 from proto/ (run by `make proto` and by the package build).

The stubs are build outputs, never edited or committed: proto/ is the single source of the API.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"


def generate(out_dir: Path = ROOT) -> list[Path]:
    from grpc_tools import protoc  # build-time dependency only

    sources = sorted(PROTO_DIR.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    for source in sources:
        args = [
            "grpc_tools.protoc",
            f"-I{PROTO_DIR}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(source.relative_to(PROTO_DIR)),
        ]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {source}")
    packages = {out_dir / s.relative_to(PROTO_DIR).parent for s in sources}
    for package in packages:
        (package / "__init__.py").write_text('"""Generated from proto/ by edgefer.protogen; do not edit."""\n')
    return sources


if __name__ == "__main__":
    for path in generate():
        print(f"generated stubs for {path.relative_to(ROOT)}", file=sys.stderr)
