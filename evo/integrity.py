"""Caught once, out: which failed evaluations say a child cheated, and what that costs it and its descendants.

- A violation: the harness refused the child's model (status `rejected`: the causality check, an archive that
  breaks the scoring protocol, logits of the wrong shape), or the training process broke the batch protocol.
- Not one: an honest divergence (a rejection whose reason starts with "non-finite": the model's numbers blew up,
  nothing was forged); a crash, a timeout or an oom (failures).

    violation(status, error)   the reason, or None
    DISQUALIFIED               how the store says it: the individual's status `rejected`, its reason starting so

- A child with one violation among its evaluations is disqualified: it leaves the population and is never
  ranked, whatever its other evaluations scored (evo.search.policy).
- Its descendants stay (each of their evaluations is checked the same way, so a descendant keeps its place until
  it is caught itself), but one is crowned the run's best only with an ok confirmation of its own.
"""

from __future__ import annotations

from evo.results import NON_FINITE

HONEST = NON_FINITE                                              # a rejection that is a divergence, not a cheat
PROTOCOL = "the training process broke the harness protocol"    # evo.sandbox.evaluation's reason for a broken protocol
DISQUALIFIED = "disqualified: "


def violation(status: str | None, error: str | None) -> str | None:
    """Why an evaluation with this status and error shows a cheat, or None when it does not."""
    error = error or ""
    if status == "rejected" and not error.startswith(HONEST):
        return error or "rejected by the harness"
    if error.startswith(PROTOCOL):
        return error
    return None


def disqualification(purpose: str, seed: int | None, reason: str) -> str:
    """The individual's reason in the store: which evaluation caught it, and why."""
    return f"{DISQUALIFIED}its {purpose} evaluation on seed {seed} was rejected: {reason}"
