"""A score measured n times is written one way (evo.text.mean_std), by `evo status`, the live view, `evo run`'s last
lines and `evo lineage`."""

from types import SimpleNamespace

from evo.cli.live import summary_lines
from evo.cli.store_cmds import _bpb as lineage_bpb
from evo.run_status import Best, EvaluationCounts, RunStatus
from evo.text import mean_std


def test_the_spread_only_where_there_is_one():
    assert mean_std(3.123456, 0.00123, 3) == "3.1235 ± 0.0012 (n=3)"
    assert mean_std(3.123456, None, 3) == "3.1235 (n=3)"
    assert mean_std(3.123456, 0.0, 1) == "3.1235 (n=1)"
    assert mean_std(3.1, 0.01, 2, "abc", "test 3.2000") == "3.1000 ± 0.0100 (n=2, abc, test 3.2000)"


def test_status_and_lineage_write_it_so():
    best = Best(id="abc123", mean_bpb=3.1, std_bpb=0.01, n=2, n_confirm=1, score=3.11, test_bpb=3.2)
    status = RunStatus.build(run_id="r", phase="search", active_seconds=1.0, busy_seconds=1.0, workers=1, best=best,
                             evaluations=EvaluationCounts(), target_evaluations=None, noise_floor=None, population=2,
                             individuals=2, llm_cost_usd=0.0, llm_calls=0)
    assert "best             3.1000 ± 0.0100 (n=2, abc123, test 3.2000)" in summary_lines(status)
    step = SimpleNamespace(mean_bpb=3.1, std_bpb=0.01, n=1)
    assert lineage_bpb(step) == "3.1000 (n=1)"
