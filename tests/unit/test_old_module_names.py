"""Task folders written by `evo init` before the boundary became the evo.sandbox package keep a prepare.py that
imports evo.channel and evo.graph_export: those names still hold what such a prepare.py takes from them, the very
same objects as the package's, and they load nothing beyond the new modules."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What every prepare.py that `evo init` has written imports from evo, by module.
OLD_IMPORTS = {
    "evo.channel": ("evo.sandbox.child.channel", ("TrainingClient", "CHANNEL_VAR", "ChannelError")),
    "evo.graph_export": ("evo.sandbox.child.graph_export", ("ExportError", "export_model", "weights_snapshot")),
}


@pytest.mark.parametrize("old", OLD_IMPORTS)
def test_the_old_name_hands_over_the_same_objects(old):
    new, names = OLD_IMPORTS[old]
    script = (f"import importlib\nold = importlib.import_module({old!r})\nnew = importlib.import_module({new!r})\n"
              f"for name in {names!r}:\n    assert getattr(old, name) is getattr(new, name), name\n")
    done = subprocess.run([sys.executable, "-I", "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_the_current_prepare_imports_the_new_names():
    text = (ROOT / "prepare.py").read_text()
    assert "from evo.sandbox.child.channel import" in text and "from evo.sandbox.child.graph_export import" in text
    assert "from evo.channel import" not in text and "from evo.graph_export import" not in text
