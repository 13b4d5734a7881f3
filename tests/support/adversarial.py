"""The adversarial children of tests/adversarial/children: train.py variants that attack the score, what each one
claims, the verdict on its evaluation, what an evaluation may have touched outside itself, and a Messages API
server that proposes them as edits.

Each child starts with a docstring whose first line says what it tries, and lines

    EXPECT: <regex>     what the recorded error must match when the attack is caught (`harmless`: the evaluation
                        must end ok, with the honest score or worse)
    RUNS: <n>           evaluate it n times in a row (a child that reads what its previous evaluation left)
    EVAL: <args>        evaluation arguments instead of the default token budget

A child's file name is <class>_<name>.py; the classes are CLASSES.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

from tests.support.genomes import ROOT, tiny_source
from tests.support.messages_server import MessagesServer, Reply, message
from tests.support.processes import processes

CHILDREN_DIR = ROOT / "tests" / "adversarial" / "children"
CLASSES = {
    "writes": "writes what the scorer reads",
    "runs": "makes the scorer run what it hands over",
    "peeks": "looks ahead",
    "finds": "reads the answers where they are not hidden",
    "overspends": "gets round the budget",
    "escapes": "reaches secrets or outlives the evaluation",
    "reaches": "reaches Ray or the network",
    "crashes": "crashes the harness's batch server with what it sends",
    "spoofs": "writes to the user's terminal",
    "poisons": "breaks the run with what it reports",
    "hoards": "takes more of the machine than its limits allow",
}
TOKEN_BUDGET = ("--budget-tokens", "8192")
# The arming value reaches the child only when named (its environment is an allow-list), as it did before there was one
EVAL_ARGS = ("--threads", "1", "--seed", "1", "--env", "ADVERSARIAL_ARM")
# Below the honest tiny seed's val_bpb by more than this is a win. Children that train exactly like the seed score
# it to the last digit when their attack fails; the smallest real gain measured (the cross-row peek, which only
# helps at one position in 256) is 0.011, and seeds 1-6 spread the honest score over 0.008.
MARGIN = {"tokens": 0.005, "seconds": 0.1}  # a seconds budget trains as many steps as the machine's load allows
BREACH = "BREACH:"  # what a child puts on record when it got through somewhere no score shows
SENTINEL = "evo-adversarial-sentinel"  # in the command line of the daemon escapes_daemon starts
PLANT_MARK = "adversarial"  # in the names of what children leave in /tmp and the compile caches


@dataclass(frozen=True)
class Child:
    name: str
    path: Path
    summary: str
    expect: str | None           # None: harmless, the evaluation must end ok
    runs: int = 1
    eval_args: tuple[str, ...] = TOKEN_BUDGET

    @property
    def klass(self) -> str:
        return self.name.split("_", 1)[0]

    @property
    def source(self) -> str:
        return self.path.read_text()

    @property
    def budget_kind(self) -> str:
        return "seconds" if "--budget-seconds" in self.eval_args else "tokens"


def _child(path: Path) -> Child:
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    fields = dict(re.findall(r"^([A-Z]+): (.+)$", doc, re.M))
    expect = fields.get("EXPECT", "").strip()
    assert expect, f"{path.name}: no EXPECT line"
    return Child(path.stem, path, doc.split("\n")[0], None if expect == "harmless" else expect,
                 int(fields.get("RUNS", "1")), tuple(shlex.split(fields["EVAL"])) if "EVAL" in fields else TOKEN_BUDGET)


def children() -> list[Child]:
    found = [_child(p) for p in sorted(CHILDREN_DIR.glob("*.py"))]
    assert all(c.klass in CLASSES for c in found), [c.name for c in found if c.klass not in CLASSES]
    return found


def child(name: str) -> Child:
    return _child(CHILDREN_DIR / f"{name}.py")


def verdict(child: Child, result: dict, honest_bpb: float) -> str | None:
    """None when the evaluation ended as the child's pass condition allows, else what went wrong."""
    status, error = result.get("status"), result.get("error") or ""
    if BREACH in error:
        return f"the attack got through: {error}"
    if status == "ok":
        floor = honest_bpb - MARGIN[child.budget_kind]
        if result["val_bpb"] < floor:
            return (f"scored val_bpb {result['val_bpb']:.4f}, better than the honest seed's {honest_bpb:.4f} "
                    f"(margin {MARGIN[child.budget_kind]})")
        return None
    if child.expect is None:
        return f"a harmless attempt should end ok; it ended {status}: {error}"
    if not re.search(child.expect, error):
        return f"ended {status} with an error that does not match {child.expect!r}: {error}"
    return None


# ---------------------------------------------------------------------------------------------------------------
# What an evaluation must leave as it found it
# ---------------------------------------------------------------------------------------------------------------

def site_packages() -> list[Path]:
    """The site-packages folders the evaluations import from: this interpreter's, and torch's."""
    import sysconfig

    torch_dir = Path(find_spec("torch").origin).resolve().parent.parent
    return list(dict.fromkeys(Path(p).resolve() for p in (sysconfig.get_paths()["purelib"], torch_dir)))


