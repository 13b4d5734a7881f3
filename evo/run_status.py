"""What a run is doing, as one record (RunStatus):

- built by the engine while the run is live (from the policy's counters) and rebuilt from the store afterwards
- rendered by the live view, `evo status` and `evo status --json` (`as_dict()`)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from evo.choices import ENDED, Phase


@dataclass(frozen=True)
class Best:
    """The population member with the best noise-aware score."""

    id: str
    mean_bpb: float
    std_bpb: float | None
    n: int
    n_confirm: int
    score: float
    test_bpb: float | None = None   # mean bpb on the test split over the evaluations that measured it (no selection
                                    # reads it: it says how much the search overfit the validation split)


@dataclass(frozen=True)
class EvaluationCounts:
    """Evaluations done per purpose (interrupted ones not counted), running now (a worker has them), failed, and
    children the operators could not make."""

    search_done: int = 0
    confirm_done: int = 0
    noise_done: int = 0
    running: int = 0
    failed: int = 0
    invalid: int = 0

    @property
    def done(self) -> int:
        return self.search_done + self.confirm_done + self.noise_done

    @classmethod
    def of(cls, counters: Any, running: int = 0) -> EvaluationCounts:
        """The counts from a live search's counters (evo.search.policy.Counters, the source: every field here but
        running is one of its fields, by the same name) and the evaluations running now."""
        return cls(**{f.name: getattr(counters, f.name) for f in dataclasses.fields(cls) if f.name != "running"},
                   running=running)


@dataclass(frozen=True)
class RunStatus:
    run_id: str
    status: str                      # running, finished, interrupted or failed
    phase: str                       # a Phase (noise, search, final, finished, interrupted, failed); "-" before
                                     # a stored run saved its first state
    elapsed_s: float                 # seconds the run has been active (over every sitting of a resumed run)
    best: Best | None
    evaluations: EvaluationCounts
    target_evaluations: int | None
    noise_floor: float | None
    evals_per_hour: float
    workers: int
    utilisation: float               # share of the workers' time spent inside evaluations
    population: int
    individuals: int
    llm_cost_usd: float
    llm_calls: int
    error: str | None = None
    notes: tuple[str, ...] = ()     # what the user should hear about the run (a worker left out), one line each

    @classmethod
    def build(cls, *, run_id: str, phase: Phase | str, status: str | None = None, active_seconds: float,
              busy_seconds: float, workers: int, best: Best | dict | None, evaluations: EvaluationCounts,
              **rest) -> "RunStatus":
        """A status whose rates are derived from the counters (throughput, utilisation) the same way wherever it
        is built; without a status, the run's is its phase once the phase has ended, else running."""
        elapsed = max(active_seconds, 1e-9)
        if isinstance(best, dict):
            best = Best(**best)
        return cls(run_id=run_id, status=status or (str(phase) if phase in ENDED else "running"), phase=phase,
                   elapsed_s=elapsed, best=best, evaluations=evaluations,
                   evals_per_hour=evaluations.done / elapsed * 3600, workers=workers,
                   utilisation=min(1.0, busy_seconds / (elapsed * max(1, workers))), **rest)

    def failed(self, error: str) -> "RunStatus":
        return dataclasses.replace(self, status="failed", error=error)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)
