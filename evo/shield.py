"""Keeps the validation data out of the training process's reach, where the kernel allows it.

    python -m evo.shield [--hide PATH]... -- COMMAND...
    python -m evo.shield --probe

The command runs in new user, mount and PID namespaces, which unprivileged users may create on most Linux systems:
- each PATH is covered, a directory by an empty read-only tmpfs and a file by /dev/null;
- /proc is mounted anew and lists only the command's own processes, so /proc/PID/root of a process outside (the
  supervisor, the worker, a shell) cannot lead around the covers;
- a second user namespace on top locks those mounts: not even root inside can unmount them.
The command's first process is the PID namespace's init: when it ends, the kernel kills whatever it left running.
The exit status is the command's (128 + N for signal N). --probe tries all of this on a scratch folder and exits 0
when it works, or prints why not and exits 1.

hidden_paths(dataset) is what the sandbox covers for a training run: the validation split of every prepared dataset
in the caches it knows of, the download cache, and the raw text the dataset was made from (the embedded corpus's
data folder, a --text-dir's files). What it cannot cover: copies of that text elsewhere on disk.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
from functools import lru_cache
from importlib.util import find_spec
from pathlib import Path

from evo.proctree import die_with_parent

_CLONE_NEWNS, _CLONE_NEWUSER, _CLONE_NEWPID = 0x00020000, 0x10000000, 0x20000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_BIND, _MS_REC, _MS_PRIVATE = 4096, 16384, 1 << 18

_libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")  # FileNotFoundError for ENOENT


def _enter_user_namespace(uid: int, gid: int, flags: int) -> None:
    """unshare() a new user namespace (with flags' other namespaces), mapping this uid and gid to themselves."""
    _check(_libc.unshare(_CLONE_NEWUSER | flags), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: s.encode() if s is not None else None)
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount on {target}")


def _cover(path: Path) -> None:
    """A directory gets an empty read-only tmpfs over it, a file /dev/null; a path that is gone needs nothing."""
    try:
        if path.is_dir():
            _mount("tmpfs", str(path), "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "size=4k,mode=555")
        elif path.exists():
            _mount("/dev/null", str(path), None, _MS_BIND)
    except FileNotFoundError:
        pass


def _die_with_parent() -> None:
    if not die_with_parent(signal.SIGKILL):
        raise OSError("prctl(PR_SET_PDEATHSIG) failed")


def shielded_exec(hide: list[Path], cmd: list[str]) -> int:
    """Runs cmd behind the covers (see the module docstring); returns its exit status. Raises OSError when the
    namespaces cannot be made, before anything runs."""
    uid, gid, parent = os.getuid(), os.getgid(), os.getppid()
    _enter_user_namespace(uid, gid, _CLONE_NEWNS | _CLONE_NEWPID)
    _die_with_parent()  # a new user namespace clears the parent-death signal the supervisor set
    if os.getppid() != parent:
        return 128 + signal.SIGKILL
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing done here reaches the outside's mounts
    for path in hide:
        _cover(path)
    ready_r, ready_w = os.pipe()  # close-on-exec: the parent reads nothing once the command has started
    pid = os.fork()
    if pid == 0:  # the PID namespace's init
        try:
            os.close(ready_r)
            _die_with_parent()
            _mount("proc", "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
            _enter_user_namespace(uid, gid, _CLONE_NEWNS)  # locks every mount above
            os.execvp(cmd[0], cmd)
        except OSError as e:
            os.write(ready_w, str(e).encode())
        os._exit(127)
    os.close(ready_w)
    failure = os.read(ready_r, 4096).decode()
    os.close(ready_r)
    _, status = os.waitpid(pid, 0)
    if failure:
        raise OSError(f"cannot start {cmd[0]} in the shield: {failure}")
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def probe() -> str | None:
    """None when the shield works here, else why not: run in a subprocess (it changes the caller's namespaces)."""
    with tempfile.TemporaryDirectory(prefix="evo-shield-probe-") as tmp:
        hidden = Path(tmp) / "hidden"
        hidden.mkdir()
        (hidden / "secret").write_text("x")
        check = (f"import os, sys; sys.exit(0 if not os.path.exists({str(hidden / 'secret')!r}) and "
                 f"len([p for p in os.listdir('/proc') if p.isdigit()]) == 1 else 3)")
        proc = subprocess.run([sys.executable, "-I", "-m", "evo.shield", "--hide", str(hidden), "--",
                               sys.executable, "-I", "-c", check], capture_output=True, text=True, timeout=60)
    if proc.returncode == 3:
        return "the covers did not hide the scratch file"
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return None


@lru_cache(maxsize=1)
def unavailable() -> str | None:
    """Why the shield cannot be used in this process's environment (None when it can), asked once."""
    setting = os.environ.get("EVO_SHIELD", "auto")
    if setting == "off":
        return "EVO_SHIELD=off"
    if not sys.platform.startswith("linux"):
        return "it needs Linux namespaces"
    try:
        return probe()
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)


def _user_cache() -> Path:
    """prepare.cache_dir(), by its rule: prepare.py imports torch, too much to load into a worker for one path."""
    if os.environ.get("EVO_CACHE_DIR"):
        return Path(os.environ["EVO_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "evo"


def _cache_roots(dataset: Path) -> list[Path]:
    """The caches a dataset folder may sit in (CACHE/datasets/KEY or CACHE/bundles/DIGEST/datasets/KEY), and the
    user's own."""
    roots = [_user_cache()]
    parent = dataset.resolve().parent
    if parent.name == "datasets":
        roots.append(parent.parent)
        if parent.parent.parent.name == "bundles":
            roots.append(parent.parent.parent.parent)
    return list(dict.fromkeys(r.resolve() for r in roots))


def _source_paths(dataset: Path) -> list[Path]:
    """The raw text the dataset was made from, as its meta.json records it."""
    try:
        key = json.loads((dataset / "meta.json").read_text()).get("key", {})
    except (OSError, ValueError):
        return []
    if key.get("kind") == "kjv":
        spec = find_spec("bible")
        if spec is not None and spec.submodule_search_locations:
            return [Path(list(spec.submodule_search_locations)[0]) / "data"]
    if key.get("kind") == "files":
        return [Path(entry[0]) for entry in key.get("files", []) if entry]
    return []


def hidden_paths(dataset: Path) -> list[Path]:
    """What a training run on this dataset must not see (existing paths only, none that holds the training split)."""
    found: list[Path] = []
    for root in _cache_roots(dataset):
        found += root.glob("datasets/*/val")
        found += root.glob("bundles/*/datasets/*/val")
        found.append(root / "downloads")
    found += _source_paths(dataset)
    train = (dataset / "train").resolve()
    keep = []
    for path in dict.fromkeys(p.resolve() for p in found):
        if path.exists() and path != train and path not in train.parents:
            keep.append(path)
    return keep


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        why = unavailable()
        print("the shield works here" if why is None else f"no shield here: {why}")
        return 0 if why is None else 1
    hide = []
    while argv and argv[0] == "--hide" and len(argv) > 1:
        hide.append(Path(argv[1]))
        argv = argv[2:]
    if not argv or argv[0] != "--" or len(argv) < 2:
        print("usage: python -m evo.shield [--hide PATH]... -- COMMAND...", file=sys.stderr)
        return 2
    try:
        return shielded_exec(hide, argv[1:])
    except OSError as e:
        print(f"evo.shield: {e}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
