"""The layering, read from the folders. Data flows one way:
- operators/ and genome/ import nothing from evo;
- evo/sandbox/ (the evaluation boundary) imports neither operators nor genome, nor the policy, the store or Ray:
  of the rest of evo it may use only SANDBOX_MAY_USE (shared facts: errors, results, the task's files);
- evo/search/ (the policy) imports neither the sandbox, the store nor Ray;
- evo/sandbox/child/ (what runs inside the training process) imports only the standard library, torch and the rest
  of the sandbox's graph code, and importing it starts nothing;
- only the CLI prints.
Each rule is checked twice: on the syntax trees (every import statement, wherever it stands in a file) and by
importing every module of a layer in a fresh interpreter where the forbidden packages cannot be imported."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SANDBOX_MAY_USE = ("evo.errors", "evo.results", "evo.task_files")
# Each layer: its folder, and the module prefixes it may not import (a prefix "evo" forbids all of evo except
# what the layer's own folder holds and what it is allowed).
LAYERS = {
    "operators": (("evo",), ()),
    "genome": (("evo",), ()),
    "evo/sandbox": (("evo", "operators", "genome", "ray", "duckdb"), SANDBOX_MAY_USE),
    "evo/search": (("evo.sandbox", "evo.store", "evo.workers", "evo.engine", "evo.launch", "evo.cli", "ray",
                    "duckdb"), ()),
}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")


def modules_of(folder: str) -> list[str]:
    return sorted(module_name(path) for path in (ROOT / folder).rglob("*.py"))


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module an import statement in the file names (relative imports resolved against the file's package)."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def forbidden_imports(folder: str) -> list[str]:
    blocked, allowed = LAYERS[folder]
    own = folder.replace("/", ".")
    lines = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for lineno, name in imports_of(path):
            if _within(name, own) or any(_within(name, ok) for ok in allowed):
                continue
            if any(_within(name, prefix) for prefix in blocked):
                lines.append(f"{path.relative_to(ROOT)}:{lineno}: {name}")
    return sorted(set(lines))


@pytest.mark.parametrize("folder", LAYERS)
def test_no_layer_names_a_module_it_may_not_use(folder):
    assert modules_of(folder)
    assert forbidden_imports(folder) == []


def test_the_syntax_check_finds_a_forbidden_import(tmp_path, monkeypatch):
    """The check above must be able to fail: a module of the sandbox that imports the policy, or the store, is
    named; so is a relative import that climbs out of the package."""
    fake_root = tmp_path
    (fake_root / "evo/sandbox/child").mkdir(parents=True)
    (fake_root / "evo/sandbox/leak.py").write_text("from evo.search.policy import SearchPolicy\n"
                                                   "import duckdb\nfrom evo.errors import ConfigError\n")
    (fake_root / "evo/sandbox/child/up.py").write_text("from ...store import open_reader\nfrom . import channel\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", fake_root)
    assert forbidden_imports("evo/sandbox") == ["evo/sandbox/child/up.py:1: evo.store",
                                                 "evo/sandbox/child/up.py:1: evo.store.open_reader",
                                                 "evo/sandbox/leak.py:1: evo.search.policy",
                                                 "evo/sandbox/leak.py:1: evo.search.policy.SearchPolicy",
                                                 "evo/sandbox/leak.py:2: duckdb"]


def _import_without(blocked: tuple[str, ...], modules: list[str]) -> subprocess.CompletedProcess:
    """Imports modules in a fresh interpreter in which any import of a blocked module raises ImportError, then
    fails if any blocked module was loaded at all."""
    script = ("import importlib, sys\n"
              f"blocked = {blocked!r}\n"
              "class Block:\n"
              "    def find_spec(self, name, path=None, target=None):\n"
              "        if any(name == b or name.startswith(b + '.') for b in blocked):\n"
              "            raise ImportError(f'{name} is out of reach of this layer')\n"
              "sys.meta_path.insert(0, Block())\n"
              f"for name in {modules!r}:\n"
              "    importlib.import_module(name)\n"
              "assert not [m for m in sys.modules if any(m == b or m.startswith(b + '.') for b in blocked)]\n")
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_operators_and_genome_import_with_evo_out_of_reach():
    modules = modules_of("operators") + modules_of("genome")
    assert "operators.registry" in modules and "genome.validate" in modules
    done = _import_without(("evo",), modules)
    assert done.returncode == 0, done.stderr


def test_the_sandbox_imports_with_the_policy_the_store_ray_and_the_operators_out_of_reach():
    modules = modules_of("evo/sandbox")
    assert "evo.sandbox.evaluation" in modules and "evo.sandbox.child.channel" in modules
    done = _import_without(("operators", "genome", "ray", "duckdb", "evo.search", "evo.store", "evo.workers",
                            "evo.engine", "evo.config"), modules)
    assert done.returncode == 0, done.stderr


def test_the_policy_imports_with_the_sandbox_the_store_and_ray_out_of_reach():
    modules = modules_of("evo/search")
    assert "evo.search.policy" in modules
    done = _import_without(("ray", "duckdb", "evo.sandbox", "evo.store", "evo.workers", "evo.engine"), modules)
    assert done.returncode == 0, done.stderr


def test_the_import_check_fails_on_a_forbidden_import():
    done = _import_without(("evo.store",), ["evo.store.reader"])
    assert done.returncode != 0 and "out of reach" in done.stderr


def test_the_training_side_starts_with_nothing_but_the_channel():
    """prepare.py imports the channel in the training process: that import loads no other part of evo."""
    script = ("import sys\nimport evo.sandbox.child.channel\n"
              "print(sorted(m for m in sys.modules if m == 'evo' or m.startswith('evo.')))\n")
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == str(["evo", "evo.sandbox", "evo.sandbox.child", "evo.sandbox.child.channel"])


def test_only_the_cli_prints():
    printing = []
    for path in sorted((ROOT / "evo").rglob("*.py")):
        if "cli" in path.relative_to(ROOT / "evo").parts[:1]:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                printing.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert printing == []
