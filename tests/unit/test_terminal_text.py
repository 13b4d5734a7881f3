"""What a child wrote is shown with its control characters escaped: the escaping itself, the live view's lines and
panel, and the plots' labels (the commands that print a store are tested in tests/integration)."""

import io

from evo.cli.live import panel, plain_line, summary_lines
from evo.plot import _label
from evo.run_status import EvaluationCounts, RunStatus
from evo.store import open_writer
from evo.text import one_line, printable

ESC, BEL, CSI = "\x1b", "\x07", "\x9b"
# What children print to take over a terminal: a window title, the clipboard, a cleared screen, a line drawn over
# by CR and backspace, a C1 CSI, a right-to-left override, a zero-width joiner hiding in a word.
ATTACK = (f"{ESC}]0;pwned{BEL}{ESC}]52;c;ZWNobw=={BEL}{ESC}[2J{ESC}[Hloss 3.2\rval_bpb 0.1\b\b\x00\x7f"
          f"{CSI}31m\u202etxt.exe\u200d")
UNSAFE = set(map(chr, [*range(0x00, 0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0), 0x202e, 0x200d]))


def raw_controls(text: str) -> set[str]:
    return {c for c in text if c in UNSAFE}


def test_control_characters_are_escaped_and_text_is_kept():
    shown = printable(ATTACK + "\n\tcafé 日本\n")
    assert not raw_controls(shown)
    assert shown == ("\\x1b]0;pwned\\x07\\x1b]52;c;ZWNobw==\\x07\\x1b[2J\\x1b[Hloss 3.2\\rval_bpb 0.1\\x08\\x08"
                     "\\x00\\x7f\\x9b31m\\u202etxt.exe\\u200d\n\tcafé 日本\n")
    assert one_line("status: crash\nstatus: ok\r") == "status: crash\\nstatus: ok\\r"
    assert printable(None) == "" and printable(3.5) == "3.5"


def test_the_live_view_escapes_what_it_shows_and_its_panel_reads_no_markup():
    from rich.console import Console

    best = {"id": f"{ESC}[2J[bold red]abc{BEL}", "mean_bpb": 2.9, "std_bpb": None, "n": 1, "n_confirm": 0,
            "score": 2.9}
    status = RunStatus.build(run_id="r1", phase="search", active_seconds=60.0, busy_seconds=30.0, workers=2,
                             best=best, evaluations=EvaluationCounts(search_done=3), target_evaluations=8,
                             noise_floor=None, population=4, individuals=5, llm_cost_usd=0.0, llm_calls=0)
    lines = summary_lines(status)
    assert not raw_controls("\n".join(lines) + plain_line(status))
    assert "\\x1b[2J[bold red]abc\\x07" in lines[1]
    out = io.StringIO()
    Console(file=out, force_terminal=False, width=200).print(panel(status))
    assert "[bold red]abc" in out.getvalue()  # shown as written, not read as rich's markup


def test_plot_labels_escape_a_description_written_for_a_child(tmp_path):
    store = open_writer(tmp_path / "evo.duckdb")
    try:
        run = store.new_run({})
        seed = store.add_individual(run, source="A = 1\n", operator="seed")
        child = store.add_individual(run, source="A = 2\n", operator="llm.mutate", parents=[seed],
                                     description=f"{ESC}]0;t{BEL}raise A\r$\\frac{{$ {CSI}2J")
        individual = store.individual(run, child, with_source=False)
    finally:
        store.close()
    label = _label(individual)
    assert not raw_controls(label)
    assert label == "llm.mutate: \\x1b]0;t\\x07raise A\\r\\$\\frac{\\$ \\x9b2J"