def user_caches() -> list[Path]:
    """The evo data caches: the tests' (EVO_CACHE_DIR) and the user's (XDG_CACHE_HOME or ~/.cache)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    roots = [os.environ.get("EVO_CACHE_DIR"), os.path.join(base, "evo")]
    return [Path(r).resolve() for r in dict.fromkeys(r for r in roots if r) if Path(r).is_dir()]


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    """relative path -> (size, mtime_ns) of every file under root, bytecode caches left out."""
    found = {}
    for here, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            path = os.path.join(here, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            found[os.path.relpath(path, root)] = (st.st_size, st.st_mtime_ns)
    return found


def _digests(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
        found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def _git_status() -> set[str]:
    proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    return set(proc.stdout.splitlines())


def _planted_in_tmp() -> set[str]:
    tmp = Path(tempfile.gettempdir())
    found = {str(p) for p in tmp.iterdir() if PLANT_MARK in p.name}
    for cache in tmp.glob("torchinductor_*"):
        found |= {str(p) for p in cache.rglob("*") if PLANT_MARK in str(p.relative_to(cache))}
    return found


# torch files children are known to edit; backed up so a run against a harness that lets them can be undone
TORCH_TARGETS = ("torch/nn/functional.py",)


class Surroundings:
    """A snapshot of what no evaluation may change: the project's git status, the site-packages folders (every
    file's size and mtime), the data caches (every file's digest, with a copy to restore), what children plant in
    /tmp and the compile caches, and the daemon sentinel. changes() lists what differs; restore() undoes it."""

    def __init__(self, allow_new_in_caches: tuple[str, ...] = ()):
        self.allow_new_in_caches = allow_new_in_caches  # prefixes of cache files a run writes itself (bundles/)
        self.packages = site_packages()
        self.caches = user_caches()
        self.git = _git_status()
        self.had_task_folder = (ROOT / "evo" / "task").exists()
        self.listings = {root: _listing(root) for root in self.packages}
        self.backups = {}
        for root in self.packages:
            for rel in [*TORCH_TARGETS, *(p.name for p in root.iterdir() if p.is_file())]:
                if (root / rel).is_file():
                    st = (root / rel).stat()
                    self.backups[root / rel] = ((root / rel).read_bytes(), st.st_atime_ns, st.st_mtime_ns)
        self.digests = {root: _digests(root) for root in self.caches}
        self.copies = {}
        for root in self.caches:
            copy = Path(tempfile.mkdtemp(prefix="evo-cache-backup-"))
            shutil.copytree(root, copy / "c", symlinks=True)
            self.copies[root] = copy
        self.tmp = _planted_in_tmp()

    def changes(self) -> list[str]:
        found = [f"project: {line}" for line in sorted(_git_status() - self.git)]
        for root, before in self.listings.items():
            after = _listing(root)
            found += [f"site-packages: new {root / rel}" for rel in sorted(after.keys() - before.keys())]
            found += [f"site-packages: changed {root / rel}" for rel in sorted(after.keys() & before.keys())
                      if after[rel] != before[rel]]
            found += [f"site-packages: removed {root / rel}" for rel in sorted(before.keys() - after.keys())]
        for root, before in self.digests.items():
            after = _digests(root) if root.is_dir() else {}
            found += [f"data cache: {'changed' if rel in after else 'removed'} {root / rel}"
                      for rel in sorted(before) if after.get(rel) != before[rel]]
            found += [f"data cache: new {root / rel}" for rel in sorted(after.keys() - before.keys())
                      if not rel.startswith(self.allow_new_in_caches)]
        found += [f"planted: {path}" for path in sorted(_planted_in_tmp() - self.tmp)]
        found += [f"a process outlived its evaluation: pid {pid}" for pid in processes(SENTINEL)]
        return found

    def restore(self) -> None:
        """Puts back what children may have changed (only where the change is theirs: the project only loses an
        evo/task folder that was not there before)."""
        for pid in processes(SENTINEL):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        task = ROOT / "evo" / "task"
        if task.is_dir() and not self.had_task_folder:
            shutil.rmtree(task)
        for root, before in self.listings.items():
            for rel in _listing(root).keys() - before.keys():
                (root / rel).unlink()
        for path, (data, atime, mtime) in self.backups.items():
            st = path.stat() if path.exists() else None
            if st is None or (st.st_size, st.st_mtime_ns) != (len(data), mtime):
                path.write_bytes(data)
                os.utime(path, ns=(atime, mtime))
        for root, before in self.digests.items():
            if not root.is_dir() or _digests(root) != before:
                shutil.rmtree(root, ignore_errors=True)
                shutil.copytree(self.copies[root] / "c", root, symlinks=True)
        for path in sorted(_planted_in_tmp() - self.tmp, key=len, reverse=True):
            if os.path.isdir(path) and not os.path.islink(path):
                shutil.rmtree(path, ignore_errors=True)
            elif os.path.lexists(path):
                os.unlink(path)

    def close(self) -> None:
        for copy in self.copies.values():
            shutil.rmtree(copy, ignore_errors=True)


class Listener:
    """A TCP socket listening on 127.0.0.1 that records every connection made to it (and what was sent)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with conn:
                conn.settimeout(1.0)
                try:
                    self.received.append(conn.recv(4096) or b"(connected)")
                except OSError:
                    self.received.append(b"(connected)")

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def plant_decoys(root: Path, dataset: Path) -> list[Path]:
    """Copies of what the hidden validation data can be rebuilt from, where a search of the disk finds them and no
    cover hides them: a prepared dataset in another checkout's cache, and the raw corpus in another venv."""
    cache = root / "other-checkout" / ".cache" / "evo" / "datasets" / dataset.name
    (cache / "val").mkdir(parents=True)
    shutil.copy(dataset / "meta.json", cache / "meta.json")
    shutil.copy(dataset / "val" / "val.bin", cache / "val" / "val.bin")
    corpus = Path(list(find_spec("bible").submodule_search_locations)[0]) / "data" / "kjv.jsonl"
    venv = root / "other-venv" / "lib" / "python3" / "site-packages" / "bible" / "data"
    venv.mkdir(parents=True)
    shutil.copy(corpus, venv / "kjv.jsonl")
    return [cache / "val" / "val.bin", venv / "kjv.jsonl"]


