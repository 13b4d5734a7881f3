"""Runs a command in a root of its own, built from an allow-list, where the kernel allows it.

    python -I -m evo.sandbox.shield SPEC_JSON -- COMMAND...
    python -I -m evo.sandbox.shield --probe

The command runs in new mount, PID, network, IPC and UTS namespaces and sees only what the spec binds:
- a fresh tmpfs root holding the runtime (`runtime_binds()`: /usr and the loader's links, a few files of /etc,
  the interpreter's prefixes with their packages, /sys, evo's own package) read-only, a /dev of a few device
  nodes (the GPU's where asked), a /proc that lists only the command's own processes, and the spec's own binds
  (its source, a scratch folder and a /tmp, both emptied per evaluation by whoever made them);
- covers: paths inside those binds that must stay hidden (an empty read-only tmpfs, or /dev/null for a file);
- no network (only a loopback that is down), no IPC with anything outside, no way back to the old root.
Run by root, the command drops to an unprivileged user (UNPRIVILEGED_UID) before it starts, so that file modes
hold; run by anyone else, a user namespace maps the caller to itself and a second one on top locks every mount
(not even root inside can unmount a cover or make a bind writable). Either way nothing the command does can
write outside its scratch folder and /tmp. The command's first process is the PID namespace's init: when it
ends, the kernel kills whatever it left running. The exit status is the command's (128 + N for signal N).
--probe tries all of this and exits 0 when it works, or prints why not and exits 1.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import resource
import signal
import site
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from evo.sandbox.proctree import die_with_parent

UNPRIVILEGED_UID = 65534  # "nobody": what a command started by root runs as
INSIDE = Path("/sandbox")  # where a spec's own binds go (INSIDE / "work" is the usual working directory)

_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWUSER, _CLONE_NEWPID, _CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_MOUNT_ATTR_RDONLY, _MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
_AT_FDCWD, _AT_RECURSIVE = -100, 0x8000
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}.get(platform.machine())
_SYS_MOUNT_SETATTR = 442
_PR_SET_NO_NEW_PRIVS = 38
_ETC_FILES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "alternatives", "passwd", "group", "nsswitch.conf",
              "localtime", "hosts")
_DEVICES = ("null", "zero", "full", "random", "urandom", "tty")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


@dataclass(frozen=True)
class Bind:
    """A host path shown at `inside` (the same path when None), read-only unless writable."""

    host: str
    inside: str | None = None
    writable: bool = False


@dataclass(frozen=True)
class Spec:
    """What a shielded command sees: its binds, the paths inside them that stay covered, its working directory,
    the folder (on the host, empty) where its root is built, whether it gets the GPU's device nodes, and how many
    tasks (processes and threads: what RLIMIT_NPROC counts) it may start above what its user runs already, so
    that the kernel refuses a fork bomb (0: no limit)."""

    binds: tuple[Bind, ...]
    cwd: str
    build_dir: str
    covers: tuple[str, ...] = ()
    gpu: bool = False
    tasks: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Spec:
        raw = json.loads(text)
        raw["binds"] = tuple(Bind(**b) for b in raw["binds"])
        raw["covers"] = tuple(raw["covers"])
        return cls(**raw)


# ---------------------------------------------------------------------------
# What every shielded command needs: the runtime
# ---------------------------------------------------------------------------

def _with_real(path: str) -> list[Bind]:
    """A bind of path's real location, and of the path itself when it is reached through a symlink."""
    real = os.path.realpath(path)
    binds = [Bind(real)]
    if os.path.abspath(path) != real:
        binds.append(Bind(real, os.path.abspath(path)))
    return binds


