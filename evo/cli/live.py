"""What a run looks like while it runs: a live panel on a terminal, plain log lines otherwise. Both render the same
RunStatus (the run actor's while live, rebuilt from the store by `evo status` afterwards)."""

from __future__ import annotations

import sys
import time

from evo.run_status import Best, RunStatus
from evo.text import mean_std, one_line


def _bpb(best: Best | None) -> str:
    if not best:
        return "none yet"
    test = [f"test {best.test_bpb:.4f}"] if best.test_bpb is not None else []
    return mean_std(best.mean_bpb, best.std_bpb, best.n, best.id, *test)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m{seconds % 60:02d}s" if seconds >= 3600 else \
        f"{seconds // 60}m{seconds % 60:02d}s"


def summary_lines(s: RunStatus) -> list[str]:
    """The status as a few labelled lines (used by `evo status` and the terminal view), each escaped (evo.text):
    a run's ids, phase and notes pass through the store, where a child's text may sit beside them."""
    ev = s.evaluations
    target = f"/{s.target_evaluations}" if s.target_evaluations else ""
    return [one_line(line) for line in [
        f"run {s.run_id}  {s.status}  elapsed {_duration(s.elapsed_s)}  phase {s.phase}",
        f"best             {_bpb(s.best)}",
        f"search evals     {ev.search_done}{target} done, {ev.running} running, {ev.failed} failed",
        f"confirm evals    {ev.confirm_done} done   noise evals {ev.noise_done}"
        + (f"   noise floor {s.noise_floor:.4f}" if s.noise_floor is not None else ""),
        f"throughput       {s.evals_per_hour:.1f} evaluations/hour, workers {s.workers} "
        f"at {s.utilisation * 100:.0f}% busy",
        f"population       {s.population} members, {s.individuals} individuals proposed",
        f"llm spend        ${s.llm_cost_usd:.4f} over {s.llm_calls} calls",
    ]]


def plain_line(s: RunStatus) -> str:
    """One log line for a non-terminal stdout."""
    ev = s.evaluations
    best = f"best {s.best.mean_bpb:.4f} (n={s.best.n})" if s.best else "best -"
    return one_line(f"[{_duration(s.elapsed_s)}] {s.phase}: {best}; search {ev.search_done} done, "
                    f"{ev.running} running, {ev.failed} failed; confirm {ev.confirm_done}; "
                    f"{s.evals_per_hour:.0f}/h; workers {s.utilisation * 100:.0f}% busy; llm ${s.llm_cost_usd:.2f}")


def panel(s: RunStatus):
    """The terminal view's panel: summary_lines() as rich Text, not a string, which rich would read as markup."""
    from rich.panel import Panel
    from rich.text import Text

    return Panel(Text("\n".join(summary_lines(s))), title="evo run")


class LiveView:
    """Shows status updates: a rich panel when stdout is a terminal, else a plain line whenever work finishes."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.tty = sys.stdout.isatty()
        self._live = None
        self._last_key = None
        self._last_print = 0.0

    def __enter__(self):
        if self.tty and not self.quiet:
            from rich.live import Live

            self._live = Live(refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def update(self, status: RunStatus) -> None:
        if self.quiet:
            return
        if self._live is not None:
            self._live.update(panel(status))
            return
        ev = status.evaluations
        key = (ev.search_done, ev.confirm_done, ev.noise_done, ev.failed, status.phase)
        if key != self._last_key or time.time() - self._last_print > 60:
            print(plain_line(status), flush=True)
            self._last_key, self._last_print = key, time.time()

    def __exit__(self, *exc):
        if self._live is not None:
            self._live.__exit__(*exc)
        return False
