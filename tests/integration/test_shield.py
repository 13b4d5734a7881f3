"""evo.sandbox.shield: a shielded process sees an allow-listed, read-only root, writes only its scratch folder and /tmp,
has no network and no view of other processes, and cannot take any of that apart; scores are the same with and
without it."""

import json
import os
import socket
import subprocess
import sys
import textwrap
from importlib.util import find_spec
from pathlib import Path

import pytest

from evo import task_files
from evo.sandbox import shield
from evo.sandbox.evaluation import Budget, EvalRequest, evaluate
from tests.support.genomes import ROOT, tiny_source

WHY_NOT = shield.unavailable()
needs_shield = pytest.mark.skipif(WHY_NOT is not None, reason=f"no shield on this machine: {WHY_NOT}")
CORPUS = Path(list(find_spec("bible").submodule_search_locations)[0]) / "data"


def test_the_shield_works_where_it_is_expected_to():
    """CI sets EVO_EXPECT_SHIELD=1 on machines where the shield runs, so that a change that breaks it fails here
    instead of skipping every shielded case."""
    if os.environ.get("EVO_EXPECT_SHIELD") != "1":
        pytest.skip("EVO_EXPECT_SHIELD is not set")
    assert WHY_NOT is None


def run_shielded(tmp_path, code, *args, covers=(), binds=(), tasks=0):
    work, tmp, build = tmp_path / "work", tmp_path / "tmp", tmp_path / "root"
    shield.prepare_scratch(work, tmp)
    build.mkdir()
    spec = shield.Spec(binds=(*shield.runtime_binds(), *binds, shield.Bind(str(work), "/sandbox/work", True),
                              shield.Bind(str(tmp), "/tmp", True)),
                       cwd="/sandbox/work", build_dir=str(build), covers=tuple(map(str, covers)), tasks=tasks)
    return subprocess.run(shield.command(spec, [sys.executable, "-I", "-c", textwrap.dedent(code), *map(str, args)]),
                          capture_output=True, text=True, timeout=120)


def answers(proc) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@needs_shield
def test_a_shielded_process_sees_only_the_allow_list(tmp_path, evo_cache):
    proc = run_shielded(tmp_path, """
        import json, os, sys
        def seen(path):
            try:
                return sorted(os.listdir(path)) if os.path.isdir(path) else os.path.getsize(path)
            except OSError as e:
                return type(e).__name__
        print(json.dumps({"project": seen(sys.argv[1]), "cache": seen(sys.argv[2]), "corpus": seen(sys.argv[3]),
                          "home": seen(os.path.expanduser("~root")),
                          "procs": [p for p in os.listdir("/proc") if p.isdigit()], "uid": os.getuid(),
                          "root": sorted(os.listdir("/"))}))
    """, ROOT / "prepare.py", evo_cache, CORPUS / "kjv.jsonl", covers=[CORPUS])
    seen = answers(proc)
    assert seen["project"] == "FileNotFoundError"      # the project's own files are not in the allow-list
    assert seen["cache"] == "FileNotFoundError"        # nor the data caches
    assert seen["corpus"] == "FileNotFoundError"       # the corpus inside site-packages is covered
    home = Path("~root").expanduser()
    runtime = {Path(p).resolve().relative_to(home).parts[0] for p in (sys.prefix, sys.base_prefix)
               if Path(p).resolve().is_relative_to(home)}
    assert seen["home"] == "FileNotFoundError" or set(seen["home"]) <= runtime  # only the way to the interpreter
    assert seen["procs"] == ["1"]                      # itself alone: no /proc/PID/root or environ of another
    assert seen["uid"] == (shield.UNPRIVILEGED_UID if os.getuid() == 0 else os.getuid())  # root runs it as nobody
    assert "sandbox" in seen["root"] and "home" not in seen["root"]


@needs_shield
def test_nothing_outside_the_scratch_folder_and_tmp_can_be_written(tmp_path):
    evo_dir = Path(shield.__file__).parent
    targets = [Path(sys.prefix) / "planted", Path(find_spec("torch").origin).parent / "planted.py",
               evo_dir / "planted.py", Path("/usr/planted"), Path("/etc/planted"), Path("/planted")]
    proc = run_shielded(tmp_path, """
        import json, os, sys
        out = {}
        for path in sys.argv[1:] + ["/sandbox/work/ok", "/tmp/ok"]:
            try:
                with open(path, "w") as f:
                    f.write("x")
                out[path] = "written"
            except OSError as e:
                out[path] = type(e).__name__
        try:
            os.chmod(sys.argv[1].rsplit("/", 1)[0], 0o777)
            out["chmod"] = "done"
        except OSError as e:
            out["chmod"] = type(e).__name__
        print(json.dumps(out))
    """, *targets)
    seen = answers(proc)
    assert seen.pop("/sandbox/work/ok") == "written" and seen.pop("/tmp/ok") == "written"
    assert "written" not in seen.values() and seen["chmod"] != "done", seen
    assert not any(t.exists() for t in targets)
    assert (tmp_path / "work" / "ok").exists()  # the scratch folder is the one the caller gave


