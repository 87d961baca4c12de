"""Build hook: generate the gRPC stubs from proto/ whenever the package is built (pyproject.toml has the rest)."""

import sys
from pathlib import Path

from setuptools import setup

sys.path.insert(0, str(Path(__file__).resolve().parent))  # isolated builds do not put the project on the path
from setuptools.command.build_py import build_py


class BuildWithStubs(build_py):
    def run(self) -> None:
        from edgefer.protogen import generate

        generate()
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})
