"""The README's repository layout matches the tree: every module and package of evo/ (and of its sandbox and
search packages) is named there, and every Python file it names exists."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SKIP = {"__init__.py", "__main__.py", "__pycache__", "packaged_task"}


def layout() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Repository layout", 1)[1]
    return section.split("```", 2)[1]


def entries(folder: Path) -> list[str]:
    return sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir()
                  if p.name not in SKIP and (p.is_dir() or p.suffix == ".py"))


def test_every_part_of_evo_is_in_the_layout():
    text = layout()
    missing = [f"{folder}/{name}" for folder in ("evo", "evo/sandbox", "evo/search")
               for name in entries(ROOT / folder) if not re.search(rf"(?<![\w/]){re.escape(name)}", text)]
    assert missing == []


def test_every_file_the_layout_names_exists():
    names = set(re.findall(r"(?<![\w/.])([a-z_]+\.py)\b", layout()))
    assert "evaluation.py" in names and "policy.py" in names
    files = {p.name for p in ROOT.rglob("*.py") if ".venv" not in p.parts}
    assert sorted(names - files) == []