@needs_shield
def test_covers_and_read_only_binds_cannot_be_taken_off(tmp_path):
    proc = run_shielded(tmp_path, """
        import ctypes, json, os, sys
        libc = ctypes.CDLL(None, use_errno=True)
        out = {"umount": libc.umount2(sys.argv[1].encode(), 2),
               "remount": libc.mount(None, sys.prefix.encode(), None, 32 | 4096, None),
               "unshare": libc.unshare(0x10000000 | 0x00020000)}
        out["corpus"] = os.listdir(sys.argv[1])
        print(json.dumps(out))
    """, CORPUS, covers=[CORPUS])
    seen = answers(proc)
    assert seen["umount"] == -1 and seen["remount"] == -1 and seen["corpus"] == []


FORKS = """
    import json, os, sys, time
    started, refused = 0, None
    for _ in range(int(sys.argv[1])):
        try:
            pid = os.fork()
        except BlockingIOError as e:
            refused = e.strerror
            break
        if pid == 0:
            time.sleep(10)
            os._exit(0)
        started += 1
    print(json.dumps({"started": started, "refused": refused}), flush=True)
    os._exit(0)
"""


@needs_shield
def test_the_kernel_refuses_a_fork_bomb_past_the_tasks_the_spec_allows(tmp_path):
    bomb = answers(run_shielded(tmp_path / "limited", FORKS, 400, tasks=40))
    assert bomb["refused"] and bomb["started"] < 40  # what its user runs elsewhere counts too
    assert answers(run_shielded(tmp_path / "free", FORKS, 60)) == {"started": 60, "refused": None}


@needs_shield
def test_a_shielded_process_has_no_network(tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    try:
        proc = run_shielded(tmp_path, """
            import json, socket, sys
            try:
                socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
                print(json.dumps({"connect": "connected"}))
            except OSError as e:
                print(json.dumps({"connect": str(e)}))
        """, port)
        assert "connected" != answers(proc)["connect"]
        with pytest.raises(TimeoutError):
            listener.accept()
    finally:
        listener.close()


@needs_shield
def test_the_training_process_reads_no_data_and_its_batches_come_over_the_channel(dataset):
    peek = textwrap.dedent(f"""
        import os
        def readable(path):
            try:
                return len(open(path, "rb").read())
            except OSError as e:
                return type(e).__name__
        for name, path in (("val", {str(dataset / "val" / "val.bin")!r}),
                           ("train", {str(dataset / "train" / "train.bin")!r}),
                           ("corpus", {str(CORPUS / "kjv.jsonl")!r})):
            print("PEEK", name, readable(path), flush=True)
    """)
    source = tiny_source().replace("torch.manual_seed(seed())", peek + "torch.manual_seed(seed())")
    result = evaluate(EvalRequest(source=source, seed=1, budget=Budget(tokens=8192), harness=ROOT / "prepare.py",
                                  dataset=dataset, threads=1, fixed_files=(ROOT / "kernels.py",)))
    assert result.status == "ok", result.error
    seen = {line.split()[1]: line.split()[2] for line in result.log.splitlines() if line.startswith("PEEK ")}
    assert seen == {"val": "FileNotFoundError", "train": "FileNotFoundError", "corpus": "FileNotFoundError"}
    assert result.tokens == 8192 and result.num_steps == 8192 // (4 * 256)
    assert result.shielded and "without the shield" not in result.log


def test_hidden_paths_cover_the_caches_the_dataset_and_its_raw_text(tmp_path):
    cache = tmp_path / "cache"
    (cache / "bundles/x/datasets/a/train").mkdir(parents=True)
    texts = tmp_path / "texts"
    texts.mkdir()
    for name in ("one.txt", "two.jsonl"):
        (texts / name).write_text("text\n")
    key = {"kind": "files", "files": [[str(texts / "one.txt"), 5, 0], [str(texts / "two.jsonl"), 5, 0],
                                      [str(texts / "gone.txt"), 5, 0]]}
    (cache / "bundles/x/datasets/a/meta.json").write_text(json.dumps({"key": key}))
    (tmp_path / "elsewhere").mkdir()  # the harness's cache_dir(), as the caller found it

    hidden = set(task_files.hidden_paths(cache / "bundles/x/datasets/a", tmp_path / "elsewhere"))
    assert hidden == {cache / "bundles/x", cache / "bundles/x/datasets/a", texts / "one.txt", texts / "two.jsonl",
                      tmp_path / "elsewhere", CORPUS}


@needs_shield
def test_the_shield_passes_on_the_exit_status_and_says_why_a_command_cannot_start(tmp_path):
    def run(*cmd, name="a"):
        build = tmp_path / name
        build.mkdir()
        spec = shield.Spec(binds=tuple(shield.runtime_binds()), cwd="/", build_dir=str(build))
        return subprocess.run([sys.executable, "-m", "evo.sandbox.shield", spec.to_json(), *cmd], capture_output=True,
                              text=True, timeout=60, cwd=ROOT)

    assert run("--", sys.executable, "-c", "import sys; sys.exit(7)").returncode == 7
    assert run("--", sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL); "
                                           "print('init ignores its own SIGKILL')", name="b").stdout.strip() == \
        "init ignores its own SIGKILL"
    missing = run("--", "/no/such/program", name="c")
    assert missing.returncode == 125 and "cannot start /no/such/program" in missing.stderr
    usage = subprocess.run([sys.executable, "-m", "evo.sandbox.shield", "--hide"], capture_output=True, text=True)
    assert usage.returncode == 2 and usage.stderr.startswith("usage:")
    assert subprocess.run([sys.executable, "-m", "evo.sandbox.shield", "--probe"], capture_output=True,
                          text=True).stdout.strip() == "the shield works here"


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
