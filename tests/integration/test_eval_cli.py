"""`evo eval`, `evo init` and `python prepare.py` as a user runs them: real subprocesses, real training."""

import json
import os
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.genomes import ROOT, tiny_source

TINY_BUDGET = ["--budget-tokens", "8192", "--threads", "1"]


def run(cmd, cwd=ROOT, timeout=300, **env):
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


def evo_eval_json(evo_bin, path, *extra, cwd=ROOT):
    proc = run([evo_bin, "eval", str(path), "--json", *extra], cwd=cwd)
    assert proc.stdout.strip(), proc.stderr
    return proc, json.loads(proc.stdout)


def write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(source)
    return path


def test_eval_of_the_seed_prints_json_with_status_and_val_bpb(evo_bin):
    proc, result = evo_eval_json(evo_bin, "train.py", "--budget-tokens", "200000")
    assert proc.returncode == 0, result
    assert result["status"] == "ok"
    assert 0 < result["val_bpb"] < 3.2  # below a uniform guess over the vocabulary
    assert 200_000 - 16 * 256 < result["tokens"] <= 200_000 and result["budget_tokens"] == 200_000
    assert set(result["fingerprint"]) == {"tokenizer", "val", "test"}
    assert result["test_bpb"] is None                   # measured only when asked for


def test_eval_with_test_scores_the_test_split_too_on_the_same_model(evo_bin, tmp_path):
    path = write(tmp_path, "train.py", tiny_source())
    plain = evo_eval_json(evo_bin, path, *TINY_BUDGET, "--seed", "3")[1]
    proc, tested = evo_eval_json(evo_bin, path, *TINY_BUDGET, "--seed", "3", "--test")
    assert proc.returncode == 0 and tested["status"] == "ok", tested
    assert round(tested["val_bpb"], 4) == round(plain["val_bpb"], 4)       # the same model, the same val_bpb
    assert 0 < tested["test_bpb"] < 8 and tested["test_bpb"] != tested["val_bpb"]
    shown = subprocess.run([evo_bin, "eval", str(path), *TINY_BUDGET, "--seed", "3", "--test", "--quiet"],
                           capture_output=True, text=True, timeout=600)
    assert f"test_bpb:         {tested['test_bpb']:.6f}" in shown.stdout, shown.stdout + shown.stderr


def test_same_seed_same_budget_same_val_bpb(evo_bin, tmp_path):
    path = write(tmp_path, "train.py", tiny_source())
    runs = [evo_eval_json(evo_bin, path, *TINY_BUDGET, "--seed", seed)[1] for seed in ("3", "3", "4")]
    assert all(r["status"] == "ok" for r in runs), runs
    assert round(runs[0]["val_bpb"], 4) == round(runs[1]["val_bpb"], 4)
    assert runs[0]["val_bpb"] != runs[2]["val_bpb"]


def test_metric_does_not_change_with_the_models_own_loss_code(evo_bin, tmp_path):
    """A child whose forward() reports a flattering loss when given targets (autoresearch's eval path) scores the
    same as the honest one: the harness computes the cross-entropy from the logits."""
    honest = tiny_source()
    flattering = honest.replace(
        "    def forward(self, idx):\n",
        "    def forward(self, idx, targets=None, reduction='mean'):\n"
        "        if targets is not None:\n"
        "            return torch.zeros(targets.shape) if reduction == 'none' else torch.zeros(())\n")
    assert flattering != honest
    a = evo_eval_json(evo_bin, write(tmp_path, "a.py", honest), *TINY_BUDGET)[1]
    b = evo_eval_json(evo_bin, write(tmp_path, "b.py", flattering), *TINY_BUDGET)[1]
    assert a["status"] == b["status"] == "ok"
    assert a["val_bpb"] == b["val_bpb"]


@pytest.mark.parametrize("snippet", [
    "import prepare\nprint(prepare.active_dataset())\n",
    "import prepare, torch\nprepare.evaluate_program(torch.nn.Identity(), 'val', 'cpu')\n",
    "import prepare\nprepare._windows(prepare.Path('.'), 'val', 'cpu')\n",
    "import prepare, torch\nprepare.evaluate_test(torch.nn.Identity(), 'test', 'cpu')\n",
])
def test_training_process_cannot_reach_the_held_out_splits(evo_bin, tmp_path, snippet):
    source = tiny_source().replace("torch.manual_seed(seed())", snippet + "torch.manual_seed(seed())")
    proc, result = evo_eval_json(evo_bin, write(tmp_path, "train.py", source), *TINY_BUDGET)
    assert result["status"] == "crash"
    assert "not available to the training process" in result["error"]


def test_the_training_process_is_told_no_data_path(evo_bin, tmp_path, dataset):
    """Its environment and its folder name nothing of the dataset: its batches come over the harness channel."""
    source = tiny_source().replace(
        "torch.manual_seed(seed())",
        "import json, os\nprint('SEEN', json.dumps([dict(os.environ), os.listdir('.')]))\ntorch.manual_seed(seed())")
    proc = run([evo_bin, "eval", str(write(tmp_path, "train.py", source)), *TINY_BUDGET])
    environ, files = json.loads(next(line for line in proc.stderr.splitlines() if "SEEN " in line).split("SEEN ", 1)[1])
    assert sorted(files) == ["kernels.py", "prepare.py", "train.py"]
    assert "EVO_HARNESS_CHANNEL" in environ
    assert not [v for v in environ.values() if str(dataset) in v or "evo-cache" in v], environ