def runtime_binds() -> list[Bind]:
    """The interpreter, its packages and the compiler toolchain, read-only: what any Python process of this
    installation needs. Not the user's home, not the project's other files, not the data caches."""
    binds: list[Bind] = [Bind("/usr"), Bind("/sys")]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = f"/{name}"
        if os.path.isdir(path) and not os.path.islink(path):
            binds.append(Bind(path))
    for name in _ETC_FILES:
        if os.path.exists(f"/etc/{name}"):
            binds.append(Bind(f"/etc/{name}"))
    prefixes = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
                *site.getsitepackages(), os.path.dirname(os.path.realpath(sys.executable))}
    for prefix in sorted(p for p in prefixes if os.path.isdir(p)):
        binds += _with_real(prefix)
    for path in os.environ.get("PYTHONPATH", "").split(os.pathsep):
        if path and os.path.isdir(path):
            binds += _with_real(path)
    binds += _with_real(str(Path(__file__).resolve().parents[1]))  # evo itself: the channel client, the scorer
    unique: dict[str, Bind] = {}
    for bind in binds:
        unique.setdefault(bind.inside or bind.host, bind)
    return list(unique.values())


def _symlinks() -> dict[str, str]:
    """Top-level links such as /bin -> usr/bin (merged-/usr systems), recreated as they are."""
    links = {}
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        if os.path.islink(f"/{name}"):
            links[f"/{name}"] = os.readlink(f"/{name}")
    return links


# ---------------------------------------------------------------------------
# Building the root (in the new mount namespace)
# ---------------------------------------------------------------------------

