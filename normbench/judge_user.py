"""Plugin code runs under a user id of its own, where the run is root: the judging, discovery and timing processes
cannot write what normbench reads (its installation, references, specs, known failures) or writes (the results
folder), and cannot signal the pytest process, its forkserver or another implementation's process.

A process may signal only processes of its own user (kill(2)) and write only what its user may write, so one fresh,
unnamed id per process folder (far above the ids distributions hand out) does what a PID namespace and a read-only
mount would, without either. Both ids are chosen by the trusted process before any plugin code runs: it chowns the
child's working and spill folders to the id, and the child, still root after the fork, takes the id of the folder
it was given (`assume`) before it imports the plugin. A folder the run did not prepare this way (owned by the run's
own user) means the child stays who it is.

The child must still read the plugin's files. An implementation whose files only the run's user may read (a plugin
under /root, or pytest's 0700 temporary folders) is judged as the same user, and the run says so
(`Decision.reason`): the decision comes from file modes alone, never from anything the plugin's code does, so a
plugin cannot talk its way back to root. ``NORMBENCH_JUDGE_USER=same`` turns it off.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from normbench.remote.tensors import SPILL_FOLDER

#: the judging and discovery children's working and temporary folder, inside the folder `prepare` makes
WORKDIR = "cwd"
#: "same" keeps plugin code under the run's own user (the default "auto": an id of its own where the run is root)
ENVIRONMENT = "NORMBENCH_JUDGE_USER"
#: the ids plugin processes take: [FIRST_ID, FIRST_ID + ID_RANGE), above useradd's default SUB_UID_MAX (600100000)
FIRST_ID = 1_800_000_000
ID_RANGE = 1 << 24
#: the user name a judging process reports (getpass and torch's cache paths read USER / LOGNAME first)
USER_NAME = "normbench-judge"


@dataclass(frozen=True)
class Decision:
    """Whether one source's processes take an id of their own (`unprivileged`), and why, in words for the run;
    `closed`: folders on the way to what they must read that only the run's user may enter (`assume`);
    `stays_root`: kept under the run's user (root) for a reason of this source's own, where others are not."""

    unprivileged: bool
    reason: str
    closed: tuple[str, ...] = ()
    stays_root: bool = False


def _mode(path: Path) -> int | None:
    try:
        return os.stat(path).st_mode
    except OSError:
        return None


def _others_may_read(mode: int) -> bool:
    if stat.S_ISDIR(mode):
        return bool(mode & stat.S_IROTH and mode & stat.S_IXOTH)
    return bool(mode & stat.S_IROTH)


def _module_locations(target: str) -> list[Path]:
    """Where a module reference ``pkg.mod:attr`` is found, without importing it: the top-level package's spec only
    (find_spec of a dotted name would import its parents, which is plugin code)."""
    top = target.partition(":")[0].split(".")[0]
    if not top:
        return []
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return []
    if spec is None:
        return []
    found = [Path(p) for p in (spec.submodule_search_locations or ())]
    if spec.origin and spec.origin not in ("built-in", "frozen"):
        found.append(Path(spec.origin))
    return found


def _source_locations(source: tuple[str, ...], origin: str) -> list[Path] | None:
    """The files a source is loaded from; None where they cannot be told without running its code."""
    kind, *rest = source
    reference = rest[1] if kind == "entry_point" and len(rest) > 1 else rest[0] if rest else ""
    target, sep, _ = reference.rpartition(":")
    if kind == "path" and sep and (target.endswith(".py") or "/" in target or "\\" in target):
        return [Path(origin, target)]
    return _module_locations(reference) or None


def decide(source: tuple[str, ...], origin: str | None = None) -> Decision:
    """Whether the processes that import `source` take an id of their own (see the module's docstring)."""
    if os.environ.get(ENVIRONMENT, "auto") == "same":
        return Decision(False, f"{ENVIRONMENT}=same")
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return Decision(False, "the run is not root, so its plugin processes cannot take another user id")
    origin = origin or os.getcwd()
    locations = _source_locations(source, origin)
    if locations is None:
        return Decision(False, "where its code lives cannot be told without importing it", stays_root=True)
    needed = [*locations, *(Path(p) for p in sys.path if p and os.path.isdir(p)), Path(__file__).parent.parent,
              Path(origin)]
    closed: dict[str, None] = {}
    for path in needed:
        resolved = path.resolve()
        mode = _mode(resolved)
        if mode is None:
            continue
        if not _others_may_read(mode) and resolved != Path(origin).resolve():
            return Decision(False, f"its code (or a folder it imports from) {resolved} may be read only by the "
                                   "run's own user, so a process under another id could not import it (chmod o+r "
                                   "makes it judged under an id of its own)", stays_root=True)
        closed.update(dict.fromkeys(_closed_on_the_way(resolved)))
    return Decision(True, "its processes run under a user id of their own", tuple(closed))


def _closed_on_the_way(path: Path) -> list[str]:
    """The folders above `path` that only their owner (and group) may enter."""
    found = []
    for folder in reversed(path.parents):
        mode = _mode(folder)
        if mode is not None and not mode & stat.S_IXOTH:
            found.append(str(folder))
    return found


def describe() -> str:
    """One line for the run's header: who plugin code runs as in this run."""
    if os.environ.get(ENVIRONMENT, "auto") == "same":
        return f"plugin code runs as the run's own user ({ENVIRONMENT}=same)"
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return ("plugin code runs as the run's own user (not root: it could write what the run owns; the records "
                "are sealed and the judged files hashed instead)")
    return ("plugin code runs under a user id of its own per process: it cannot write the installation or the "
            "results, nor signal the run (a plugin whose files only root may read runs as root, said on its items)")


def prepare(folder: Path, decision: Decision) -> Path:
    """Make a child's folder (its output file, working folder and spill folder go inside) and, for an unprivileged
    child, give the working and spill folders to a fresh id and write down the folders its view must open
    (`assume`); returns the child's output path."""
    folder.mkdir(mode=0o711, exist_ok=True)
    inner = [folder / WORKDIR, folder / SPILL_FOLDER]
    for path in inner:
        path.mkdir(mode=0o700, exist_ok=True)
    if decision.unprivileged:
        # the id's processes must reach their folders through the scratch folder, but list nothing in it
        for path in (folder.parent, folder):
            path.chmod(0o711)
        uid = FIRST_ID + secrets.randbelow(ID_RANGE)
        # the scratch folder may itself lie below a closed one (a TMPDIR under /root)
        closed = dict.fromkeys([*decision.closed, *_closed_on_the_way(folder.resolve())])
        (folder / VIEW).write_text(json.dumps(list(closed)))
        for path in inner:
            os.chown(path, uid, uid)
    return folder / "out"


#: the file, beside a child's working folder, that lists the folders its view opens (written by the trusted process)
VIEW = "view.json"

_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 16384, 1 << 18


def _open_view(closed: list[str]) -> None:
    """In a mount namespace of the child's own, each folder only the run's user may enter is covered by one that
    anyone may enter (but not list), holding the same entries (bind mounts of the originals, each with its own
    mode): the view of a user who may enter those folders, and nothing more (a 0700 folder inside stays closed)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def check(result: int, what: str) -> None:
        if result != 0:
            number = ctypes.get_errno()
            raise OSError(number, f"{what}: {os.strerror(number)}")

    check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "making / private")
    for folder in sorted(closed, key=lambda f: f.count("/")):
        names = os.listdir(folder)
        handles = {name: os.open(os.path.join(folder, name), os.O_PATH | os.O_NOFOLLOW) for name in names}
        try:
            check(libc.mount(b"tmpfs", folder.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=0711,size=1m"),
                  f"covering {folder}")
            for name, handle in handles.items():
                target = os.path.join(folder, name)
                info = os.fstat(handle)
                if stat.S_ISLNK(info.st_mode):
                    os.symlink(os.readlink(f"/proc/self/fd/{handle}"), target)
                    continue
                if stat.S_ISDIR(info.st_mode):
                    os.mkdir(target)
                else:
                    os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
                check(libc.mount(f"/proc/self/fd/{handle}".encode(), target.encode(), None, _MS_BIND | _MS_REC,
                                 None), f"showing {target}")
        finally:
            for handle in handles.values():
                os.close(handle)


def assume(workdir: str) -> int | None:
    """In a child, still root after the fork: take the id that owns `workdir` when the trusted process gave it one
    (`prepare`), after opening the view it wrote down; returns the id taken, None where the child stays who it is
    (its folder is the run's user's, or the OS refused the view: then it could not have imported the plugin)."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    owner = os.stat(workdir)
    if owner.st_uid == 0:
        return None
    try:
        with open(os.path.join(os.path.dirname(workdir), VIEW)) as fh:
            closed = [str(f) for f in json.load(fh)]
        if closed:
            _open_view(closed)
    except (OSError, ValueError) as exc:
        print(f"normbench: judged as the run's own user: its view could not be opened ({exc})", file=sys.stderr)
        return None
    os.setgroups([])
    os.setresgid(owner.st_gid, owner.st_gid, owner.st_gid)
    os.setresuid(owner.st_uid, owner.st_uid, owner.st_uid)
    die_with_parent()  # a change of user clears PR_SET_PDEATHSIG (prctl(2))
    # caches a library keeps under the user's name or in a fixed folder go to the child's own folder
    os.environ.update(USER=USER_NAME, LOGNAME=USER_NAME,
                      TORCHINDUCTOR_CACHE_DIR=os.path.join(workdir, "inductor"),
                      TRITON_CACHE_DIR=os.path.join(workdir, "triton"))
    point_hypothesis_at(os.path.join(workdir, ".hypothesis"))
    return owner.st_uid


def point_hypothesis_at(folder: str) -> None:
    """hypothesis' storage folder for this process: its environment, and hypothesis' own setting where it is
    imported already (by the forkserver's preload: its folder is then fixed)."""
    os.environ["HYPOTHESIS_STORAGE_DIRECTORY"] = folder
    configuration = sys.modules.get("hypothesis.configuration")
    if configuration is not None:
        configuration.set_hypothesis_home_dir(folder)


def die_with_parent() -> None:
    """PR_SET_PDEATHSIG: the process is killed when the process that forked it ends (Linux; elsewhere nothing)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
