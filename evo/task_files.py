"""The task files: where prepare.py, train.py and program.md come from, and `evo init`.

- Packaged: at the root of a source checkout, or under evo/packaged_task/ in an installed wheel (genome's
  packaged_task_dirs() is the one list of those places).
- In use: a directory's own prepare.py where it has one (a checkout, or a folder made by `evo init`), else the
  packaged one.
- kernels.py is fixed like prepare.py: train.py imports it, and the sandbox copies it read-only next to the child.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from types import ModuleType

from evo.errors import ConfigError, TaskError

TASK_FILES = ("prepare.py", "kernels.py", "train.py", "program.md")
# Fixed files a child's train.py may import, copied read-only next to it in the sandbox.
HARNESS_FILES = ("prepare.py", "kernels.py")


def packaged_task_dir() -> Path:
    """The folder holding the task files shipped with evo: the first of genome's packaged_task_dirs() (where they
    can be, decided there once) that holds all of them."""
    from genome.harness_api import packaged_task_dirs  # here: the sandbox imports this module, and never genome

    for candidate in packaged_task_dirs():
        if all((candidate / name).is_file() for name in TASK_FILES):
            return candidate
    raise TaskError(f"the task files ({', '.join(TASK_FILES)}) are missing from this installation of evo")


def task_dir(cwd: Path | None = None) -> Path:
    """The task in use: the current directory when it has a prepare.py, else the packaged one."""
    cwd = Path.cwd() if cwd is None else cwd
    return cwd if (cwd / "prepare.py").is_file() else packaged_task_dir()


def harness_path(cwd: Path | None = None) -> Path:
    return task_dir(cwd) / "prepare.py"


def fixed_files(harness: Path) -> tuple[Path, ...]:
    """The fixed files beside a harness other than prepare.py itself (kernels.py), those that exist."""
    return tuple(harness.parent / name for name in HARNESS_FILES[1:] if (harness.parent / name).is_file())


def load_harness(path: Path) -> ModuleType:
    """Imports a prepare.py under a private name, for its cache and dataset helpers."""
    name = f"_evo_harness_{abs(hash(str(path)))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise TaskError(f"{path}: cannot be loaded as a harness")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def read_genome_file(path: str) -> str:
    """The text of a train.py given on the command line, checked to exist and to parse."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        source = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot be read ({e})") from None
    try:
        ast.parse(source, filename=path)
    except SyntaxError as e:
        raise ConfigError(f"{path} does not parse: line {e.lineno}: {e.msg}") from None
    return source


def init_task(target: str, force: bool = False) -> list[Path]:
    """Writes the task files into target (created if needed); refuses to overwrite unless force."""
    dest = Path(target)
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{target} exists and is not a directory")
    existing = [name for name in TASK_FILES if (dest / name).exists()]
    if existing and not force:
        raise ConfigError(f"{target} already has {', '.join(existing)}; use --force to overwrite")
    source = packaged_task_dir()
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for name in TASK_FILES:
        shutil.copyfile(source / name, dest / name)
        written.append(dest / name)
    return written


# What the training phase must not see of this task's layout, even where the shield's allow-list would show it
# (the corpus package sits in site-packages, which the runtime binds).

def _source_paths(dataset: Path) -> list[Path]:
    """The raw text the dataset was made from, as its meta.json records it."""
    try:
        key = json.loads((dataset / "meta.json").read_text()).get("key", {})
    except (OSError, ValueError):
        key = {}
    paths = []
    spec = importlib.util.find_spec("bible")
    if spec is not None and spec.submodule_search_locations:  # the embedded corpus sits in site-packages
        paths.append(Path(list(spec.submodule_search_locations)[0]) / "data")
    if key.get("kind") == "files":
        paths += [Path(entry[0]) for entry in key.get("files", []) if entry]
    return paths


def hidden_paths(dataset: Path, cache_root: Path | None = None) -> list[Path]:
    """What stays covered in the training phase: the data cache (cache_root, the harness's cache_dir(), which the
    caller asks the harness for), the raw corpus and the dataset itself, with the bundle folder above `datasets/`."""
    found = [dataset.resolve()] + _source_paths(dataset) + ([Path(cache_root)] if cache_root else [])
    parent = dataset.resolve().parent
    if parent.name == "datasets":
        found.append(parent.parent)
    return [p for p in dict.fromkeys(p.resolve() for p in found) if p.exists()]
