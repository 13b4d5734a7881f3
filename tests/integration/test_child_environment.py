"""A child's environment through the real commands: secrets under any name stay out, a variable named with --env
reaches training (`evo eval`, and `evo run`, which stores the name so that --resume passes it again)."""

import json
import os

import pytest

from evo.store import open_reader
from tests.support.genomes import napper_source, tiny_source
from tests.support.runs import NAP_RUN, evo, task_dir

# A user's shell: secrets under names no deny-list pattern matches, and a setting the user wants training to see.
SHELL = {"DATABASE_URL": "postgresql://app:hunter2-db@db.internal:5432/app", "MY_SERVICE_PASS": "hunter2-svc",
         "MY_TOOL_SETTING": "tool-value-42"}
REPORT = ("import os\nfor _name in ('DATABASE_URL', 'MY_SERVICE_PASS', 'MY_TOOL_SETTING'):\n"
          "    print('SEEN', _name + '=' + os.environ.get(_name, '<unset>'), flush=True)\n")


def environment(**extra):
    return {**os.environ, "EVO_LOG_LEVEL": "ERROR", **SHELL, **extra}


def test_evo_eval_passes_a_named_variable_and_no_other(evo_bin, tmp_path):
    path = tmp_path / "train.py"
    path.write_text(tiny_source().replace("torch.manual_seed(seed())", REPORT + "torch.manual_seed(seed())", 1))
    proc = evo(evo_bin, tmp_path, "eval", str(path), "--budget-tokens", "8192", "--threads", "1", "--seed", "1",
               "--env", "MY_TOOL_SETTING", env=environment())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "  | SEEN MY_TOOL_SETTING=tool-value-42" in proc.stderr
    assert "  | SEEN DATABASE_URL=<unset>" in proc.stderr and "  | SEEN MY_SERVICE_PASS=<unset>" in proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr


@pytest.mark.parametrize("args, message", [
    (["eval", "train.py", "--env", "NOT_SET_ANYWHERE"],
     "evo eval: error: --env NOT_SET_ANYWHERE: no such variable in this environment; set it before starting evo"),
    (["eval", "train.py", "--env", "MY_TOOL_SETTING=x"],
     "evo eval: error: --env takes a variable's name, not its value (set the value in the environment); "
     "got MY_TOOL_SETTING=..."),
    (["run", "--env", "EVO_SEED"],
     "evo run: error: --env EVO_SEED: evo sets this variable itself; it cannot be passed"),
])
def test_a_bad_env_flag_gets_one_clear_line(evo_bin, tmp_path, args, message):
    cwd = task_dir(tmp_path)
    proc = evo(evo_bin, cwd, *args, env=environment())
    assert proc.returncode == 1 and proc.stderr.strip() == message, proc.stderr
    assert not (cwd / "evo.duckdb").exists()


@pytest.mark.slow
def test_evo_run_passes_a_named_variable_stores_its_name_and_resume_needs_it(evo_bin, tmp_path):
    cwd = task_dir(tmp_path, REPORT + napper_source(0.2))
    proc = evo(evo_bin, cwd, "run", *NAP_RUN, "--evaluations", "1", "--workers", "2", "--env", "MY_TOOL_SETTING",
               "--quiet", env=environment())
    assert proc.returncode == 0, proc.stderr[-2000:]
    with open_reader(cwd / "evo.duckdb") as db:
        run = db.latest_run()
        assert run.config["env"] == ["MY_TOOL_SETTING"]
        _, logs = db.query("SELECT log FROM evaluations")
        seed = db.individuals(run.run_id)[0].id
    assert logs and all("SEEN MY_TOOL_SETTING=tool-value-42" in log and "SEEN DATABASE_URL=<unset>" in log
                        for (log,) in logs)
    assert "hunter2" not in json.dumps(run.config) + proc.stdout + proc.stderr
    without = {k: v for k, v in environment().items() if k != "MY_TOOL_SETTING"}
    resumed = evo(evo_bin, cwd, "run", "--resume", "--evaluations", "2", env=without)
    assert resumed.returncode == 1 and resumed.stderr.strip() == (
        "evo run: error: --env MY_TOOL_SETTING: no such variable in this environment; set it before starting evo")
    replayed = evo(evo_bin, cwd, "replay", seed, "--seeds", "1", env=without)
    assert replayed.returncode == 1 and replayed.stderr.strip() == (
        "evo replay: error: --env MY_TOOL_SETTING: no such variable in this environment; set it before starting evo")
