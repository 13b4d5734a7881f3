"""The engine under load: evaluations that only sleep, through the executor (evo.engine), its search policy, the
operators, Ray workers and the real DuckDB store.

    python benchmarks/engine.py [--workers 1,2,64] [--sleep 10,10,60] [--evaluations 4] [--real-workers 1,2]
        [--real-sleep 5] [--llm-latency 10] [--llm-workers 8] [--llm-sleep 60] [--llm-evaluations 32]
        [--load 10000] [--load-workers 8] [--out benchmarks/results/engine.json] [--markdown benchmarks/RESULTS.md]

A count of 0 (or an empty list) skips that part. The parts:

- real: --real-workers real worker actors (evo.workers.Worker, started as the run actor starts them, one CPU
  share each) evaluating a genome that sleeps --real-sleep seconds through the whole sandbox (training process,
  batch server, scorer), as `evo run --no-preflight --population 4 --noise-seeds 2 --confirm-seeds 1` would;
- simulated: --workers simulated workers, each entry's evaluations sleeping its --sleep seconds;
- llm: --llm-workers simulated workers sleeping --llm-sleep seconds, children made only by the LLM operators
  (llm.mutate, llm.crossover) through the real `anthropic` client against the local Messages-API test server
  (tests/support/messages_server.py), which answers every request after --llm-latency seconds;
- load: --load search evaluations on --load-workers simulated workers that sleep 0 s, so the engine and the store
  are all there is to measure; with its exactly-once checks, this is the store's load test.
--evaluations is the number of search evaluations per worker in the real and simulated parts.

What is simulated: only the worker. A simulated worker is a Ray actor method that sleeps instead of starting the
training subprocess, and returns a record shaped like the sandbox's (status ok; val_bpb a fixed function of the
source's hyperparameters, lowest at a hidden optimum, plus seed noise, so children inherit their parents' fitness
and lineages grow as in a search; tokens, training seconds). Up to 8 simulated workers share one actor process;
each takes one evaluation at a time through Ray, as a real worker does. Everything else is what `evo run` runs: the
Engine (here in this process; `evo run` puts it in the Population actor, which adds nothing on an evaluation's
way), the search policy, the offline or LLM operators with the static validator, the WorkerPool, Ray's task
submission and the StoreWriter on a DuckDB file. A thread asks the engine for its status once a second, as
`evo run` does.

Measured, from the store's evaluation rows (start and end as the workers saw them) and a stopwatch around each of
the engine's store writes:

- window: from the end of the noise phase to the start of the last search evaluation. The noise phase's barrier
  (workers waiting for the seed's measurements) and the wind-down (workers with nothing left to run) are outside;
- utilisation: time the workers spent inside evaluations in the window / (workers x the window); for the llm part
  its complement is the share of worker time spent waiting (for a proposal, or for the engine);
- turnaround: per worker, the idle time between finishing one evaluation and starting the next, in the window:
  Ray returning the result, the engine committing it to the store (it is committed before the worker's next task
  goes out, so the write is part of the turnaround), reporting it to the policy, dispatching. This is the engine's
  overhead per evaluation. Its share of a 60 s budget is mean turnaround / 60 s: a fixed cost per evaluation,
  measured here with shorter sleeps. With real workers the sandbox's own cost (processes, imports, scoring) is
  reported apart: it is the evaluation's cost, spent inside the worker;
- store writes: seconds of store writes per stored evaluation (its add_evaluation and every write up to the next
  one: state, population, the proposals' individuals), their mean over the first and the last 500 evaluations,
  and the evaluations per second the writes alone would allow;
- exactly-once: every evaluation a worker ran is stored once (simulated workers tag each record with a call id),
  evaluation and individual ids are unique, no child has two search evaluations, every lineage edge's parent is an
  individual of the run, and the lineage has no cycle (every parent was stored before its child, a topological
  sort reaches every individual, and ancestry() of the deepest individual reaches the seed).

Timings depend on the machine and on whatever else runs on it; the command, the machine and the date are recorded
with them in --out, and the figures in --markdown's engine section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import duckdb  # noqa: E402
import ray  # noqa: E402

from benchmarks.task_baseline import cpu_model  # noqa: E402
from evo.config import RunConfig  # noqa: E402
from evo.engine import Engine  # noqa: E402
from evo.sandbox.environment import is_secret  # noqa: E402
from evo.store import open_writer  # noqa: E402
from operators.registry import REGISTRY  # noqa: E402
from tests.support.genomes import sleeper_source  # noqa: E402
from tests.support.sleeping_workers import SimulatedWorkers  # noqa: E402

ANCHOR = "import math"     # a line of train.py every LLM answer edits after, so each answer applies to any parent


# -- the store, timed ------------------------------------------------------------------------------------------------

class TimedStore:
    """The engine's StoreWriter with a stopwatch on each write; reads pass through."""

    WRITES = {"add_evaluation", "add_individual", "save_state", "set_population", "set_noise_floor", "finish_run"}

    def __init__(self, store):
        self.store = store
        self.by_method: dict[str, list[float]] = defaultdict(list)
        self.per_evaluation: list[float] = []   # an evaluation's add_evaluation and the writes up to the next one

    def __getattr__(self, name):
        attr = getattr(self.store, name)
        if name not in self.WRITES:
            return attr

        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return attr(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t
                self.by_method[name].append(dt)
                if name == "add_evaluation":
                    self.per_evaluation.append(dt)
                elif self.per_evaluation:
                    self.per_evaluation[-1] += dt
        return timed


# -- one run through the engine ------------------------------------------------------------------------------------

def run_engine(db: Path, config: RunConfig, workers: list, make_worker, seed_source: str, llm=None) -> dict:
    """Runs a search to its end on the given workers; returns the run id, the wall time, the timed store and the
    policy's counters."""
    store = TimedStore(open_writer(db))
    run_id = store.new_run(config.stored())
    engine = Engine(config, store, workers, make_worker, run_id=run_id, seed_source=seed_source,
                    program="Lower val_bpb.\n", llm_client=llm, environment={"benchmark": "engine"})
    stop = threading.Event()

    def poll():  # `evo run` asks for the status once a second
        while not stop.wait(1.0):
            engine.status()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    t0 = time.time()
    try:
        final = engine.run()
    finally:
        stop.set()
        poller.join()
    wall = time.time() - t0
    engine.threads.shutdown(wait=True)
    store.store.close()
    c = engine.policy.counters
    return {"run_id": run_id, "wall": wall, "store": store, "final": final,
            "dispatched": c.search_done + c.confirm_done + c.noise_done}


def evaluation_rows(db: Path, run_id: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT worker, purpose, epoch_us(started_at) / 1e6, epoch_us(finished_at) / 1e6, log, "
                           "total_seconds FROM evaluations WHERE run_id = ? AND status <> 'interrupted' "
                           "ORDER BY started_at", [run_id]).fetchall()


def timing(rows: list[tuple], workers: int) -> dict:
    """Utilisation and turnaround in the steady window: from the end of the noise phase to the start of the last
    search evaluation."""
    noise_end = max((end for _, p, _, end, _, _ in rows if p == "noise"), default=None)
    last_search = max((start for _, p, start, _, _, _ in rows if p == "search"), default=None)
    first, last = min(r[2] for r in rows), max(r[3] for r in rows)
    busy = sum(end - start for _, _, start, end, _, _ in rows)
    out = {"utilisation_whole_run": round(busy / (workers * (last - first)), 4)}
    if noise_end is None or last_search is None or last_search <= noise_end:
        return {**out, "window_s": 0.0, "utilisation": None, "turnaround_s": None}
    t0, t1 = noise_end, last_search
    in_window = sum(max(0.0, min(end, t1) - max(start, t0)) for _, _, start, end, _, _ in rows)
    gaps, first_wait = [], []
    by_worker = defaultdict(list)
    for worker, _, start, end, _, _ in rows:
        by_worker[worker].append((start, end))
    for spans in by_worker.values():
        spans.sort()
        gaps += [b[0] - a[1] for a, b in zip(spans, spans[1:]) if a[1] >= t0 and b[0] <= t1]
        after = [s for s, _ in spans if s >= t0]
        if after and after[0] <= t1:
            first_wait.append(max(0.0, after[0] - t0))
    out.update(window_s=round(t1 - t0, 2), utilisation=round(in_window / (workers * (t1 - t0)), 4),
               idle_share=round(1 - in_window / (workers * (t1 - t0)), 4),
               first_search_wait_s=round(statistics.fmean(first_wait), 3) if first_wait else None)
    if gaps:
        gaps.sort()
        out["turnaround_s"] = {"n": len(gaps), "median": round(statistics.median(gaps), 4),
                               "mean": round(statistics.fmean(gaps), 4),
                               "p95": round(gaps[int(0.95 * (len(gaps) - 1))], 4), "max": round(gaps[-1], 4)}
    else:
        out["turnaround_s"] = None
    return out


def store_figures(timed: TimedStore, db: Path, wall: float, stored: int) -> dict:
    per = timed.per_evaluation
    head, tail = per[:500], per[-500:]
    mean_ms = lambda xs: round(1000 * statistics.fmean(xs), 3) if xs else None  # noqa: E731
    return {
        "write_ms_per_evaluation": mean_ms(per),
        "write_ms_per_evaluation_first_500": mean_ms(head),
        "write_ms_per_evaluation_last_500": mean_ms(tail),
        "write_share_of_wall": round(sum(per) / wall, 4) if wall else None,
        "max_evaluations_per_s_by_writes": round(len(per) / sum(per), 1) if sum(per) else None,
        "by_method": {m: {"calls": len(ts), "mean_ms": mean_ms(ts), "first_500_ms": mean_ms(ts[:500]),
                          "last_500_ms": mean_ms(ts[-500:])}
                      for m, ts in sorted(timed.by_method.items())},
        "file_bytes": db.stat().st_size,
        "evaluations_stored": stored,
    }


def exactly_once(db: Path, run_id: str, served: list[str] | None, dispatched: int, search_wanted: int) -> dict:
    """Checks the stored run against what the workers ran; "ok" is True when every check holds."""
    with duckdb.connect(str(db), read_only=True) as con:
        one = lambda sql: con.execute(sql, [run_id]).fetchone()[0]  # noqa: E731
        stored = one("SELECT count(*) FROM evaluations WHERE run_id = ?")
        checks = {
            "evaluations_run": dispatched,
            "evaluations_stored": stored,
            "search_evaluations": one("SELECT count(*) FROM evaluations WHERE run_id = ? AND purpose = 'search'"),
            "search_evaluations_wanted": search_wanted,
            "duplicate_evaluation_ids": one("SELECT count(*) - count(DISTINCT id) FROM evaluations WHERE run_id = ?"),
            "duplicate_individual_ids": one("SELECT count(*) - count(DISTINCT id) FROM individuals WHERE run_id = ?"),
            "children_with_two_search_evaluations": one(
                "SELECT count(*) FROM (SELECT individual_id FROM evaluations WHERE run_id = ? AND purpose = 'search' "
                "GROUP BY individual_id HAVING count(*) > 1)"),
            "evaluations_of_unknown_individuals": one(
                "SELECT count(*) FROM evaluations e ANTI JOIN individuals i ON i.run_id = e.run_id "
                "AND i.id = e.individual_id WHERE e.run_id = ?"),
            "edges_without_parent": one(
                "SELECT count(*) FROM lineage l ANTI JOIN individuals p ON p.run_id = l.run_id AND p.id = l.parent_id "
                "AND p.uid = l.parent_uid WHERE l.run_id = ?"),
            "edges_to_a_younger_parent": one("SELECT count(*) FROM lineage WHERE run_id = ? "
                                             "AND parent_uid >= child_uid"),
        }
        ids = [r[0] for r in con.execute("SELECT id FROM individuals WHERE run_id = ?", [run_id]).fetchall()]
        edges = con.execute("SELECT child_id, parent_id FROM lineage WHERE run_id = ?", [run_id]).fetchall()
        checks["individuals"], checks["lineage_edges"] = len(ids), len(edges)
        checks["individuals_in_a_cycle"] = len(ids) - len(topological_order(ids, edges))
        deepest = con.execute("SELECT id FROM individuals WHERE run_id = ? ORDER BY generation DESC, birth LIMIT 1",
                              [run_id]).fetchone()[0]
        seed = con.execute("SELECT id FROM individuals WHERE run_id = ? AND operator = 'seed'", [run_id]).fetchone()[0]
        walk = dict(con.execute("SELECT id, depth FROM ancestry(?, in_run := ?)", [deepest, run_id]).fetchall())
        checks["deepest_ancestry_depth"] = walk.get(seed)
        if served is not None:
            tags = Counter(log.removeprefix("call ") for (log,) in con.execute(
                "SELECT log FROM evaluations WHERE run_id = ?", [run_id]).fetchall())
            checks["runs_not_stored"] = len(set(served) - set(tags))
            checks["runs_stored_twice"] = sum(1 for n in tags.values() if n > 1)
            checks["stored_without_a_run"] = len(set(tags) - set(served))
    zero = [k for k in checks if k.startswith(("duplicate", "children_with", "evaluations_of", "edges_", "runs_",
                                                "stored_without", "individuals_in"))]
    checks["ok"] = (all(checks[k] == 0 for k in zero) and stored == dispatched
                    and checks["search_evaluations"] == search_wanted and checks["deepest_ancestry_depth"] is not None)
    return checks


def topological_order(ids: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Kahn's algorithm from the parentless individuals down; an individual on a cycle is never reached."""
    waiting = Counter(child for child, _ in edges)
    children = defaultdict(list)
    for child, parent in edges:
        children[parent].append(child)
    ready = [i for i in ids if waiting[i] == 0]
    order = []
    while ready:
        node = ready.pop()
        order.append(node)
        for child in children[node]:
            waiting[child] -= 1
            if waiting[child] == 0:
                ready.append(child)
    return order


def rates(rows: list[tuple]) -> dict:
    """Evaluations per second over the first and the last 500 to finish, and over each tenth of the run."""
    ends = sorted(r[3] for r in rows)
    n = min(500, len(ends) // 2)
    out = {"evaluations_per_s_first_500": round((n - 1) / (ends[n - 1] - ends[0]), 2) if n > 2 else None,
           "evaluations_per_s_last_500": round((n - 1) / (ends[-1] - ends[-n]), 2) if n > 2 else None}
    if len(ends) >= 100:
        cuts = [ends[0]] + [ends[len(ends) * k // 10 - 1] for k in range(1, 11)]
        out["evaluations_per_s_by_tenth"] = [round(len(ends) / 10 / (b - a), 2) for a, b in zip(cuts, cuts[1:])]
    return out


def figures(name: str, db: Path, run: dict, workers: int, served: list[str] | None, search_wanted: int) -> dict:
    rows = evaluation_rows(db, run["run_id"])
    with duckdb.connect(str(db), read_only=True) as con:
        children = dict(con.execute("SELECT status, count(*) FROM individuals WHERE run_id = ? AND operator <> 'seed' "
                                    "GROUP BY status ORDER BY status", [run["run_id"]]).fetchall())
    return {"part": name, "workers": workers, "wall_s": round(run["wall"], 2),
            "evaluations": len(rows), "evaluations_per_s": round(len(rows) / run["wall"], 2), **rates(rows),
            **timing(rows, workers), "children": children,
            "store": store_figures(run["store"], db, run["wall"], len(rows)),
            "checks": exactly_once(db, run["run_id"], served, run["dispatched"], search_wanted)}


# -- the parts -----------------------------------------------------------------------------------------------------

def offline_config(search: int, **kw) -> RunConfig:
    return RunConfig(**{"population": 16, "evaluations": search, "budget_tokens": 1000,
                        "operators": REGISTRY.parse_weights("hyper,merge"), "preflight": False, **kw})


def simulated(work: Path, workers: int, sleep: float, search: int, name: str = "simulated", **kw) -> dict:
    seed_source = (ROOT / "train.py").read_text()
    pool = SimulatedWorkers(workers, sleep, seed_source)
    try:
        db = work / f"{name}-{workers}.duckdb"
        run = run_engine(db, offline_config(search, **kw), pool.slots, pool.make, seed_source)
        served = pool.calls()
    finally:
        pool.stop()
    return {**figures(name, db, run, workers, served, search), "sleep_s": sleep}


def real(work: Path, workers: int, sleep: float, search: int) -> dict:
    """Real worker actors, started as the run actor starts them, evaluating a sleeping genome."""
    from evo.evaluate_file import ensure_dataset
    from evo.sandbox import shield
    from evo.task_files import fixed_files, harness_path, load_harness
    from evo.workers import bundle_task, start_workers

    harness = harness_path(ROOT)
    dataset, _ = ensure_dataset(harness)
    bundle_ref = ray.put(bundle_task([harness, *fixed_files(harness)], dataset))
    per = (os.cpu_count() or 1) / workers
    shielded = shield.unavailable() is None

    def make(index: int):
        return start_workers(bundle_ref, 1, use_gpus=False, cpus_per_worker=per, threads=max(1, int(per)),
                             memory_mb=0, cache_root=str(load_harness(harness).cache_dir()),
                             name_prefix=f"worker-{index}", require_shield=shielded)[0]

    actors = [make(i) for i in range(workers)]
    source = "LEARNING_RATE = 0.01      # unused: something for the operators to change\n" + sleeper_source(sleep)
    try:
        db = work / f"real-{workers}.duckdb"
        run = run_engine(db, offline_config(search, population=4, noise_seeds=2, confirm_seeds=1), actors, make,
                         source)
    finally:
        for a in actors:
            ray.kill(a)
    out = {**figures("real", db, run, workers, None, search), "sleep_s": sleep, "shielded": shielded}
    rows = evaluation_rows(db, run["run_id"])
    out["evaluation_seconds_mean"] = round(statistics.fmean(r[3] - r[2] for r in rows), 2)
    out["sandbox_seconds_beyond_the_sleep_mean"] = round(out["evaluation_seconds_mean"] - sleep, 2)
    return out


def llm_answer(i: int) -> str:
    return (f"Hypothesis: note {i} changes nothing the harness can measure.\n\n"
            f"<<<<<<< SEARCH\n{ANCHOR}\n=======\n{ANCHOR}\n# note {i}\n>>>>>>> REPLACE\n")


def with_llm(work: Path, workers: int, sleep: float, search: int, latency: float) -> dict:
    from operators.llm_client import LLMClient, LLMSettings
    from tests.support.messages_server import MessagesServer, message

    seed_source = (ROOT / "train.py").read_text()
    pool = SimulatedWorkers(workers, sleep, seed_source)
    with MessagesServer() as server:
        server.script(*(message(llm_answer(i), delay=latency) for i in range(4 * search + 4 * workers + 16)))
        client = LLMClient(LLMSettings(api_key="benchmark", base_url=server.url, timeout_s=latency + 60,
                                       max_retries=0))
        config = RunConfig(population=16, evaluations=search, budget_tokens=1000, noise_seeds=2,
                           operators=REGISTRY.parse_weights("llm"), preflight=False)
        try:
            db = work / f"llm-{workers}.duckdb"
            run = run_engine(db, config, pool.slots, pool.make, seed_source, llm=client)
            served = pool.calls()
        finally:
            pool.stop()
        requests, most = len(server.requests), server.max_in_flight
    return {**figures("llm", db, run, workers, served, search), "sleep_s": sleep, "llm_latency_s": latency,
            "llm_requests": requests, "llm_max_in_flight": most,
            "llm_max_concurrent": client.settings.max_concurrent}


def load(work: Path, evaluations: int, workers: int) -> dict:
    return simulated(work, workers, 0.0, evaluations, name="load")


# -- results ---------------------------------------------------------------------------------------------------------

BEGIN, END = "<!-- benchmarks/engine.py: begin -->", "<!-- benchmarks/engine.py: end -->"


def markdown(record: dict) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.2f}%"

    def ms(t, key):
        return "-" if not t else f"{1000 * t[key]:.0f}"

    lines = [f"Command: `{record['command']}`  ", f"Machine: {record['machine']['cpu']}, "
             f"{record['machine']['cores']} cores, shared with other work while it ran (timings are noisy); "
             f"{record['date']}.", "",
             "| part | workers | sleep s | evaluations | wall s | utilisation | turnaround ms (mean / p95) "
             "| store writes ms per evaluation | exactly once |", "|---|---|---|---|---|---|---|---|---|"]
    for p in record["parts"]:
        t = None if p["part"] == "load" else p.get("turnaround_s")
        use = None if p["part"] == "load" else p.get("utilisation")
        lines.append(f"| {p['part']} | {p['workers']} | {p['sleep_s']:g} | {p['evaluations']} | {p['wall_s']:.0f} | "
                     f"{pct(use)} | {ms(t, 'mean')} / {ms(t, 'p95')} | {p['store']['write_ms_per_evaluation']:.1f} | "
                     f"{'yes' if p['checks']['ok'] else 'NO'} |")
    lines.append("")
    for p in record["parts"]:
        t = p.get("turnaround_s")
        if p["part"] == "real" and t:
            lines.append(f"- Real, {p['workers']} worker(s): the engine's overhead per evaluation (mean turnaround) "
                         f"was {1000 * t['mean']:.0f} ms, {100 * t['mean'] / 60:.3f}% of a 60 s budget. Each "
                         f"evaluation also spent {p['sandbox_seconds_beyond_the_sleep_mean']} s in the sandbox "
                         f"beyond its {p['sleep_s']:g} s sleep (training and scoring processes, imports, export, "
                         f"scoring): the evaluation's own cost, inside the worker.")
        if p["part"] == "simulated" and t:
            lines.append(f"- Simulated, {p['workers']} worker(s) sleeping {p['sleep_s']:g} s: utilisation "
                         f"{pct(p.get('utilisation'))} over a {p['window_s']:.0f} s window; turnaround "
                         f"{1000 * t['mean']:.0f} ms mean, {1000 * t['max']:.0f} ms at most.")
        if p["part"] == "llm":
            lines.append(f"- LLM proposals at {p['llm_latency_s']:g} s per answer, {p['workers']} simulated workers "
                         f"sleeping {p['sleep_s']:g} s: workers waited {pct(p.get('idle_share'))} of their time "
                         f"from the end of the noise phase to the last search dispatch; the first child started "
                         f"{p.get('first_search_wait_s')} s after the noise phase; {p['llm_requests']} requests, at "
                         f"most {p['llm_max_in_flight']} in flight (the client's cap, max_concurrent, is "
                         f"{p['llm_max_concurrent']}).")
        if p["part"] == "load":
            c, s, m = p["checks"], p["store"], p["store"]["by_method"]
            made = sum(p["children"].values())
            tenths = ", ".join(f"{r:g}" for r in p.get("evaluations_per_s_by_tenth", []))
            lines.append(
                f"- Load: {p['evaluations']} evaluations ({c['search_evaluations']} search) on {p['workers']} "
                f"simulated workers that sleep 0 s, so the engine is the bottleneck (its workers' utilisation and "
                f"turnaround mean nothing here): {p['evaluations_per_s']} evaluations/s over the run; by tenth of "
                f"the run: {tenths}. The operators made {made} children for {c['search_evaluations']} search "
                f"evaluations ({', '.join(f'{n} {k}' for k, n in p['children'].items())}); each is validated and "
                f"stored, so the store's writes per evaluation include {made / c['search_evaluations']:.1f} "
                f"individuals. Store file {s['file_bytes'] / 1e6:.1f} MB. Store writes per evaluation: "
                f"{s['write_ms_per_evaluation_first_500']} ms over the first 500 evaluations, "
                f"{s['write_ms_per_evaluation_last_500']} ms over the last 500; one add_evaluation "
                f"{m['add_evaluation']['first_500_ms']} ms over the first 500 calls and "
                f"{m['add_evaluation']['last_500_ms']} ms over the last 500, one add_individual "
                f"{m['add_individual']['first_500_ms']} ms and {m['add_individual']['last_500_ms']} ms.")
            lines.append(
                f"- Load, exactly once: {c['evaluations_stored']} evaluations stored of {c['evaluations_run']} run, "
                f"{c['runs_not_stored']} lost, {c['runs_stored_twice']} stored twice, "
                f"{c['stored_without_a_run']} stored that no worker ran; {c['duplicate_evaluation_ids']} duplicate "
                f"evaluation ids, {c['duplicate_individual_ids']} duplicate individual ids, "
                f"{c['children_with_two_search_evaluations']} children with two search evaluations; "
                f"{c['edges_without_parent']} of {c['lineage_edges']} lineage edges without their parent, "
                f"{c['edges_to_a_younger_parent']} to a younger parent, {c['individuals_in_a_cycle']} of "
                f"{c['individuals']} individuals on a cycle; the deepest individual is "
                f"{c['deepest_ancestry_depth']} steps from the seed by ancestry().")
    return "\n".join(lines) + "\n"


def write_markdown(path: Path, record: dict) -> None:
    """Replaces this script's block in path (adds the section when it is not there yet)."""
    block = f"{BEGIN}\n{markdown(record)}{END}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        text = (text.rstrip("\n") + "\n\n## Engine: evaluations that only sleep (benchmarks/engine.py)\n\n"
                "What is simulated and how each figure is measured: the docstring of benchmarks/engine.py.\n\n"
                + block + "\n")
    path.write_text(text)


# -- command line ----------------------------------------------------------------------------------------------------

def counts(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas; got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"worker counts must be 0 or more; got {text!r}")
    return [v for v in values if v > 0]


def seconds(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds separated by commas; got {text!r}") from None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=counts, default=[1, 2, 64], help="simulated worker counts (0: skip)")
    p.add_argument("--evaluations", type=int, default=4, help="search evaluations per simulated or real worker")
    p.add_argument("--sleep", type=seconds, default=[10.0, 10.0, 60.0],
                   help="seconds a simulated evaluation sleeps: one value, or one per --workers entry")
    p.add_argument("--real-workers", type=counts, default=[1, 2], help="real worker counts (0: skip)")
    p.add_argument("--real-sleep", type=float, default=5.0, help="seconds the real sleeping genome sleeps")
    p.add_argument("--llm-latency", type=float, default=10.0, help="seconds per answer (0: skip the LLM part)")
    p.add_argument("--llm-workers", type=int, default=8)
    p.add_argument("--llm-sleep", type=float, default=60.0)
    p.add_argument("--llm-evaluations", type=int, default=32, help="search evaluations in the LLM part")
    p.add_argument("--load", type=int, default=10000, help="search evaluations in the load test (0: skip)")
    p.add_argument("--load-workers", type=int, default=8)
    p.add_argument("--keep", help="keep the stores in this folder (default: a temporary one, removed)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "engine.json"))
    p.add_argument("--markdown", default=str(ROOT / "benchmarks" / "RESULTS.md"),
                   help="the results file whose engine section is rewritten ('': none)")
    args = p.parse_args(argv)
    for flag in ("evaluations", "llm_workers", "llm_evaluations", "load_workers"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be at least 1")
    if args.load < 0 or min(*args.sleep, args.real_sleep, args.llm_sleep, args.llm_latency) < 0:
        p.error("--load and the sleeps and latency must be 0 or more")
    if len(args.sleep) == 1:
        args.sleep *= len(args.workers)
    if len(args.sleep) != len(args.workers):
        p.error(f"--sleep gives {len(args.sleep)} values for {len(args.workers)} --workers entries")

    for key in [k for k in os.environ if is_secret(k)]:  # as `evo run` does before Ray starts
        del os.environ[key]
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import logging

    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    parts = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(args.keep or tmp)
            work.mkdir(parents=True, exist_ok=True)
            for n in args.real_workers:
                parts.append(real(work, n, args.real_sleep, n * args.evaluations))
                report(parts[-1])
            for n, sleep in zip(args.workers, args.sleep):
                parts.append(simulated(work, n, sleep, n * args.evaluations))
                report(parts[-1])
            if args.llm_latency > 0:
                parts.append(with_llm(work, args.llm_workers, args.llm_sleep, args.llm_evaluations,
                                      args.llm_latency))
                report(parts[-1])
            if args.load:
                parts.append(load(work, args.load, args.load_workers))
                report(parts[-1])
    finally:
        ray.shutdown()
    record = {"command": shlex.join(["python", "benchmarks/engine.py", *(sys.argv[1:] if argv is None else argv)]),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version()},
              "parts": parts}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    if args.markdown:
        write_markdown(Path(args.markdown), record)
    failed = [f"{p['part']} x{p['workers']}" for p in parts if not p["checks"]["ok"]]
    if failed:
        print(f"engine.py: exactly-once checks failed for {', '.join(failed)} (see {args.out})", file=sys.stderr)
        return 1
    return 0


def report(part: dict) -> None:
    brief = {k: part.get(k) for k in ("part", "workers", "evaluations", "wall_s", "utilisation", "turnaround_s",
                                      "idle_share")}
    brief["write_ms"] = part["store"]["write_ms_per_evaluation"]
    brief["checks_ok"] = part["checks"]["ok"]
    print(json.dumps(brief), flush=True)


if __name__ == "__main__":
    sys.exit(main())