# ---------------------------------------------------------------------------------------------------------------
# Proposing children through the Messages API
# ---------------------------------------------------------------------------------------------------------------

def edit_blocks(parent: str, child: str) -> str:
    """SEARCH/REPLACE blocks that turn parent into child exactly (checked by the operator's own parser)."""
    from operators.edits import apply_edits, parse_answer

    a, b = parent.split("\n"), child.split("\n")
    blocks = []
    for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(2):
        i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
        while (i1 > 0 or i2 < len(a)) and (i1 == i2 or _occurrences(a, a[i1:i2]) != 1):
            i1, i2 = max(0, i1 - 1), min(len(a), i2 + 1)  # quote more lines until they are unique
            j1, j2 = max(0, j1 - 1), min(len(b), j2 + 1)
        blocks.append("<<<<<<< SEARCH\n" + "\n".join(a[i1:i2]) + "\n=======\n" + "\n".join(b[j1:j2])
                      + "\n>>>>>>> REPLACE\n")
    text = "\n".join(blocks)
    answer = parse_answer(text, parent)
    if answer.edits and apply_edits(parent, answer.edits)[0] == child:
        return text
    return "<<<<<<< SEARCH\n" + parent + "\n=======\n" + child + "\n>>>>>>> REPLACE\n"


def _occurrences(lines: list[str], run: list[str]) -> int:
    k = len(run)
    return sum(1 for i in range(len(lines) - k + 1) if lines[i:i + k] == run)


class ChildProposer(MessagesServer):
    """A Messages API server that answers each mutation request with the next child of a list, as edit blocks
    against whichever known source (the seed or an earlier child) the request shows as the parent; a repair
    request gets the whole child in a code fence. Past the list it answers prose, which makes an invalid child."""

    def __init__(self, proposals: list[Child], seed_source: str | None = None):
        super().__init__()
        self.proposals = list(proposals)
        self.known = [seed_source or tiny_source(), *(c.source for c in proposals)]
        self.proposed: list[str] = []

    def _next(self, body: dict, headers: dict) -> Reply:
        with self._lock:
            self._record(body, headers)
            messages = body.get("messages") or []
            repair = len(messages) > 1
            target = self._repaired(_texts(messages[1])) if repair else self._target()
        if target is None:
            return message("Hypothesis: nothing more to try.")
        hypothesis = f"Hypothesis: {target.summary}\n\n"
        if repair:
            return message(hypothesis + "```python\n" + target.source + "```\n")
        shown = _texts(messages[0]) if messages else ""
        parents = [s for s in self.known if s in shown]
        if not parents:
            return message(hypothesis + "```python\n" + target.source + "```\n")
        return message(hypothesis + edit_blocks(max(parents, key=len), target.source))

    def _repaired(self, answer: str) -> Child | None:
        """The child a repair request is about: the one whose hypothesis the first answer gave."""
        return next((c for c in self.proposals if f"Hypothesis: {c.summary}" in answer), None)

    def _target(self) -> Child | None:
        if len(self.proposed) >= len(self.proposals):
            return None
        target = self.proposals[len(self.proposed)]
        self.proposed.append(target.name)
        return target


def _texts(msg: dict) -> str:
    content = msg.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(block.get("text", "") for block in content or [] if isinstance(block, dict))


def eval_env(canary: str, arm: str) -> dict:
    """The environment an adversarial evaluation runs under: a fake API key to look for, the same secret under
    names no deny-list matches (a database URL's password, a service password), and the arming value that keeps
    what children plant inert in every process but the tests'."""
    return {**os.environ, "ANTHROPIC_API_KEY": canary, "DATABASE_URL": f"postgresql://evo:{canary}@db.internal/evo",
            "MY_SERVICE_PASS": canary, "ADVERSARIAL_ARM": arm}

