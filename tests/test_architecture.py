"""The layout is the architecture: the torch-free core `edgefer/` imports neither wing, the edge runtime never
imports the worker pipeline, and no edge node module pulls in torch, directly or through what it imports."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def imported_modules(folder: str) -> dict[str, set[str]]:
    """Every module imported (at module level or inside functions) by each file under `folder`."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / folder).rglob("*.py")):
        if "v1" in path.relative_to(REPO).parts:  # generated stubs
            continue
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(REPO))] = names
    return found


@pytest.mark.parametrize(("folder", "forbidden"), [
    ("edgefer", {"compression_worker", "services", "torch"}),
    ("services", {"compression_worker", "torch"}),
])
def test_no_import_crosses_a_boundary(folder: str, forbidden: set[str]) -> None:
    packages = {path: {name.split(".")[0] for name in names} for path, names in imported_modules(folder).items()}
    crossing = {path: sorted(names & forbidden) for path, names in packages.items() if names & forbidden}
    assert not crossing, crossing


def test_the_protocol_never_imports_the_applications_built_on_it() -> None:
    """edgefer/cli/ (the operator commands) imports the protocol packages, never the other way round; and the
    registry, the lowest of them, imports neither rollouts nor jobs."""
    upward = {}
    for path, names in imported_modules("edgefer").items():
        banned = ("edgefer.cli",) if not path.startswith("edgefer/cli/") else ()
        if path.startswith("edgefer/registry/"):
            banned += ("edgefer.rollouts", "edgefer.jobs")
        if hits := sorted(n for n in names if n.startswith(banned)) if banned else []:
            upward[path] = hits
    assert not upward, upward


def import_without(modules: list[str], missing: tuple[str, ...]) -> subprocess.CompletedProcess:
    """Import `modules` in a fresh interpreter where the `missing` packages cannot be found (as if not installed:
    a None in sys.modules would look imported to libraries that only peek there, as scipy does for torch)."""
    code = (
        "import importlib, sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {missing!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}')\n"
        "sys.meta_path.insert(0, Block())\n"
    ) + "".join(f"importlib.import_module({name!r})\n" for name in modules)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)


def modules_under(folder: str) -> list[str]:
    return sorted(".".join(path.relative_to(REPO).with_suffix("").parts) for path in (REPO / folder).rglob("*.py")
                  if path.name != "__init__.py" and "v1" not in path.relative_to(REPO).parts)


def test_every_edge_node_module_imports_without_torch() -> None:
    modules = modules_under("services")
    done = import_without(modules, ("torch",))
    assert done.returncode == 0, done.stderr
    assert len(modules) >= 15


def test_the_edge_image_needs_no_scipy_only_the_rollout_controller_does() -> None:
    """The boards' image has no scipy: every edge node module and operator command imports without it; the
    controller's statistics are the one place that needs it (its image is the edge image's controller stage)."""
    modules = [m for m in modules_under("services") + modules_under("edgefer/cli")
               if not m.startswith("services.rollouts")]
    done = import_without(modules, ("scipy", "torch"))
    assert done.returncode == 0, done.stderr
    assert import_without(["edgefer.rollouts.controller"], ("scipy",)).returncode != 0
