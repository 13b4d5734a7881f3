"""Data flows one way: evo uses operators and genome, and neither of them imports anything from evo. And what runs
inside the sandbox (the scorer, the supervisor, the shield, the channel, the graph export) sees only evo's own
package, so it imports nothing from operators or genome."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("operators", "genome")
SANDBOXED = ("evo.score", "evo.supervise", "evo.shield", "evo.channel", "evo.graph_export", "evo.errors")


def _modules() -> list[str]:
    return sorted(".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                  for package in PACKAGES for path in (ROOT / package).rglob("*.py"))


def _evo_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found += [f"{path.relative_to(ROOT)}:{node.lineno}: {name}" for name in names
                  if name == "evo" or name.startswith("evo.")]
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_of_evo_anywhere_in_the_source(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    assert [line for path in files for line in _evo_imports(path)] == []


def _import_without(blocked: tuple[str, ...], modules: list[str]) -> subprocess.CompletedProcess:
    """Imports modules in a fresh interpreter in which any import of a blocked package raises ImportError."""
    script = ("import importlib, sys\n"
              f"for name in {blocked!r}:\n"
              "    sys.modules[name] = None\n"
              f"for name in {modules!r}:\n"
              "    importlib.import_module(name)\n"
              f"assert not [m for m, module in sys.modules.items() if module and m.split('.')[0] in {blocked!r}]\n")
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_every_module_of_operators_and_genome_imports_with_evo_out_of_reach():
    modules = _modules()
    assert "operators.registry" in modules and "genome.validate" in modules
    done = _import_without(("evo",), modules)
    assert done.returncode == 0, done.stderr


def test_what_runs_in_the_sandbox_imports_with_operators_and_genome_out_of_reach():
    done = _import_without(PACKAGES, list(SANDBOXED))
    assert done.returncode == 0, done.stderr
