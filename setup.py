"""Build hook: generate the gRPC stubs from proto/ before setuptools lists the packages (pyproject.toml has
the rest), so `edgefer.v1` is in every wheel and image built from a clean clone, where the stubs (build
outputs, never committed) do not exist yet."""

import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent))  # isolated builds do not put the project on the path
from edgefer.protogen import generate  # noqa: E402 - needs the path above

generate()
setup()
