"""evo.shield: a training process cannot read the validation split, the raw corpus, or them through /proc, and
cannot take the covers off; scores are the same with and without it."""

import json
import os
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import pytest

from evo import shield
from evo.sandbox import Budget, EvalRequest, evaluate
from tests.support.genomes import ROOT, tiny_source

WHY_NOT = shield.unavailable()
needs_shield = pytest.mark.skipif(WHY_NOT is not None, reason=f"no shield on this machine: {WHY_NOT}")

PEEK = textwrap.dedent("""
    import ctypes, json, os
    from importlib.util import find_spec
    from pathlib import Path
    train_dir = Path(json.loads(Path(os.environ["EVO_HARNESS_SPEC"]).read_text())["train_dir"])
    val = train_dir.parent / "val" / "val.bin"
    def readable(path):
        try:
            return len(Path(path).read_bytes())
        except OSError as e:
            return type(e).__name__
    print("PEEK val", readable(val), flush=True)
    print("PEEK train", readable(train_dir / "train.bin"), flush=True)
    corpus = Path(list(find_spec("bible").submodule_search_locations)[0]) / "data" / "kjv.jsonl"
    print("PEEK corpus", readable(corpus), flush=True)
    print("PEEK procs", sorted(int(p) for p in os.listdir("/proc") if p.isdigit()), flush=True)
    print("PEEK via-proc", readable(f"/proc/{OUTSIDE_PID}/root{val}"), flush=True)
    libc = ctypes.CDLL(None, use_errno=True)
    print("PEEK umount", libc.umount2(str(val.parent).encode(), 2), readable(val), flush=True)
""")


def peeks(log: str) -> dict[str, str]:
    return {line.split()[1]: " ".join(line.split()[2:]) for line in log.splitlines() if line.startswith("PEEK ")}


@needs_shield
def test_the_training_process_cannot_read_the_validation_split_or_the_corpus(dataset):
    val = dataset / "val" / "val.bin"
    corpus = Path(list(find_spec("bible").submodule_search_locations)[0]) / "data" / "kjv.jsonl"
    assert val.stat().st_size > 0 and corpus.stat().st_size > 0  # both there, for anyone outside
    peek = PEEK.replace("OUTSIDE_PID", str(os.getpid()))  # this test's process, by the machine's pid
    source = tiny_source().replace("torch.manual_seed(seed())", peek + "torch.manual_seed(seed())")
    result = evaluate(EvalRequest(source=source, seed=1, budget=Budget(tokens=8192), harness=ROOT / "prepare.py",
                                  dataset=dataset, threads=1))
    assert result.status == "ok", result.error
    seen = peeks(result.log)
    assert seen["val"] == "FileNotFoundError"
    assert seen["train"] == str((dataset / "train" / "train.bin").stat().st_size)
    assert seen["corpus"] == "FileNotFoundError"
    assert seen["procs"] == "[1]"  # the training process alone: no way into another process's /proc/PID/root
    assert seen["via-proc"] == "FileNotFoundError"
    assert seen["umount"] == "-1 FileNotFoundError"  # the covers stay on
    assert result.shielded and "without the shield" not in result.log
    assert val.stat().st_size > 0  # nothing outside changed


def test_hidden_paths_cover_every_validation_split_the_downloads_and_the_source_files(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    for rel in ("datasets/a/train", "datasets/a/val", "datasets/b/val", "bundles/x/datasets/a/train",
                "bundles/x/datasets/a/val", "downloads/123"):
        (cache / rel).mkdir(parents=True)
    texts = tmp_path / "texts"
    texts.mkdir()
    for name in ("one.txt", "two.jsonl"):
        (texts / name).write_text("text\n")
    key = {"kind": "files", "files": [[str(texts / "one.txt"), 5, 0], [str(texts / "two.jsonl"), 5, 0],
                                      [str(texts / "gone.txt"), 5, 0]]}
    (cache / "bundles/x/datasets/a/meta.json").write_text(json.dumps({"key": key}))
    monkeypatch.setenv("EVO_CACHE_DIR", str(tmp_path / "elsewhere"))
    (tmp_path / "elsewhere" / "datasets" / "c" / "val").mkdir(parents=True)

    hidden = set(shield.hidden_paths(cache / "bundles/x/datasets/a"))
    assert hidden == {cache / "datasets/a/val", cache / "datasets/b/val", cache / "bundles/x/datasets/a/val",
                      cache / "downloads", texts / "one.txt", texts / "two.jsonl",
                      tmp_path / "elsewhere" / "datasets" / "c" / "val"}


def test_a_source_folder_that_holds_the_training_split_is_not_covered(tmp_path, monkeypatch):
    monkeypatch.setenv("EVO_CACHE_DIR", str(tmp_path))
    (tmp_path / "datasets" / "a" / "train").mkdir(parents=True)
    (tmp_path / "datasets" / "a" / "val").mkdir()
    (tmp_path / "datasets" / "a" / "meta.json").write_text(json.dumps({"key": {"kind": "files", "files": [
        [str(tmp_path), 0, 0], [str(tmp_path / "datasets" / "a" / "train"), 0, 0]]}}))
    assert shield.hidden_paths(tmp_path / "datasets" / "a") == [tmp_path / "datasets" / "a" / "val"]


@needs_shield
def test_the_shield_passes_on_the_exit_status_and_says_why_a_command_cannot_start():
    def run(*cmd):
        return subprocess.run([sys.executable, "-m", "evo.shield", *cmd], capture_output=True, text=True,
                              timeout=60, cwd=ROOT)

    assert run("--", sys.executable, "-c", "import sys; sys.exit(7)").returncode == 7
    assert run("--", sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL); "
                                           "print('init ignores its own SIGKILL')").stdout.strip() == \
        "init ignores its own SIGKILL"
    missing = run("--", "/no/such/program")
    assert missing.returncode == 125 and "cannot start /no/such/program" in missing.stderr
    usage = run("--hide")
    assert usage.returncode == 2 and usage.stderr.startswith("usage:")
    assert run("--probe").stdout.strip() == "the shield works here"


def test_evo_shield_off_runs_unshielded_and_scores_the_same(dataset, evo_bin, tmp_path):
    """The same child, seed and budget give the same val_bpb behind the shield and without it."""
    (tmp_path / "train.py").write_text(tiny_source())
    results = {}
    for setting in ("auto", "off"):
        proc = subprocess.run([evo_bin, "eval", "train.py", "--budget-tokens", "8192", "--seed", "3", "--json",
                               "--threads", "1"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "EVO_SHIELD": setting})
        assert proc.returncode == 0, proc.stderr
        results[setting] = json.loads(proc.stdout)
    assert results["off"]["shielded"] is False
    assert results["auto"]["shielded"] is (WHY_NOT is None)
    assert results["auto"]["val_bpb"] == results["off"]["val_bpb"]
