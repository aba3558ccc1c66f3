"""The import rules of DESIGN.md ("Layers"), enforced on the source tree.

- `detsim.raft.core` imports nothing of asyncio, time, random, socket, os (it is pure).
- `detsim.raft`, `detsim.kv` and `detsim.fs` never import `detsim.sim` (they run on whatever
  loop runs; production never loads the simulator), and neither does `detsim.check` (histories
  are checked anywhere).
Two checks: the source of each module (its own import statements, `TYPE_CHECKING` ones
included), and a fresh interpreter's `sys.modules` after importing every module of each
package, which catches an import through another module (e.g. through `detsim/__init__.py`,
which every import of a subpackage runs first) and names the module that made it.
A rule about a package that does not exist yet holds trivially and starts biting when it does.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"

# (package whose modules are checked, forbidden import prefixes)
RULES: list[tuple[str, tuple[str, ...]]] = [
    ("detsim.raft.core", ("asyncio", "time", "random", "socket", "os", "detsim.sim")),
    ("detsim.raft", ("detsim.sim",)),
    ("detsim.kv", ("detsim.sim",)),
    ("detsim.fs", ("detsim.sim",)),
    ("detsim.check", ("detsim.sim",)),
]

# Packages every module of which must load without any `detsim.sim` module, directly or
# transitively (plus the top package itself, which every one of them runs first).
SIM_FREE_PACKAGES = ["detsim.fs", "detsim.check", "detsim.raft", "detsim.kv"]


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
        ("detsim/fs/_api.py", "if TYPE_CHECKING:\n    from detsim.sim.disk import SimDisk\n"),
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


def sim_modules_after_importing(*modules: str) -> dict[str, list[str]]:
    """In one fresh interpreter, import `modules` in order; for each, the `detsim.sim` modules
    that its import added to `sys.modules` (so a violation names the module that caused it)."""
    code = (
        "import importlib, json, sys\n"
        "def sim(): return {m for m in sys.modules if m.split('.')[:2] == ['detsim', 'sim']}\n"
        "added = {}\n"
        "for name in sys.argv[1:]:\n"
        "    before = sim()\n"
        "    importlib.import_module(name)\n"
        "    added[name] = sorted(sim() - before)\n"
        "print(json.dumps(added))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, *modules],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    added: dict[str, list[str]] = json.loads(done.stdout)
    return added


def test_importing_the_top_package_loads_no_simulator() -> None:
    assert sim_modules_after_importing("detsim") == {"detsim": []}


def test_the_production_seam_loads_no_simulator() -> None:
    # detsim.raft and detsim.kv emit trace events and buggify through detsim.seam
    assert violations_of_module(SRC / "detsim" / "seam.py", "detsim.seam") == []
    assert sim_modules_after_importing("detsim.seam") == {"detsim.seam": []}


def violations_of_module(path: Path, module: str) -> list[str]:
    return [name for name in sorted(imports_of(path, module)) if name.startswith("detsim.sim")]


@pytest.mark.parametrize("package", SIM_FREE_PACKAGES)
def test_a_fresh_interpreter_importing_every_module_loads_no_simulator(package: str) -> None:
    modules = [module for module, _ in modules_under(SRC, package)]
    if not modules:
        print(f"{package} does not exist yet: the rule holds trivially")
        pytest.skip(f"{package} does not exist yet")
    loaded = sim_modules_after_importing(*modules)
    assert {module: sim for module, sim in loaded.items() if sim} == {}


def test_the_fresh_interpreter_check_sees_a_transitive_import() -> None:
    # The check above is only worth something if it sees an import made by another module:
    # importing the simulator's public names through the top package loads detsim.sim.
    loaded = sim_modules_after_importing("detsim.sim.world")
    assert "detsim.sim.world" in loaded["detsim.sim.world"]
    code = "import detsim, json, sys; detsim.Simulation; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert "detsim.sim.world" in json.loads(done.stdout)


def test_every_public_simulator_name_is_reachable_from_detsim() -> None:
    import detsim

    for name in detsim.__all__:
        assert getattr(detsim, name) is not None, name
    assert detsim.Simulation.__module__ == "detsim.sim.world"
    assert detsim.trace.event.__module__ == "detsim.sim.trace"
    assert set(detsim.__all__) <= set(dir(detsim))
    with pytest.raises(AttributeError, match="no attribute 'Simulaton'"):
        detsim.Simulaton  # noqa: B018 - the attribute access is the test


def test_in_simulation_inside_and_outside_a_run() -> None:
    import detsim

    assert detsim.in_simulation() is False
    sim = detsim.Simulation(seed=1)

    async def main() -> bool:
        return detsim.in_simulation()

    assert sim.run(main()) is True
    assert detsim.in_simulation() is False


# --- the simulator's kernel never imports its world -----------------------------------------

KERNEL = "detsim.sim.kernel"


def kernel_violations(root: Path) -> list[str]:
    """Imports of detsim modules outside the kernel, by kernel modules (TYPE_CHECKING included:
    `imports_of` walks every import statement of the file)."""
    bad = []
    for module, path in modules_under(root, KERNEL):
        for name in sorted(imports_of(path, module)):
            inside = name == KERNEL or name.startswith(KERNEL + ".")
            # `from detsim.sim.kernel import x` also names its parents as bases: not imports
            if name.startswith("detsim") and not inside and not KERNEL.startswith(name):
                bad.append(f"{module} imports {name} (the kernel imports nothing of the world)")
    return bad


def test_the_kernel_imports_nothing_of_the_world():
    assert modules_under(SRC, KERNEL), "the kernel package moved: update this test"
    assert kernel_violations(SRC) == []


@pytest.mark.parametrize(
    "source",
    [
        "from detsim.sim.world import Simulation\n",
        "import typing\nif typing.TYPE_CHECKING:\n    from detsim.sim.node import Node\n",
        "from .. import runtime\n",
        "import detsim.sim.net.tcp\n",
        "from detsim.fs import _seam\n",
    ],
)
def test_a_planted_kernel_violation_is_caught(tmp_path, source):
    path = tmp_path / "detsim/sim/kernel/loop.py"
    path.parent.mkdir(parents=True)
    path.write_text(source)
    assert kernel_violations(tmp_path)
    path.write_text("from detsim.sim.kernel import boot\nfrom . import clock\n")
    assert kernel_violations(tmp_path) == []


def test_a_fresh_interpreter_importing_the_kernel_loads_no_world():
    loaded = sim_modules_after_importing("detsim.sim.kernel.loop")["detsim.sim.kernel.loop"]
    assert "detsim.sim.kernel.loop" in loaded
    assert [m for m in loaded if m != "detsim.sim" and not m.startswith(KERNEL)] == []
