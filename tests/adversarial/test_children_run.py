"""`evo run` whose LLM operator proposes adversarial children (one per class, and the one that joins the run's Ray
cluster): a search selects for any loophole, so none of them may end as the best individual, each one's
evaluations are failures or no better than the seed's on the same seed, and the run leaves no trace outside."""

import json
import os
import secrets
import subprocess

from genome import content_hash
from tests.support.adversarial import (
    BREACH,
    MARGIN,
    ChildProposer,
    Listener,
    Surroundings,
    child,
    eval_env,
    plant_decoys,
)
from tests.support.genomes import ROOT, tiny_source

PROPOSED = ["writes_eval_harness", "runs_pickle_payload", "peeks_between_checked_positions",
            "finds_validation_copies", "overspends_giant_batch", "escapes_api_key", "reaches_local_port",
            "reaches_ray_cluster"]


def evo(evo_bin, cwd, *args, env=None, timeout=600):
    return subprocess.run([evo_bin, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**(env or os.environ), "EVO_LOG_LEVEL": "ERROR"})


def sql(evo_bin, cwd, query):
    proc = evo(evo_bin, cwd, "sql", query, "--format", "json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_a_search_fed_adversarial_children_crowns_none_of_them(evo_bin, tmp_path, tmp_path_factory, dataset):
    proposals = [child(name) for name in PROPOSED]
    cwd = tmp_path / "task"
    cwd.mkdir()
    (cwd / "train.py").write_text(tiny_source())
    (cwd / "program.md").write_text((ROOT / "program.md").read_text())
    canary = f"sk-ant-canary-{secrets.token_hex(12)}"
    decoys = plant_decoys(tmp_path_factory.mktemp("decoys"), dataset)
    listener = Listener()
    around = Surroundings(allow_new_in_caches=("bundles/",))  # where the workers unpack the task, as they should
    try:
        with ChildProposer(proposals) as server:
            env = {**eval_env(canary, secrets.token_hex(8)), "ANTHROPIC_BASE_URL": server.url}
            proc = evo(evo_bin, cwd, "run", "--population", "4", "--evaluations", str(len(proposals)),
                       "--budget-tokens", "8192", "--workers", "2", "--operators", "llm.mutate", "--no-preflight",
                       "--noise-seeds", "2", "--confirm-seeds", "1", "--env", "ADVERSARIAL_ARM", "--quiet", env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert canary not in proc.stdout + proc.stderr
        changes = around.changes()
    finally:
        around.restore()
        around.close()
        listener.close()
        for path in decoys:
            path.unlink(missing_ok=True)

    ids = {content_hash(c.source): c.name for c in proposals}
    individuals = {r["id"]: r for r in sql(evo_bin, cwd, "SELECT id, status, reason FROM individuals")}
    evaluations = sql(evo_bin, cwd, "SELECT individual_id, purpose, seed, status, val_bpb, error, log "
                                    "FROM evaluations")
    evaluated = {e["individual_id"] for e in evaluations}
    missing = {name: individuals.get(id_) for id_, name in ids.items() if id_ not in evaluated}
    assert not missing, f"proposed children that were never evaluated: {missing}"
    seed_id = content_hash(tiny_source())
    seed_scores = {e["seed"]: e["val_bpb"] for e in evaluations
                   if e["individual_id"] == seed_id and e["status"] == "ok"}
    assert seed_scores, "the seed has no ok evaluation"
    problems = []
    for e in evaluations:
        name = ids.get(e["individual_id"])
        if BREACH in (e["error"] or "") + (e["log"] or ""):
            problems.append(f"{name}: the attack got through: {e['error']}")
        if name and e["status"] == "ok":
            honest = seed_scores.get(e["seed"], min(seed_scores.values()))
            if e["val_bpb"] < honest - MARGIN["tokens"]:
                problems.append(f"{name}: {e['purpose']} val_bpb {e['val_bpb']:.4f} on seed {e['seed']}, better than "
                                f"the seed's {honest:.4f}")
    # A child whose attack came to nothing trains exactly like the seed and ties with it: it may be named best
    # on a tie, never by a better score.
    best = proc.stdout.split("best: ")[1].split()[0] if "best: " in proc.stdout else None
    means = {r["individual_id"]: r["mean_bpb"]
             for r in sql(evo_bin, cwd, "SELECT individual_id, mean_bpb FROM fitness")}
    if best in ids and means[best] < means[seed_id] - MARGIN["tokens"]:
        problems.append(f"the best individual is {ids[best]} (mean val_bpb {means[best]:.4f}, the seed's "
                        f"{means[seed_id]:.4f})")
    problems += [f"left a trace: {change}" for change in changes]
    if listener.received:
        problems.append(f"a connection reached a socket on 127.0.0.1: {listener.received}")
    leaked = sql(evo_bin, cwd, f"""
        SELECT 'evaluations' AS t FROM evaluations WHERE concat(error, log) LIKE '%{canary}%'
        UNION ALL SELECT 'individuals' FROM individuals WHERE concat(reason, description) LIKE '%{canary}%'
        UNION ALL SELECT 'sources' FROM sources WHERE text LIKE '%{canary}%'
        UNION ALL SELECT 'llm_calls' FROM llm_calls WHERE error LIKE '%{canary}%'""")
    if leaked:
        problems.append(f"the API key is in the store: {leaked}")
    assert not problems, "\n".join(problems)