def test_future_peeking_child_is_rejected(evo_bin, tmp_path):
    source = tiny_source().replace(
        "        return rms_norm(x)\n",
        "        x = x + self.embed(torch.roll(idx, -1, dims=1))  # sees the next token\n"
        "        return rms_norm(x)\n")
    proc, result = evo_eval_json(evo_bin, write(tmp_path, "train.py", source), *TINY_BUDGET)
    assert result["status"] == "rejected"
    assert "causality check failed" in result["error"]
    assert proc.returncode == 1


def test_child_that_never_submits_is_a_crash(evo_bin, tmp_path):
    source = tiny_source().replace("submit(model)\n", "")
    result = evo_eval_json(evo_bin, write(tmp_path, "train.py", source), *TINY_BUDGET)[1]
    assert result["status"] == "crash" and "without calling submit" in result["error"]


def test_child_that_overruns_its_time_limit_is_a_timeout(evo_bin, tmp_path):
    source = tiny_source().replace("submit(model)\n", "import time\ntime.sleep(60)\nsubmit(model)\n")
    result = evo_eval_json(evo_bin, write(tmp_path, "train.py", source), *TINY_BUDGET, "--time-limit", "8")[1]
    assert result["status"] == "timeout"


@pytest.mark.parametrize("args, message", [
    (["eval", "missing.py"], "missing.py: no such file"),
    (["eval", "{bad}"], "does not parse: line 1"),
    (["eval", "train.py", "--budget-tokens", "-5"], "--budget-tokens must be positive"),
    (["eval", "train.py", "--budget-seconds", "0"], "--budget-seconds must be positive"),
    (["eval", "train.py", "--seed", "-1"], "--seed must be 0 or more"),
    (["init", "{file}"], "exists and is not a directory"),
])
def test_bad_input_gets_one_clear_line(evo_bin, tmp_path, args, message):
    bad = write(tmp_path, "bad.py", "def broken(:\n")
    a_file = write(tmp_path, "a_file", "")
    args = [a.replace("{bad}", str(bad)).replace("{file}", str(a_file)) for a in args]
    proc = run([evo_bin, *args], cwd=tmp_path)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_eval_on_a_damaged_cache_says_how_to_fix_it(evo_bin, tmp_path):
    cache = tmp_path / "cache"
    assert run([sys.executable, "prepare.py"], EVO_CACHE_DIR=str(cache)).returncode == 0
    (cache / "active.json").write_text("{garbage")
    proc = run([evo_bin, "eval", "train.py", *TINY_BUDGET], EVO_CACHE_DIR=str(cache))
    assert proc.returncode == 1
    assert "active.json is corrupt: run `python prepare.py`" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("args, message", [
    (["--text-dir", "{tmp}/nowhere"], "no such directory"),
    (["--text-dir", "{tmp}/empty"], "no .txt, .jsonl or .parquet files"),
    (["--download", "http://127.0.0.1:9/corpus.txt"], "cannot download http://127.0.0.1:9/corpus.txt"),
])
def test_prepare_bad_input_gets_one_clear_line(tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    proc = run([sys.executable, "prepare.py", *args], EVO_CACHE_DIR=str(tmp_path / "cache"))
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr


def test_prepare_downloads_over_http(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "stories.txt").write_text("<|endoftext|>".join(f"Story {i}. " + "Once upon a time there was a cat. " * 20
                                                           for i in range(60)))
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(SimpleHTTPRequestHandler, directory=str(site)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/stories.txt"
        cache = tmp_path / "cache"
        proc = run([sys.executable, "prepare.py", "--download", url], EVO_CACHE_DIR=str(cache))
        assert proc.returncode == 0, proc.stderr
        assert "60 documents (54 train, 3 validation, 3 test)" in proc.stdout
        again = run([sys.executable, "prepare.py", "--download", url], EVO_CACHE_DIR=str(cache))
        assert "nothing to do" in again.stdout
    finally:
        server.shutdown()


def test_init_writes_a_task_that_evaluates(evo_bin, tmp_path):
    target = tmp_path / "task"
    proc = run([evo_bin, "init", str(target)])
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in target.iterdir()) == ["kernels.py", "prepare.py", "program.md", "train.py"]
    assert (target / "prepare.py").read_text() == (ROOT / "prepare.py").read_text()
    (target / "train.py").write_text(tiny_source())
    proc, result = evo_eval_json(evo_bin, "train.py", *TINY_BUDGET, cwd=target)
    assert result["status"] == "ok", result
    assert run([evo_bin, "init", str(target)]).returncode == 1  # refuses to overwrite


def test_evo_prepare_is_python_prepare(evo_bin, tmp_path):
    proc = run([evo_bin, "prepare"], EVO_CACHE_DIR=os.environ["EVO_CACHE_DIR"])
    assert proc.returncode == 0
    assert "nothing to do" in proc.stdout
