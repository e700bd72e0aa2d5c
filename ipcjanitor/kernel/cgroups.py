"""What the cgroup tree says of a unit: the processes in every cgroup directory named after it.

systemd runs each unit in a cgroup of its own name; `cgroup.procs` lists every process in it.
On cgroup v2 a process this pid namespace cannot name is listed as `0`: a live process, not
an absence, so an empty unit cgroup proves the unit has no process in any pid namespace. cgroup
v1 (the named `systemd` hierarchy) leaves such processes out: there an empty cgroup proves it
only where no process can be invisible to us (the host's pid namespace, or
pid_namespace_complete).

The tree is walked from its root, never guessed at: a directory that is not there proves
nothing unless the walk that did not find it read the whole tree. The whole tree is the one
mounted at its root ("/" in mountinfo) in the initial cgroup namespace, or one whose root holds
systemd's init.scope (a container's manager: its every unit lies below). The hook takes its
own cgroup from /proc/self/cgroup instead: systemd put it in the unit's own directory. A walk
that lists no process of a unit on v2 asks the kernel once more (cgroup.events, _populated);
the hook, which populates its unit itself, asks its unit's pids.current instead (_more_tasks).

I/O at the edge: the readers below return records; `judge` is pure.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import NamedTuple

from ..chase import Refused, stat_controlled
from ..model import Pid, UnitState
from ..unitnames import unit_matches

INIT_CGROUP_NS_INODE = 0xEFFFFFFB  # PROC_CGROUP_INIT_INO in include/linux/proc_ns.h
_PREFERRED = ("/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd")


class Hierarchy(NamedTuple):
    """The cgroup hierarchy systemd tracks units in, as mounted here."""

    mount: Path  # where its root is mounted
    unified: bool  # cgroup v2 (a process of another pid namespace reads 0); else v1 name=systemd
    line: str  # its key in /proc/PID/cgroup: "0:" (v2) or "N:name=systemd" (v1)
    root: str  # the mount's root in the hierarchy, as mountinfo shows it ("/": the whole view)


class UnitCgroup(NamedTuple):
    """What the tree says of one unit pattern."""

    directories: tuple[str, ...]  # the directories named after it, relative to the tree's root
    pids: tuple[Pid, ...]  # in them and below, ours excluded; 0: a process of another pid ns
    unified: bool  # read from cgroup v2 (where an invisible process is listed as 0)
    # a kernel counter says a process is left that the walk listed nowhere: one moved between
    # the unit's sub-cgroups while they were read (cgroup.events: _populated; the hook's
    # pids.current: _more_tasks)
    populated: bool = False


class CgroupTree(NamedTuple):
    """One read of the cgroup tree for the units a run asks about."""

    units: Mapping[str, UnitCgroup] = MappingProxyType({})
    blind: str | None = None  # why the tree could not be read: then nothing here counts
    where: str = ""  # the tree read ("/sys/fs/cgroup/unified")


def _mounts(mountinfo: str) -> Iterator[tuple[str, str, str, list[str]]]:
    """PURE: each mount of a mountinfo text: its point, its root, its type, its super options."""
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) >= 5 and len(rfields) >= 3:
            yield fields[4], fields[3], rfields[0], rfields[2].split(",")


def hierarchies(mountinfo: str) -> list[Hierarchy]:
    """The cgroup2 and v1 name=systemd mounts of a mountinfo text, the preferred first (v2,
    at its usual places); of several mounts on one point, the last (the one on top)."""
    found: dict[str, Hierarchy] = {}
    for point, root, fstype, options in _mounts(mountinfo):
        if fstype == "cgroup2":
            found[point] = Hierarchy(Path(point), True, "0:", root)
        elif fstype == "cgroup" and "name=systemd" in options:
            found[point] = Hierarchy(Path(point), False, "name=systemd", root)
        else:
            found.pop(point, None)  # something else mounted over it

    def rank(h: Hierarchy) -> tuple[int, int]:
        place = str(h.mount)
        return (0 if h.unified else 1, _PREFERRED.index(place) if place in _PREFERRED else 9)

    return sorted(found.values(), key=rank)


def pids_hierarchy(mountinfo: str) -> Hierarchy | None:
    """The cgroup v1 `pids` hierarchy as mounted here (of several mounts on one point, the one
    on top), or None. On a hybrid host the unified hierarchy has no controller: the unit's
    task count is there."""
    found: dict[str, Hierarchy] = {}
    for point, root, fstype, options in _mounts(mountinfo):
        if fstype == "cgroup" and "pids" in options:
            found[point] = Hierarchy(Path(point), False, "pids", root)
        else:
            found.pop(point, None)  # something else mounted over it
    return next(iter(found.values()), None)


def own_path(cgroup_text: str, hierarchy: Hierarchy) -> str | None:
    """Our own cgroup in `hierarchy`, from the text of /proc/self/cgroup (None: not there)."""
    for line in cgroup_text.splitlines():
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        key = "0:" if hid == "0" and not controllers else controllers
        if key == hierarchy.line or (hierarchy.line == "pids" and "pids" in key.split(",")):
            return path
    return None


def unit_directory(path: str, unit: str) -> str | None:
    """The part of a cgroup path up to its outermost directory named `unit` (None: none is).
    A directory below it is the unit's too (Delegate=: `.control`, a payload's own). Never the
    innermost: a delegated unit owns its subtree, may nest a directory of its own name there
    and move the hook into it, and that directory alone would hide the unit's processes."""
    if path.startswith("/.."):
        return None  # outside our cgroup namespace's root: not a path in the mounted tree
    parts = path.strip("/").split("/")
    for i, part in enumerate(parts, 1):
        if cgroup_unit_name(part) == unit:
            return "/" + "/".join(parts[:i])
    return None


