"""The import rules of DESIGN.md ("Layers"), enforced on the source tree.

- `detsim.raft.core` imports nothing of asyncio, time, random, socket, os (it is pure).
- `detsim.raft` and `detsim.kv` never import `detsim.sim` (they run on whatever loop runs).
- `detsim.check` never imports `detsim.sim` (histories are checked anywhere).
A rule about a package that does not exist yet holds trivially and starts biting when it does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# (package whose modules are checked, forbidden import prefixes)
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("detsim.raft.core", ("asyncio", "time", "random", "socket", "os", "detsim.sim")),
    ("detsim.raft", ("detsim.sim",)),
    ("detsim.kv", ("detsim.sim",)),
    ("detsim.check", ("detsim.sim",)),
]


def imports_of(path: Path, module: str) -> set[str]:
    """Absolute names imported by a module (relative imports resolved against `module`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.rsplit(".", node.level)[0]
                base = f"{package}.{base}" if base else package
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def modules_under(root: Path, package: str) -> list[tuple[str, Path]]:
    folder = root.joinpath(*package.split("."))
    if not folder.exists():
        return []
    out = []
    for path in sorted(folder.rglob("*.py")):
        rel = path.relative_to(root).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((".".join(parts), path))
    return out


def violations(root: Path) -> list[str]:
    bad = []
    for package, forbidden in RULES:
        for module, path in modules_under(root, package):
            for name in sorted(imports_of(path, module)):
                if any(name == f or name.startswith(f + ".") for f in forbidden):
                    bad.append(f"{module} imports {name} (forbidden in {package})")
    return bad


def test_the_source_tree_obeys_the_layer_rules():
    assert violations(SRC) == []


@pytest.mark.parametrize(
    ("rel_path", "source"),
    [
        ("detsim/raft/core/log.py", "import time\n"),
        ("detsim/raft/core/__init__.py", "from os import path\n"),
        ("detsim/raft/driver.py", "from detsim.sim import world\n"),
        ("detsim/kv/server.py", "import detsim.sim.loop\n"),
        ("detsim/check/x.py", "from ..sim import runtime\n"),
    ],
)
def test_a_planted_violation_is_caught(tmp_path, rel_path, source):
    path = tmp_path / rel_path
    path.parent.mkdir(parents=True)
    path.write_text(source)
    module = rel_path.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
    found = violations(tmp_path)
    assert found and all(v.startswith(module + " imports") for v in found)
    path.write_text("import dataclasses\nfrom . import sibling\n")
    assert violations(tmp_path) == []
