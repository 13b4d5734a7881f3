"""`evo status`: the live driver's own status while a run is live, else the same summary rebuilt from the store."""

from __future__ import annotations

import json

from evo.errors import StoreError
from evo.live import summary_lines


def live_actor(db: str):
    """The Population actor of the live run holding db, or None when no live run holds it (connects Ray)."""
    from evo.store import lock_is_live, read_lock

    info = read_lock(db)
    if not info or not lock_is_live(info) or not info.get("actor"):
        return None
    import ray

    if not ray.is_initialized():
        ray.init(address=info["ray_address"], namespace=info["namespace"], logging_level="ERROR",
                 log_to_driver=False)
    try:
        return ray.get_actor(info["actor"], namespace=info["namespace"])
    except ValueError:
        raise StoreError(f"{db} is held by a live run whose driver cannot be reached ({info['actor']})") from None


def status_from_store(reader, run=None) -> dict:
    """The status dict of a run (the latest by default) from its rows and saved state."""
    run = run or reader.latest_run()
    if run is None:
        raise StoreError(f"{reader.path} has no run")
    state = run.state or {}
    counters = state.get("counters", {})
    evaluations = reader.evaluations(run.run_id)
    count = lambda purpose: sum(1 for e in evaluations if e.purpose == purpose and e.status != "interrupted")
    failed = sum(1 for e in evaluations if e.status not in ("ok", "interrupted"))
    population = set(reader.population(run.run_id))
    fitness = [f for f in reader.fitness(run.run_id) if f.individual_id in population]
    best = None
    if fitness:
        f = min(fitness, key=lambda f: (f.score, f.individual_id))
        best = {"id": f.individual_id, "mean_bpb": f.mean_bpb, "std_bpb": f.std_bpb, "n": f.n,
                "n_confirm": f.n_confirm, "score": f.score}
    elapsed = max(counters.get("active_seconds", 0.0), 1e-9)
    workers = state.get("workers", 1)
    done = sum(1 for e in evaluations if e.purpose in ("search", "confirm", "noise") and e.status != "interrupted")
    llm_calls = reader.query(f"SELECT count(*) FROM llm_calls WHERE run_id = '{run.run_id}'")[1][0][0]
    return {
        "run_id": run.run_id, "status": run.status, "phase": state.get("phase", "-"), "elapsed_s": elapsed,
        "best": best,
        "evaluations": {"search_done": count("search"), "confirm_done": count("confirm"),
                        "noise_done": count("noise"), "running": 0, "failed": failed,
                        "invalid": len(reader.individuals(run.run_id, status="invalid"))},
        "target_evaluations": run.config.get("evaluations"), "noise_floor": run.noise_floor,
        "evals_per_hour": done / elapsed * 3600, "workers": workers,
        "utilisation": min(1.0, counters.get("busy_seconds", 0.0) / (elapsed * max(1, workers))),
        "population": len(population), "individuals": len(reader.individuals(run.run_id)),
        "llm_cost_usd": reader.llm_cost(run.run_id), "llm_calls": llm_calls,
    }


def get_status(db: str) -> dict:
    from pathlib import Path

    from evo.store import open_reader

    actor = live_actor(db)
    if actor is not None:
        import ray

        return ray.get(actor.status.remote(), timeout=30)
    if not Path(db).exists():
        raise StoreError(f"no database at {db}")
    with open_reader(db) as reader:
        return status_from_store(reader)


def print_status(db: str, as_json: bool = False) -> int:
    status = get_status(db)
    if as_json:
        print(json.dumps(status, default=str))
    else:
        print("\n".join(summary_lines(status)))
    return 0