def cgroup_unit_name(component: str) -> str:
    """The unit name a cgroup directory stands for: systemd's cg_unescape().

    systemd escapes a unit's cgroup directory with a leading "_" when the name would clash
    with the cgroup file system's own names (memory.service lives in _memory.service) or starts
    with "_" or "." itself (_billing.service in __billing.service); read raw, such a running
    unit would look stopped.
    """
    return component[1:] if component.startswith("_") else component


def _procs(directory: str) -> tuple[Pid, ...] | None:
    """cgroup.procs of one directory; () for one that is gone (a cgroup is removed only when
    empty) or threaded (its domain lists its processes); None: could not be read."""
    try:
        with open(os.path.join(directory, "cgroup.procs"), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return ()
    except OSError as exc:
        if exc.errno in (errno.ENODEV, errno.EOPNOTSUPP):
            return ()
        return None
    return tuple(int(p) for p in data.split())


class _Walk:
    """One walk of the tree: each directory, with the patterns its path names."""

    def __init__(self, patterns: Iterable[str], primary: Mapping[str, str]) -> None:
        self.patterns = tuple(patterns)
        self.primary = primary
        self.dirs: dict[str, list[str]] = {p: [] for p in self.patterns}
        self.pids: dict[str, list[Pid]] = {p: [] for p in self.patterns}
        self.blind: str | None = None

    def named(self, name: str) -> tuple[str, ...]:
        unit = cgroup_unit_name(name)
        return tuple(
            p
            for p in self.patterns
            if unit_matches(p, unit) or (p in self.primary and unit_matches(self.primary[p], unit))
        )

    def run(self, root: str, inherited: tuple[str, ...] = (), rel: str = "") -> None:
        """Walk from `root` (named after `inherited` itself: its processes count too)."""
        stack: list[tuple[str, str, tuple[str, ...]]] = [(root, rel, inherited)]
        while stack and self.blind is None:
            path, rel, inherited = stack.pop()
            if inherited and not self._read(path, inherited):
                return
            try:
                with os.scandir(path) as it:
                    subs = [e.name for e in it if e.is_dir(follow_symlinks=False)]
            except FileNotFoundError:
                if path != root:
                    continue  # removed while we walked: it was empty
                self.blind = f"cannot read the cgroup tree at {path}: it is not there"
                return
            except OSError as exc:
                self.blind = f"cannot read the cgroup tree at {path}: {exc.strerror}"
                return
            for name in subs:
                own = self.named(name) if "." in name else ()
                for p in own:
                    if p not in inherited:
                        self.dirs[p].append(f"{rel}/{name}")
                stack.append((f"{path}/{name}", f"{rel}/{name}", tuple({*inherited, *own})))

    def _read(self, path: str, patterns: tuple[str, ...]) -> bool:
        pids = _procs(path)
        if pids is None:
            self.blind = f"cannot read {path}/cgroup.procs"
            return False
        for p in patterns:
            self.pids[p].extend(pids)
        return True


def read_tree(
    hierarchy: Hierarchy,
    patterns: Iterable[str],
    primary: Mapping[str, str],
    exclude: frozenset[Pid],
    *,
    complete: str | None,
    own: tuple[str, str] | None = None,
    counters: tuple[str, ...] = (),
    tasks_of: str = "self",
) -> CgroupTree:
    """Every directory named after each pattern, and the processes in it and below.

    `complete`: None when the mounted tree is the whole tree (see the module's docstring),
    else why it may not be, and then only `own` is read: (the hook's unit, its directory as
    unit_directory found it), for the pattern naming exactly that unit. `counters`: the
    pids.current files that count every task of that unit's subtree (see _more_tasks), of
    which the hook's own (/proc/TASKS_OF/task: "self", or the launcher the hook server runs
    it for) are not the unit's.
    """
    mount = str(hierarchy.mount)
    units: dict[str, UnitCgroup] = {}
    rest = set(patterns)
    if own is not None and own[0] in rest:
        walk = _Walk([own[0]], {})
        walk.run(mount + own[1], (own[0],), own[1])  # its directory and every one below
        if walk.blind is None:
            found = _without(walk.pids[own[0]], exclude)
            more = not found and _more_tasks(counters, tasks_of)
            units[own[0]] = UnitCgroup((own[1],), found, hierarchy.unified, more)
            rest.discard(own[0])
    if rest and complete is None:
        walk = _Walk(sorted(rest), primary)
        walk.run(mount)
        if walk.blind is not None:
            return CgroupTree(MappingProxyType(units), walk.blind, mount)
        for p in rest:
            moved = hierarchy.unified and not walk.pids[p] and _populated(mount, walk.dirs[p])
            units[p] = UnitCgroup(
                tuple(walk.dirs[p]), _without(walk.pids[p], exclude), hierarchy.unified, moved
            )
    return CgroupTree(MappingProxyType(units), complete if rest else None, mount)


def _populated(mount: str, directories: Iterable[str]) -> bool:
    """Whether any of the directories' cgroup.events says "populated 1" (cgroup v2: some
    process in it or below, counted by the kernel at once for the whole subtree).

    The walk reads one cgroup.procs after another: a delegated unit's process moving from a
    directory not yet read to one already read is listed by none, and the unit would look
    stopped. Read after the walk, this closes that: no one but root moves a process out of
    a unit's subtree. Used only where the walk listed no process, not even ours (ipcjanitor
    run from inside the unit populates it itself); unreadable: the walk's word stands.
    """
    for rel in directories:
        try:
            with open(f"{mount}{rel}/cgroup.events", "rb") as f:
                if b"populated 1" in f.read().splitlines():
                    return True
        except OSError:
            continue  # gone (it was empty), or not there to read
    return False


def more_tasks(counted: int, own: int) -> bool:
    """PURE: whether a unit's task count says a task is in its subtree besides the hook's own
    threads (`own`). Equal: the walk decides; fewer (it does not count us: not our subtree)
    proves nothing either."""
    return counted > own


def _own_tasks(whose: str = "self") -> int:
    return len(os.listdir(f"/proc/{whose}/task"))


# pids.current also counts a task that has exited until it is reaped (pids_release): right
# after a kill, the unit's last processes can still be zombies of systemd's for a moment. A
# count above ours is read again for up to this long; a live task keeps it above, always.
SETTLE = 0.5  # seconds
_SETTLE_STEP = 0.005


def _counts(counter: str, whose: str) -> tuple[int, int]:
    """(the counter's tasks, the hook's own), our own read first."""
    own = _own_tasks(whose)
    with open(counter, "rb") as f:
        return int(f.read()), own


def _pause() -> None:
    time.sleep(_SETTLE_STEP)


def _more_tasks(counters: Iterable[str], whose: str = "self") -> bool:
    """Whether the first readable of `counters` counts more tasks than the hook's own.

    The hook cannot ask cgroup.events (it populates its unit itself), but pids.current of its
    unit's outermost directory counts every task of that directory and all below, the hook's
    threads included, as one atomic counter; a task moving between two directories below is
    charged to the destination before it is uncharged from the source, each up to the root
    (kernel/cgroup/pids.c, pids_can_attach), so their common ancestor never counts it out.
    Our threads are counted first: one we start meanwhile can only make the count higher.
    Unreadable, missing or not a number: the walk's word stands (never "stopped" from here).
    A count above ours is read again until it falls to ours (exited tasks reaped) or SETTLE
    has passed (then a task is there); unreadable meanwhile, it stays "more".
    """
    for counter in counters:
        try:
            counted, own = _counts(counter, whose)
        except (OSError, ValueError):
            continue
        deadline = time.monotonic() + SETTLE
        while more_tasks(counted, own) and time.monotonic() < deadline:
            _pause()
            try:
                counted, own = _counts(counter, whose)
            except (OSError, ValueError):
                return True
        return more_tasks(counted, own)
    return False


def _without(pids: Iterable[Pid], exclude: frozenset[Pid]) -> tuple[Pid, ...]:
    return tuple(p for p in pids if p not in exclude)


def _initial_cgroup_namespace() -> bool:
    try:
        return os.readlink("/proc/self/ns/cgroup") == f"cgroup:[{INIT_CGROUP_NS_INODE}]"
    except OSError:
        return False


def _completeness(hierarchy: Hierarchy) -> str | None:
    """None when the mounted tree is the whole tree a unit's cgroups can be in; else why not."""
    if hierarchy.root != "/":
        return f"{hierarchy.mount} shows only the cgroup {hierarchy.root}"
    if _initial_cgroup_namespace() or (hierarchy.mount / "init.scope").is_dir():
        return None
    return (
        f"the cgroup tree at {hierarchy.mount} may not be the whole tree (a cgroup namespace, "
        "and no init.scope of a systemd at its root)"
    )


def _made_by_root(mount: str, directory: str) -> bool:
    """Whether only root (systemd) can have made `directory` or put another in its place
    (chase.stat_controlled: no directory on the way is another user's or writable by others).
    In a delegated subtree (user@UID.service, a Delegate= unit's User=) its owner can make a
    directory of any unit's name and move a process of its subtree into it; a root
    `ipcjanitor hook --unit X` typed there must not take that directory for the system's X."""
    try:
        _, uids, anyone = stat_controlled(os.path.join(mount, directory.lstrip("/")))
    except Refused:
        return False
    return not uids and anyone is None


def unit_cgroups(
    patterns: Iterable[str],
    primary: Mapping[str, str],
    exclude: frozenset[Pid],
    own_unit: str | None = None,
    hook_pid: Pid | None = None,
) -> CgroupTree:
    """The cgroup tree's word on each unit pattern (I/O: mountinfo, /proc/PID/cgroup, the
    tree). `own_unit`: the hook's unit, read from the hook's own cgroup when it is in it —
    ours, or that of `hook_pid`, the hook's launcher that asked the hook server (hook/serve.py)."""
    wanted = set(patterns)
    if not wanted:
        return CgroupTree()
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError as exc:
        return CgroupTree(blind=f"cannot read /proc/self/mountinfo: {exc.strerror}")
    found = hierarchies(mountinfo)
    if not found:
        return CgroupTree(blind="no cgroup2 or name=systemd hierarchy is mounted")
    hierarchy = found[0]
    own = None
    counters: tuple[str, ...] = ()
    whose = "self" if hook_pid is None else str(hook_pid)  # who sits in the unit's cgroup
    if own_unit is not None and own_unit in wanted:
        try:
            cgroup_text = Path(f"/proc/{whose}/cgroup").read_text()
        except OSError:
            cgroup_text = ""
        directory = _trusted_directory(hierarchy, cgroup_text, own_unit)
        if directory:
            own = (own_unit, directory)
            counters = _counters(hierarchy, directory, pids_hierarchy(mountinfo), cgroup_text,
                                 own_unit)  # fmt: skip
    return read_tree(hierarchy, wanted, primary, exclude, complete=_completeness(hierarchy),
                     own=own, counters=counters, tasks_of=whose)  # fmt: skip


def _trusted_directory(hierarchy: Hierarchy, cgroup_text: str, unit: str) -> str | None:
    """The outermost directory named `unit` on our own path in `hierarchy`, where only root
    can have made it (None: not in it, or inside someone's delegated subtree)."""
    if hierarchy.root != "/":
        return None
    path = own_path(cgroup_text, hierarchy)
    directory = unit_directory(path, unit) if path else None
    if directory and not _made_by_root(str(hierarchy.mount), directory):
        return None  # inside someone's delegated subtree: the whole tree decides
    return directory


def _counters(
    hierarchy: Hierarchy, directory: str, pids: Hierarchy | None, cgroup_text: str, unit: str
) -> tuple[str, ...]:
    """Where the hook's unit's task count may be: its v2 directory (the pids controller
    enabled for it), else its directory in the v1 `pids` hierarchy (a hybrid host)."""
    found = [f"{hierarchy.mount}{directory}/pids.current"] if hierarchy.unified else []
    legacy = _trusted_directory(pids, cgroup_text, unit) if pids is not None else None
    if pids is not None and legacy:
        found.append(f"{pids.mount}{legacy}/pids.current")
    return tuple(found)


def judge(found: UnitCgroup | None, hidden_pids: bool) -> UnitState | None:
    """PURE: what one unit's cgroups prove; None when they prove nothing (then the /proc scan
    decides, under the blindness rules).

    Any process listed (a 0 too: a live process of another pid namespace), or a populated
    cgroup (a process moved while the walk read it) -> RUNNING. None listed -> STOPPED on
    cgroup v2, in any pid namespace; on v1, which leaves out what this pid namespace cannot
    name, only when no process can hide from it (`hidden_pids` False).
    """
    if found is None:
        return None
    if found.pids or found.populated:
        return UnitState.RUNNING
    if found.unified or not hidden_pids:
        return UnitState.STOPPED
    return None