def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    def enc(s):
        return (s.encode() if s is not None else None)
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount on {target}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _read_only_tree(target: str) -> None:
    """Makes the mount at target and every mount below it read-only, nosuid and nodev."""
    attr = _MountAttr(_MOUNT_ATTR_RDONLY | _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV, 0, 0, 0)
    result = _libc.syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, target.encode(), _AT_RECURSIVE, ctypes.byref(attr),
                           ctypes.sizeof(attr))
    if result == 0:
        return
    if ctypes.get_errno() != 38:  # ENOSYS: a kernel before 5.12 remounts mount by mount
        _check(-1, f"read-only {target}")
    below = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in [p for p in below if p == target or p.startswith(target.rstrip("/") + "/")]:
        _mount(None, point, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


def _make_target(path: str, is_dir: bool) -> None:
    if is_dir:
        os.makedirs(path, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if not os.path.lexists(path):
            open(path, "w").close()


def _bind(host: str, target: str, writable: bool) -> None:
    _make_target(target, os.path.isdir(host))
    _mount(host, target, None, _MS_BIND | _MS_REC)
    if writable:
        _mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_NOSUID | _MS_NODEV)
    else:
        _read_only_tree(target)


def _cover(target: str) -> None:
    if os.path.isdir(target):
        _mount("tmpfs", target, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, "size=4k,mode=555")
    elif os.path.lexists(target):
        _mount("/dev/null", target, None, _MS_BIND)


def _build_dev(root: str, gpu: bool) -> None:
    dev = root + "/dev"
    os.makedirs(dev, exist_ok=True)
    _mount("tmpfs", dev, "tmpfs", _MS_NOSUID | _MS_NOEXEC, "size=64k,mode=755")
    names = list(_DEVICES)
    if gpu:
        names += [n for n in os.listdir("/dev") if n.startswith("nvidia") and not os.path.isdir(f"/dev/{n}")]
        if os.path.isdir("/dev/nvidia-caps"):
            names += [f"nvidia-caps/{n}" for n in os.listdir("/dev/nvidia-caps")]
    for name in names:
        if os.path.exists(f"/dev/{name}"):
            _make_target(f"{dev}/{name}", False)
            _mount(f"/dev/{name}", f"{dev}/{name}", None, _MS_BIND)
    os.makedirs(f"{dev}/shm")
    _mount("tmpfs", f"{dev}/shm", "tmpfs", _MS_NOSUID | _MS_NODEV, "size=256m,mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, f"{dev}/{name}")


def _inside_path(host: str, binds: tuple[Bind, ...]) -> str | None:
    """Where host shows inside the root, if one of the binds shows it."""
    for bind in sorted(binds, key=lambda b: -len(b.host)):
        if host == bind.host or host.startswith(bind.host.rstrip("/") + "/"):
            return (bind.inside or bind.host) + host[len(bind.host):]
    return None


def build_root(spec: Spec) -> str:
    """Mounts the spec's root at spec.build_dir (in the caller's own mount namespace) and returns it."""
    root = spec.build_dir
    _mount("tmpfs", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=16m,mode=755")
    for bind in sorted(spec.binds, key=lambda b: (b.inside or b.host).count("/")):
        if os.path.exists(bind.host):
            _bind(bind.host, root + (bind.inside or bind.host), bind.writable)
    for link, target in _symlinks().items():
        if not os.path.lexists(root + link):
            os.symlink(target, root + link)
    for host in spec.covers:
        inside = _inside_path(os.path.realpath(host), spec.binds)
        if inside is not None and os.path.lexists(root + inside):
            _cover(root + inside)
    _build_dev(root, spec.gpu)
    os.makedirs(root + "/proc", exist_ok=True)
    os.makedirs(root + spec.cwd, exist_ok=True)
    for path in ("/tmp", "/etc"):
        os.makedirs(root + path, exist_ok=True)
    _mount(None, root, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, "size=16m,mode=755")
    return root


def _pivot(root: str) -> None:
    """Makes root the new / and lets go of the old one entirely (pivot_root(".", "."), then detaching the old
    root stacked on top). /proc must be mounted under root before: a user namespace may mount a procfs only
    while another one is fully visible."""
    os.chdir(root)
    _check(_libc.syscall(_SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", _MNT_DETACH), "detaching the old root")
    os.chdir("/")


# ---------------------------------------------------------------------------
# Running a command behind it
# ---------------------------------------------------------------------------

def _enter_user_namespace(uid: int, gid: int, flags: int) -> None:
    """unshare() a new user namespace (with flags' other namespaces), mapping this uid and gid to themselves."""
    _check(_libc.unshare(_CLONE_NEWUSER | flags), "unshare")
    for name, text in (("setgroups", "deny"), ("uid_map", f"{uid} {uid} 1"), ("gid_map", f"{gid} {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)


def _die_with_parent() -> None:
    if not die_with_parent(signal.SIGKILL):
        raise OSError("prctl(PR_SET_PDEATHSIG) failed")


def _drop_privileges(as_root: bool, uid: int, gid: int) -> None:
    if as_root:
        os.setgroups([])
        os.setresgid(UNPRIVILEGED_UID, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
        os.setresuid(UNPRIVILEGED_UID, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    else:
        _enter_user_namespace(uid, gid, _CLONE_NEWNS)  # locks every mount made above
    _check(_libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")


def _tasks_of(uid: int) -> int:
    """How many tasks (threads of every process) on the machine have uid as their real user id: what
    RLIMIT_NPROC counts."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
            except OSError:
                continue
            if fields.get("Uid", "").split()[:1] == [str(uid)]:
                count += int(fields.get("Threads", "1"))
    return count


def _limit_processes(allowed: int) -> None:
    """RLIMIT_NPROC for the command (0: none). The kernel counts a user's tasks machine-wide (per user namespace
    on newer kernels), so allowed is what the user runs already plus what the command may start."""
    if allowed > 0:
        hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
        if hard != resource.RLIM_INFINITY:
            allowed = min(allowed, hard)
        resource.setrlimit(resource.RLIMIT_NPROC, (allowed, allowed))


def shielded_exec(spec: Spec, cmd: list[str]) -> int:
    """Runs cmd behind the spec's root (see the module docstring); returns its exit status. Raises OSError when
    the namespaces or the root cannot be made, before anything runs."""
    if _SYS_PIVOT_ROOT is None:
        raise OSError(f"the shield does not know pivot_root's number on {platform.machine()}")
    uid, gid, parent = os.getuid(), os.getgid(), os.getppid()
    as_root = os.geteuid() == 0
    flags = _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS
    if as_root:
        _check(_libc.unshare(flags), "unshare")
    else:
        _enter_user_namespace(uid, gid, flags)
    _die_with_parent()  # a new user namespace clears the parent-death signal the supervisor set
    if os.getppid() != parent:
        return 128 + signal.SIGKILL
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing done here reaches the outside's mounts
    # counted on the host's /proc, before the PID namespace's own replaces it
    allowed = _tasks_of(UNPRIVILEGED_UID if as_root else uid) + spec.tasks if spec.tasks > 0 else 0
    root = build_root(spec)
    ready_r, ready_w = os.pipe()  # close-on-exec: the parent reads nothing once the command has started
    pid = os.fork()
    if pid == 0:  # the PID namespace's init
        try:
            os.close(ready_r)
            _die_with_parent()
            _mount("proc", root + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
            _pivot(root)
            os.chdir(spec.cwd)
            _drop_privileges(as_root, uid, gid)
            _limit_processes(allowed)
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


def command(spec: Spec, cmd: list[str]) -> list[str]:
    """The command line that runs cmd behind spec."""
    return [sys.executable, "-I", "-m", "evo.sandbox.shield", spec.to_json(), "--", *cmd]


def prepare_scratch(*folders: Path) -> None:
    """Creates folders a shielded command may write, owned by the user it will run as."""
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(folder, UNPRIVILEGED_UID, UNPRIVILEGED_UID)


# ---------------------------------------------------------------------------
# Whether it works here
# ---------------------------------------------------------------------------

_PROBE_CHECK = """
import os, socket, sys
problems = []
if os.listdir(sys.argv[1]):
    problems.append("a covered folder shows its files")
if os.path.exists(sys.argv[2]):
    problems.append("a path outside the allow-list is visible")
if len([p for p in os.listdir("/proc") if p.isdigit()]) != 1:
    problems.append("/proc shows other processes")
try:
    open(os.path.join(sys.prefix, "evo-shield-probe"), "w")
    problems.append("the interpreter's prefix is writable")
except OSError:
    pass
try:
    socket.create_connection(("127.0.0.1", 9), timeout=1)
    problems.append("the network is reachable")
except OSError as e:
    if "unreachable" not in str(e).lower() and "refused" not in str(e).lower():
        problems.append(f"unexpected network error {e}")
sys.stdout.write("; ".join(problems))
sys.exit(3 if problems else 0)
"""


def probe() -> str | None:
    """None when the shield works here, else why not: run in a subprocess (it changes the caller's namespaces)."""
    with tempfile.TemporaryDirectory(prefix="evo-shield-probe-") as tmp:
        outside = Path(tmp) / "outside"
        outside.write_text("x")
        hidden = Path(__file__).resolve().parents[1] / "store"
        work, build = Path(tmp) / "work", Path(tmp) / "root"
        prepare_scratch(work)
        build.mkdir()
        spec = Spec(binds=(*runtime_binds(), Bind(str(work), str(INSIDE / "work"), True)),
                    cwd=str(INSIDE / "work"), build_dir=str(build), covers=(str(hidden),))
        proc = subprocess.run(command(spec, [sys.executable, "-I", "-c", _PROBE_CHECK, str(hidden), str(outside)]),
                              capture_output=True, text=True, timeout=60)
    if proc.returncode == 3:
        return f"the probe found: {proc.stdout.strip()}"
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


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        why = unavailable()
        sys.stdout.write(("the shield works here" if why is None else f"no shield here: {why}") + "\n")
        return 0 if why is None else 1
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: python -m evo.sandbox.shield SPEC_JSON -- COMMAND...\n")
        return 2
    try:
        return shielded_exec(Spec.from_json(argv[0]), argv[2:])
    except (OSError, ValueError, TypeError, KeyError) as e:
        sys.stderr.write(f"evo.sandbox.shield: {e}\n")
        return 125


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
