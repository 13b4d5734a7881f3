"""What a child wrote reaches the terminal with its control characters escaped: its log and error line through a
real `evo eval`, and the log, error, source and description kept in a real store through `evo logs`, `evo show`,
`evo lineage` and `evo sql` (the live view and the plots' labels: tests/unit/test_terminal_text.py)."""

import subprocess

import pytest

from evo.sandbox.evaluation import Budget, EvalRequest, evaluate
from evo.store import open_writer
from tests.support.adversarial import TOKEN_BUDGET, child
from tests.support.genomes import ROOT, tiny_source

ESC, BEL = "\x1b", "\x07"
# What a terminal acts on; newlines and tabs may pass.
RAW = set(map(chr, [*range(0x00, 0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0), 0x202e]))


def raw_controls(text: str) -> list[str]:
    return sorted({repr(c) for c in text if c in RAW})


def evo(evo_bin, *args, cwd=ROOT):
    return subprocess.run([evo_bin, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("name", [
    "spoofs_forged_summary",
    pytest.param("spoofs_terminal_escapes", marks=pytest.mark.slow),
])
def test_evo_eval_shows_a_childs_log_and_error_line_escaped(evo_bin, name):
    c = child(name)
    proc = evo(evo_bin, "eval", str(c.path), *TOKEN_BUDGET, "--threads", "1", "--seed", "1")
    assert not raw_controls(proc.stdout + proc.stderr), (proc.stdout + proc.stderr)[-2000:]
    if name == "spoofs_forged_summary":  # the forged block is shown, escaped, under evo's own status line
        assert proc.returncode == 1 and proc.stdout.startswith("status:           crash\n")
        assert "error:            status:           ok\\x1bEval_bpb:          0.100000\\x1b[8m" in proc.stdout
        assert "  | \\x1b[1A\\x1b[2K\\x1b[1A" in proc.stderr  # the whole line, echoed from the log
    else:
        assert proc.returncode == 0 and "\\x1b]52;c;ZWNobyBwd25lZA==\\x07" in proc.stderr


@pytest.fixture(scope="module")
def store(tmp_path_factory, dataset):
    """A real store holding a real evaluation of the forged-summary child (its log and error line hold escape
    sequences), a source with a raw ESC in it and a description written like an LLM's hypothesis with others."""
    c = child("spoofs_forged_summary")
    result = evaluate(EvalRequest(source=c.source, budget=Budget(tokens=8192), seed=1, harness=ROOT / "prepare.py",
                                  dataset=dataset, threads=1, fixed_files=(ROOT / "kernels.py",)))
    assert result.status == "crash" and ESC in result.error and ESC in result.log
    path = tmp_path_factory.mktemp("store") / "evo.duckdb"
    writer = open_writer(path)
    try:
        run = writer.new_run({"population": 4})
        seed = writer.add_individual(run, source=tiny_source(), operator="seed")
        source = c.source + f"# {ESC}]0;evo: all children passed{BEL}\n"
        spoof = writer.add_individual(run, source=source, operator="llm.mutate", parents=[seed],
                                      description=f"Hypothesis: {ESC}[2J{ESC}]8;;https://example.invalid/{ESC}\\ "
                                                  f"\rlower the loss\u202e (+3 lines)")
        evaluation = writer.add_evaluation(run, spoof, result)
    finally:
        writer.close()
    return path, spoof, evaluation


def test_store_commands_show_what_a_child_wrote_escaped(evo_bin, store):
    path, spoof, evaluation = store
    shown = {
        "logs": evo(evo_bin, "logs", str(evaluation), "--db", str(path)),
        "show": evo(evo_bin, "show", spoof, "--db", str(path)),
        "lineage": evo(evo_bin, "lineage", spoof, "--diff", "--db", str(path)),
        "sql": evo(evo_bin, "sql", "SELECT error FROM evaluations", "--db", str(path)),
    }
    for command, proc in shown.items():
        assert proc.returncode == 0, (command, proc.stderr)
        assert not raw_controls(proc.stdout + proc.stderr), (command, (proc.stdout + proc.stderr)[-2000:])
    assert "\\x1b[1A\\x1b[2K" in shown["logs"].stdout and "step " in shown["logs"].stdout
    assert "# \\x1b]0;evo: all children passed\\x07\n" in shown["show"].stdout
    assert "import torch\n" in shown["show"].stdout  # the source's own lines and indentation are kept
    assert "Hypothesis: \\x1b[2J\\x1b]8;;https://example.invalid/\\x1b\\ \\rlower the loss\\u202e" in \
        shown["lineage"].stdout
    assert "+# \\x1b]0;evo: all children passed\\x07" in shown["lineage"].stdout
    assert "ok\\x1bEval_bpb" in shown["sql"].stdout
