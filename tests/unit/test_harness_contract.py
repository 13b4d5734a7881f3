"""The harness API is defined once, in prepare.py's `__all__`: the validator, the LLM prompts, the seed train.py and
program.md all agree with it, and genome reads it without importing evo or the harness."""

import ast
import re
import subprocess
import sys

import pytest

import prepare
from genome import (
    HARNESS_API,
    HARNESS_NAMES,
    HarnessAPIError,
    read_harness_api,
    validate,
)
from genome.harness_api import packaged_harness
from operators.prompts import SYSTEM
from tests.support.genomes import ROOT, seed_source


def test_the_static_reading_is_the_modules_own_all():
    assert read_harness_api(ROOT / "prepare.py") == tuple(prepare.__all__) == HARNESS_NAMES
    assert packaged_harness() == ROOT / "prepare.py"
    assert all(hasattr(prepare, name) for name in prepare.__all__)


def test_the_validators_allowed_names_are_all():
    assert HARNESS_API == set(prepare.__all__)
    imports = "from prepare import " + ", ".join(prepare.__all__)
    source = seed_source().replace("from prepare import SEQ_LEN, progress, seed, submit, train_batches, vocab_size",
                                   imports)
    assert source != seed_source() and validate(source).ok, validate(source).reason


@pytest.mark.parametrize("name", ["active_dataset", "evaluate_program", "cache_dir", "_current", "HarnessError"])
def test_a_name_outside_all_is_rejected(name):
    assert name not in prepare.__all__
    source = f"from prepare import {name}\n" + seed_source()
    result = validate(source)
    assert not result.ok and result.line == 1 and f"imports {name} from prepare" in result.reason


def test_a_caller_may_validate_against_another_harness(tmp_path):
    harness = tmp_path / "prepare.py"
    harness.write_text('__all__ = ["seed", "train_batches", "submit", "progress", "vocab_size", "SEQ_LEN", '
                       '"extra"]\n')
    api = read_harness_api(harness)
    assert validate("from prepare import extra\n" + seed_source(), api=api).ok
    assert not validate("from prepare import extra\n" + seed_source()).ok
    assert not validate(seed_source(), api=("seed", "submit")).ok  # the seed imports train_batches


def test_the_seed_train_py_imports_only_names_in_all():
    tree = ast.parse((ROOT / "train.py").read_text())
    imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "prepare"
                for a in node.names}
    assert imported and imported <= set(prepare.__all__)


def test_program_md_lists_exactly_the_names_in_all():
    text = (ROOT / "program.md").read_text()
    bullet = re.search(r"^- Use only the harness API.*?(?=^- |\Z)", text, re.M | re.S)
    assert bullet, "program.md has no 'Use only the harness API' bullet"
    listed = re.findall(r"`([A-Za-z_]\w*)", bullet.group(0))
    assert len(listed) == len(set(listed)) and set(listed) == set(prepare.__all__)


def test_the_prompt_quotes_all_in_its_order():
    line = next(ln for ln in SYSTEM.splitlines() if "from prepare import" in ln)
    quoted = line.split(" of: ", 1)[1].rstrip(".").split(", ")
    assert quoted == list(prepare.__all__)


@pytest.mark.parametrize("text, words", [
    ("x = 1\n", "no `__all__ = [...]`"),
    ("__all__ = names()\n", "must be a literal list of names"),
    ("__all__ = ['seed', 'not a name']\n", "must be a literal list of names"),
    ("__all__ = []\n", "must be a literal list of names"),
    ("def broken(:\n", "does not parse"),
])
def test_a_harness_without_a_readable_all_is_one_clear_error(tmp_path, text, words):
    harness = tmp_path / "prepare.py"
    harness.write_text(text)
    with pytest.raises(HarnessAPIError, match=re.escape(words)) as info:
        read_harness_api(harness)
    assert str(harness) in str(info.value) and "\n" not in str(info.value)


def test_genome_reads_the_api_without_importing_evo_or_the_harness():
    code = ("import sys, genome, genome.validate\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('evo', 'prepare', 'torch'))\n"
            "print(loaded)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
