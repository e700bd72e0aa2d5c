"""`learn UNIT`: watch a running unit's processes, propose the owner table for what they use.

Each sample lists the unit's processes (their cgroup, from /proc, as processes.py reads it)
and records, per System V object: the segments they have attached (/proc/PID/maps), the
semaphore sets and queues their threads are blocked on (/proc/PID/task/TID/syscall), the
objects whose recorded pids (creator, last operator, sender, receiver) are theirs, and the
IPC_PRIVATE objects of their user. proposal.py turns that into TOML.
"""

from __future__ import annotations

import errno
import os
import platform
import pwd
import re
import stat
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import NamedTuple, TextIO

from .. import chase
from ..errors import ExitCode, IpcJanitorError, NotPermittedError, UsageError
from ..escape import safe_name
from ..kernel.holders import Identity
from ..kernel.posix import SHM_ROOT, list_posix
from ..kernel.processes import boot_time, own_pids, parse_stat, unit_of_pid
from ..kernel.procfs import (
    LIVE,
    Procfs,
    Unread,
    fd_link,
    listdir,
    of,
    pids,
    read_bytes,
    read_text,
    status_field,
    task_syscalls,
)
from ..kernel.sysvipc import read_objects
from ..kernel.tasks import (
    ELFCLASS32,
    SEMOP,
    SEMTIMEDOP,
    blocked_call,
    elf_class,
    knows,
    parse_syscall,
)
from ..model import BASE_REUSE_MARGIN, IpcKind, IpcObject, Pid, PosixObject
from ..policy.load import check_overlaps, load_policy
from ..policy.model import Policy
from ..policy.parse import parse_duration, parse_policy_text
from ..unitnames import unit_matches
from .posix import dev_text, holds, locks
from .propose import (
    APPEARED,
    Candidate,
    Claimant,
    PosixSighting,
    Process,
    Proposal,
    Sighting,
    Watch,
    propose,
    render,
)

POLICY_DIR = Path("/etc/ipcjanitor/policy.d")
SAMPLE_INTERVAL = 0.02  # seconds between samples: a 100 ms request is seen about 5 times
# ... or more: a sample of a big unit may take a while, and learn runs beside production
# work, so it sleeps 3x as long as it looked: at most a quarter of one CPU (measured: Apache
# with 20 children, 7 ms a sample; a PHP worker, 1 ms)
IDLE_PER_BUSY = 3
POLICY_MODE = 0o644  # like /etc/ipcjanitor/policy.toml: readable, writable by root only
_MAX_FDS = 4096  # per process and sample: more open files than that are not looked at
_PSEUDO_FS = ("/proc/", "/sys/", "/dev/")

_SYSV_NAME = re.compile(r"^/SYSV([0-9a-fA-F]{8})(?: \(deleted\))?$")
# what a process outside the unit did, by the role of the pid an object records
_DID = {"creator": "created", "last shmat/shmdt": "last attached or detached",
        "last sender": "last sent to", "last receiver": "last received from"}  # fmt: skip
# a segment attached more often than the unit's maps show, this many samples in a row, with no
# process found holding it: attached where learn cannot see (another pid namespace, or maps
# it may not read); one sample can be a race with a process that came or went meanwhile
_UNEXPLAINED = 2

Which = tuple[IpcKind, int, int]  # (kind, id, key): an id removed and reused is another object


# -- parsing /proc (pure) ----------------------------------------------------------------------


class Maps(NamedTuple):
    sysv: tuple[tuple[int, int], ...]  # (shmid, key) of each attached System V segment
    files: frozenset[str]  # other mapped files, by path
    # shmid -> its mappings: the kernel's nattch counts each one (a split mapping twice)
    vmas: Mapping[int, int] = {}


def parse_maps(text: str) -> Maps:
    """/proc/PID/maps: a System V segment shows as /SYSV<key> whose inode is its shmid."""
    sysv: list[tuple[int, int]] = []
    vmas: Counter[int] = Counter()
    files: set[str] = set()
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[4].isdigit():
            continue
        path = fields[5]
        m = _SYSV_NAME.match(path)
        if m:
            entry = (int(fields[4]), int(m.group(1), 16))
            vmas[entry[0]] += 1
            if entry not in sysv:
                sysv.append(entry)
        elif path.startswith("/") and not path.endswith(" (deleted)"):
            files.add(path)
    return Maps(tuple(sysv), frozenset(files), vmas)


def blocked_on(
    syscall_text: str, machine: str, native: bool = True
) -> tuple[str, IpcKind, int] | None:
    """(syscall, kind, id) when /proc/PID/task/TID/syscall shows a sleep in semop or msgrcv.

    `native`: the task runs the machine's own syscall table (not a 32-bit process), without
    which a semaphore call is not recognised (queues: tasks.py knows 32-bit numbers too).
    """
    queue = parse_syscall(syscall_text, machine)
    if queue is not None:
        return queue[0], IpcKind.MSG, queue[1]
    # semaphores: tasks.py's table knows the machine's own numbers only
    call = blocked_call(syscall_text, machine, compat=False) if native else None
    if call is None or call.name not in (SEMOP, SEMTIMEDOP):
        return None
    return call.name, IpcKind.SEM, call.args[0] & 0xFFFFFFFF


def command_args(cmdline: bytes) -> list[str]:
    """/proc/PID/cmdline split into its arguments (a process may rewrite it: only a hint)."""
    return [os.fsdecode(a) for a in cmdline.rstrip(b"\0").split(b"\0") if a]


def named_paths(args: list[str], cwd: str | None) -> list[str]:
    """The absolute paths an argument list names: absolute, ./relative, or --opt=/path."""
    paths = []
    for arg in args[1:]:
        value = arg.split("=", 1)[1] if arg.startswith("-") and "=" in arg else arg
        if value.startswith("/"):
            paths.append(os.path.normpath(value))
        elif cwd and value and not value.startswith("-") and "\0" not in value:
            paths.append(os.path.normpath(os.path.join(cwd, value)))
    return paths


# -- watching (I/O) ----------------------------------------------------------------------------


class _Outsider(NamedTuple):
    """A process outside the unit, as first read: enough to name it and to tell pid reuse."""

    start: float
    comm: str
    unit: str | None


class _Watcher:
    """Samples the unit's processes and the IPC tables; accumulates what proposal.py needs."""

    def __init__(self, unit: str, procfs: Path | Procfs = LIVE) -> None:
        self.unit = unit
        self.proc = of(procfs)  # LIVE: the IPC tables from the kernel itself
        self.procfs = self.proc.root
        self.machine = platform.machine()
        self.btime = boot_time()
        self.exclude = own_pids()
        self.in_unit: dict[Pid, bool] = {}  # every pid of the previous listing
        self.processes: dict[Pid, Process] = {}
        self.alive: set[Pid] = set()  # the unit's processes in the latest sample
        self.evidence: dict[Which, Counter[tuple[str, Pid]]] = {}
        self.objects: dict[Which, IpcObject] = {}
        self.seen_in: Counter[Which] = Counter()
        self.candidates: dict[str, Candidate] = {}
        self.not_candidates: set[str] = set()  # looked at once, no use (gone, a socket...)
        self.unreadable: set[Pid] = set()
        self.compat: set[Pid] = set()  # 32-bit processes: their semop is not recognised
        self.samples = 0
        self.private_now: list[IpcObject] = []
        # what learn needs to claim only the unit's own (README "What it claims")
        self.first_present: dict[Which, int] = {}  # the sample an object was first seen in
        self.present_keys: set[int] = set()
        self.claimants: dict[Which, dict[tuple[str, Pid], Claimant]] = {}
        self.outsiders: dict[Pid, _Outsider | None] = {}  # None: gone before it was read
        self.surplus_run: Counter[Which] = Counter()  # samples in a row; see _UNEXPLAINED
        self.attached_unseen: set[Which] = set()
        self.unit_vmas: Counter[int] = Counter()  # shmid -> the unit's mappings, this sample
        self.maps_text: dict[Pid, str] = {}  # this sample's maps of the unit's processes
        self.posix = _PosixWatch(self)

    # one sample
    def sample(self) -> int:
        """Look once; returns how many processes the unit has now."""
        self._list_unit_processes()
        by_id = {(o.kind, o.id): o for o in read_objects(self.proc)}
        self.unit_vmas = Counter()
        self.maps_text = {}
        seen: dict[tuple[IpcKind, int], set[tuple[str, Pid]]] = {}
        for pid in sorted(self.alive):
            for kind, ipc_id, what, key in self._look_at(pid):
                obj = by_id.get((kind, ipc_id))
                if obj is not None and key in (None, obj.key):  # else the id was reused
                    seen.setdefault((kind, ipc_id), set()).add((what, pid))
        # nattch read again after the maps: a mapping made or dropped meanwhile is no surplus
        shm = read_objects(self.proc, frozenset({IpcKind.SHM}))
        nattch_after = {o.id: o.nattch for o in shm}
        uids = {self.processes[p].uid for p in self.alive}
        for ident, obj in by_id.items():
            self._weigh(obj, seen.get(ident, set()), uids)
        self._outside_attachers(by_id.values(), nattch_after)
        self.private_now = [o for o in by_id.values() if o.key == 0]
        self.posix.sample()
        self.samples += 1
        return len(self.alive)

    def _weigh(self, obj: IpcObject, found: set[tuple[str, Pid]], uids: set[int]) -> None:
        """This sample's evidence that the unit uses obj: `found` (what its processes' maps
        and fds showed), the pids its record names, an IPC_PRIVATE of one of its users."""
        which = (obj.kind, obj.id, obj.key)
        self.first_present.setdefault(which, self.samples)
        if obj.key != 0:
            self.present_keys.add(obj.key)
        outside = self._outside_records(which, obj)
        for rec in obj.pids:
            if self._was_the_units(rec.pid, obj):
                role = "last semop" if rec.role.startswith("last semop") else rec.role
                found.add((role, rec.pid))
        if obj.key == 0 and obj.uid in uids - {0} and obj.cuid in uids:
            found.add((f"IPC_PRIVATE of uid {obj.uid}, a user of the unit's processes", 0))
        if found and self._appeared_now(which) and not outside:
            found.add((APPEARED, 0))
        if found:
            self.objects[which] = obj
            self.evidence.setdefault(which, Counter()).update(found)
            self.seen_in[which] += 1

    def _appeared_now(self, which: Which) -> bool:
        """A set or queue that was not there at the first sample and is new in this one (a
        segment records its creator, which is better evidence)."""
        first = self.first_present[which]
        return which[0] is not IpcKind.SHM and first == self.samples > 0

    def _outside_records(self, which: Which, obj: IpcObject) -> bool:
        """Record each live process outside the unit whose pid the object records (one that
        started before the object's last activity: a later one only reuses the pid)."""
        found = False
        for rec in obj.pids:
            pid = rec.pid
            if pid == 0 or pid in self.exclude or self.in_unit.get(pid, True):
                continue  # none, hidden, ours, gone, or a process of the unit
            proc = self._outsider(pid)
            if proc is None or proc.start > obj.last_activity + BASE_REUSE_MARGIN:
                continue
            role = "last semop" if rec.role.startswith("last semop") else rec.role
            what = _DID.get(role, "last operated on")
            self._claimant(which, Claimant(what, pid, proc.comm, proc.unit))
            found = True
        return found

    def _claimant(self, which: Which, c: Claimant) -> None:
        self.claimants.setdefault(which, {}).setdefault((c.what, c.pid), c)

    def _outsider(self, pid: Pid) -> _Outsider | None:
        if pid not in self.outsiders:
            stat, comm = read_text(self.procfs, pid, "stat"), read_text(self.procfs, pid, "comm")
            start = None if isinstance(stat, Unread) else self._start(stat)
            if start is None or isinstance(comm, Unread):
                self.outsiders[pid] = None  # gone, or not ours to read
            else:
                unit = unit_of_pid(pid, self.procfs)
                self.outsiders[pid] = _Outsider(start, comm.rstrip("\n"), unit)
        return self.outsiders[pid]

    def _start(self, stat: str) -> float | None:
        try:
            return parse_stat(stat, self.btime)[1]
        except (ValueError, IndexError):
            return None

    def _outside_attachers(
        self, objects: Iterable[IpcObject], nattch_after: Mapping[int, int | None]
    ) -> None:
        """Segments attached more often than the unit's maps show, in both reads of the table:
        who holds those the unit used is looked up; those attached where learn cannot see, in
        _UNEXPLAINED samples in a row, are remembered."""
        surplus: dict[int, Which] = {}
        for obj in objects:
            which = (obj.kind, obj.id, obj.key)
            after = nattch_after.get(obj.id)
            if obj.kind is not IpcKind.SHM or obj.nattch is None or after is None:
                continue
            if min(obj.nattch, after) <= self.unit_vmas[obj.id]:
                self.surplus_run.pop(which, None)
            elif not any(c.what == "attached" for c in self.claimants.get(which, {}).values()):
                surplus[obj.id] = which
        wanted = {  # the unit's, whose holders are not known yet
            shmid: which
            for shmid, which in surplus.items()
            if which in self.objects and which not in self.attached_unseen
        }
        explained = self._scan_attachers(wanted) if wanted else set()
        for shmid, which in surplus.items():
            if shmid in explained:
                self.surplus_run.pop(which, None)
                continue
            self.surplus_run[which] += 1
            if self.surplus_run[which] >= _UNEXPLAINED:
                self.attached_unseen.add(which)

    def _scan_attachers(self, wanted: Mapping[int, Which]) -> set[int]:
        """Every other process's maps, for who holds the wanted segments: each outside the
        unit is recorded as a claimant. Returns the shmids whose holders were found."""
        explained: set[int] = set()
        for pid in pids(self.procfs):
            if pid in self.exclude or self.in_unit.get(pid):
                continue
            text = read_text(self.procfs, pid, "maps")
            if isinstance(text, Unread):  # gone, or not ours to read: then unexplained
                continue
            maps = parse_maps(text)
            hits = [shmid for shmid in maps.vmas if shmid in wanted]
            if not hits:
                continue
            explained.update(hits)
            unit = unit_of_pid(pid, self.procfs)
            proc = self._outsider(pid)
            if (unit is not None and unit_matches(self.unit, unit)) or proc is None:
                continue  # a process of the unit started since the listing, or gone
            for shmid in hits:
                self._claimant(wanted[shmid], Claimant("attached", pid, proc.comm, proc.unit))
        return explained

    def _others(self, which: Which) -> tuple[Claimant, ...]:
        named = tuple(self.claimants.get(which, {}).values())
        if which in self.attached_unseen and not any(c.what == "attached" for c in named):
            named += (Claimant("attached", 0, "", None),)
        return named

    def _list_unit_processes(self) -> None:
        listing: dict[Pid, bool] = {}
        for pid in pids(self.procfs):
            if pid in self.in_unit:  # a pid present in both listings is the same process
                listing[pid] = self.in_unit[pid]
                continue
            unit = unit_of_pid(pid, self.procfs)
            member = unit is not None and unit_matches(self.unit, unit) and pid not in self.exclude
            listing[pid] = member and self._first_sight(pid)
        # a pid in both listings is the same process; any other one read before may not be
        self.outsiders = {
            p: o for p, o in self.outsiders.items() if p in self.in_unit and p in listing
        }
        self.in_unit = listing
        self.alive = {p for p, member in listing.items() if member}

    def _first_sight(self, pid: Pid) -> bool:
        """Record a new process of the unit; False if it vanished meanwhile."""
        base = self.procfs / str(pid)
        stat, status = read_text(self.procfs, pid, "stat"), read_text(self.procfs, pid, "status")
        cmdline = read_bytes(self.procfs, pid, "cmdline")
        start = None if isinstance(stat, Unread) else self._start(stat)
        if start is None or isinstance(status, Unread) or isinstance(cmdline, Unread):
            return False
        args = command_args(cmdline)
        uids = (status_field(status, "Uid") or "").split()
        uid = int(uids[1]) if len(uids) > 1 and uids[1].isdigit() else -1  # the effective uid
        cwd = _readlink(self.procfs, pid, "cwd")
        self.processes[pid] = Process(pid, start, uid, " ".join(args) or "?")
        for path in named_paths(args, cwd):
            self._candidate(path, f"on the command line of pid {pid}", 0)
        exe = _readlink(self.procfs, pid, "exe")
        if exe:
            self._candidate(exe, f"the executable of pid {pid}", 1)
        if elf_class(base / "exe") == ELFCLASS32:
            self.compat.add(pid)  # its syscall numbers are another table's
        if cwd:
            self._candidate(cwd, f"the working directory of pid {pid}", 4)
        return True

    def _look_at(self, pid: Pid) -> Iterator[tuple[IpcKind, int, str, int | None]]:
        """(kind, id, how, key if known) of each object the process is seen using now."""
        text = read_text(self.procfs, pid, "maps")
        if isinstance(text, Unread):
            if text.hidden:
                self.unreadable.add(pid)
            return
        self.maps_text[pid] = text
        maps = parse_maps(text)
        for shmid, key in maps.sysv:
            yield IpcKind.SHM, shmid, "attached", key
        self.unit_vmas.update(maps.vmas)
        for path in maps.files:
            self._candidate(path, f"mapped by pid {pid}", 3)
        for path in _open_files(self.procfs, pid):
            self._candidate(path, f"open in pid {pid}", 2)
        for _, call in task_syscalls(self.procfs, pid):
            if isinstance(call, Unread):
                continue
            hit = blocked_on(call, self.machine, native=pid not in self.compat)
            if hit is not None:
                name, kind, ipc_id = hit
                yield kind, ipc_id, f"blocked in {name}", None

    def _was_the_units(self, pid: Pid, obj: IpcObject) -> bool:
        """Whether a pid an object records was one of the unit's processes when it acted."""
        proc = self.processes.get(pid)
        if proc is None or pid in self.exclude:
            return False
        if pid not in self.alive and pid in self.in_unit:
            return False  # gone from the unit, and another process has the pid now
        # the act cannot predate the process (pid reuse): its time is the object's newest
        return proc.start <= obj.last_activity + BASE_REUSE_MARGIN

    def _candidate(self, path: str, how: str, rank: int) -> None:
        if path in self.not_candidates or (
            path in self.candidates and self.candidates[path].rank <= rank
        ):
            return
        # "/": every daemon's working directory, and with inode 2 (ext4) its ftok keys look
        # like keys chosen by hand (ftok("/", 'q') is 0x71000002 there): no evidence at all
        if path == "/" or path.startswith(_PSEUDO_FS) or not _utf8(path):
            self.not_candidates.add(path)
            return
        try:
            st = os.stat(path)  # in our namespace: where the policy's ftok will stat it
        except (OSError, ValueError):
            self.not_candidates.add(path)
            return
        if stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode):
            self.candidates[path] = Candidate(path, st.st_dev, st.st_ino, how, rank)
        else:
            self.not_candidates.add(path)

    def watch(self, seconds: float, progress: TextIO | None) -> tuple[Watch, str | None]:
        """Sample until `seconds` passed, the unit stopped, or Ctrl-C; note why it ended early."""
        started = time.monotonic()
        if not self.sample():
            raise IpcJanitorError(
                f"{self.unit} has no processes: learn watches a running unit "
                f"(systemctl start {self.unit}, then learn again)"
            )
        ended: str | None = None
        busy, last_shown = 0.0, -1.0
        try:
            while (elapsed := time.monotonic() - started) < seconds:
                if progress is not None and elapsed - last_shown >= 0.5:
                    last_shown = elapsed
                    progress.write(
                        f"\rlearning {self.unit}: {elapsed:.0f}/{seconds:.0f} s, "
                        f"{len(self.alive)} processes, {len(self.objects)} objects seen "
                    )
                    progress.flush()
                time.sleep(max(SAMPLE_INTERVAL, IDLE_PER_BUSY * busy))
                looked = time.monotonic()
                alive = self.sample()
                busy = time.monotonic() - looked
                if not alive:
                    ended = f"{self.unit} stopped after {elapsed:.0f} s"
                    break
        except KeyboardInterrupt:
            ended = f"interrupted after {time.monotonic() - started:.0f} s"
        finally:
            if progress is not None:
                progress.write("\r\033[K")
                progress.flush()
        sightings = tuple(
            Sighting(self.objects[i], dict(self.evidence[i]), self.seen_in[i], self._others(i))
            for i in sorted(self.objects, key=lambda i: (i[0].number, i[1], i[2]))
        )
        posix, present, outside = self.posix.result()
        watch = Watch(
            unit=self.unit,
            seconds=time.monotonic() - started,
            samples=self.samples,
            processes=dict(self.processes),
            sightings=sightings,
            candidates=tuple(sorted(self.candidates.values())),
            private_now=tuple(
                o for o in self.private_now if (o.kind, o.id, o.key) not in self.objects
            ),
            present_keys=frozenset(self.present_keys),
            posix=posix,
            posix_present=present,
            posix_outside=outside,
        )
        return watch, ended


class _PosixWatch:
    """The POSIX half of a watch: per sample, the files of /dev/shm and queues of /dev/mqueue
    the unit's processes map, hold open or lock; who outside the unit holds them, read (one
    pass over every other process) when the unit is first seen with an object and once at
    the end for every object listed, whose holders tell the unit's from another's."""

    def __init__(self, watcher: _Watcher) -> None:
        self.w = watcher
        self.enabled = SHM_ROOT.is_dir()
        self.objects: dict[Identity, PosixObject] = {}  # the unit's, as last listed
        self.evidence: dict[Identity, Counter[tuple[str, Pid]]] = {}
        self.seen_in: Counter[Identity] = Counter()
        self.first: dict[Identity, int] = {}
        self.present: dict[Identity, PosixObject] = {}
        self.now: dict[Identity, PosixObject] = {}
        self.outside: dict[Identity, dict[tuple[str, Pid], Claimant]] = {}
        self.scanned: set[Identity] = set()
        self.unreadable = 0  # outside processes whose maps or fds could not be read

    def _devs(self) -> dict[str, int]:
        return {dev_text(o.dev): o.dev for o in self.now.values()}

    def sample(self) -> None:
        if not self.enabled:
            return
        self.now = {o.identity: o for o in list_posix(procfs=self.w.procfs).objects}
        devs = self._devs()
        if not devs:
            return
        for ident, obj in self.now.items():
            self.present[ident] = obj
            self.first.setdefault(ident, self.w.samples)
        locked = locks(self.w.procfs, devs)
        seen: dict[Identity, set[tuple[str, Pid]]] = {}
        for pid in sorted(self.w.alive):
            text = self.w.maps_text.get(pid, "")
            for ident, how in holds(self.w.procfs, pid, text, devs, locked.get(pid, ())):
                if ident in self.now:
                    seen.setdefault(ident, set()).add((how, pid))
        new = [i for i in seen if i not in self.scanned]
        if new:
            self.scan_outside(new)
        for ident, found in seen.items():
            first = self.first[ident]
            if first == self.w.samples > 0 and not self.outside.get(ident):
                found.add((APPEARED, 0))  # it appeared now, in the unit's hands alone
            self.objects[ident] = self.now[ident]
            self.evidence.setdefault(ident, Counter()).update(found)
            self.seen_in[ident] += 1

    def scan_outside(self, wanted: Iterable[Identity]) -> None:
        """Every process outside the unit: which of `wanted` it maps, holds open or locks."""
        want = set(wanted)
        self.scanned |= want
        devs = self._devs()
        locked = locks(self.w.procfs, devs)
        for pid in pids(self.w.procfs):
            if pid in self.w.exclude or self.w.in_unit.get(pid, False):
                continue
            text = read_text(self.w.procfs, pid, "maps")
            if isinstance(text, Unread):
                self.unreadable += text.hidden
                continue
            held = holds(self.w.procfs, pid, text, devs, locked.get(pid, ()))
            hits = [(i, how) for i, how in held if i in want]
            proc = self.w._outsider(pid) if hits else None
            unit = unit_of_pid(pid, self.w.procfs) if proc else None
            if proc is None or (unit is not None and unit_matches(self.w.unit, unit)):
                continue  # gone, or a process of the unit started since the listing
            for ident, how in hits:
                what = {"mapped": "mapped", "open": "held open", "locked": "locked"}[how]
                c = Claimant(what, pid, proc.comm, proc.unit)
                self.outside.setdefault(ident, {}).setdefault((c.what, c.pid), c)

    def result(
        self,
    ) -> tuple[
        tuple[PosixSighting, ...], tuple[PosixObject, ...], dict[Identity, tuple[Claimant, ...]]
    ]:
        if self.enabled and self.now:
            self.scan_outside(self.now)  # the holders of everything present at the end
        outside = {i: tuple(c.values()) for i, c in self.outside.items()}
        sightings = tuple(
            PosixSighting(obj, dict(self.evidence[i]), self.seen_in[i], outside.get(i, ()))
            for i, obj in sorted(self.objects.items(), key=lambda e: (e[1].kind.value, e[1].name))
        )
        present = tuple(sorted(self.present.values(), key=lambda o: (o.kind.value, o.name)))
        return sightings, present, outside


def _readlink(procfs: Path, pid: Pid, name: str) -> str | None:
    target = fd_link(procfs, pid, name)
    return None if isinstance(target, Unread) else target


def _open_files(procfs: Path, pid: Pid) -> Iterator[str]:
    fds = listdir(procfs, pid, "fd")
    for fd in [] if isinstance(fds, Unread) else fds[:_MAX_FDS]:
        target = _readlink(procfs, pid, f"fd/{fd}")
        if target and target.startswith("/") and not target.endswith(" (deleted)"):
            yield target


def _utf8(path: str) -> bool:
    try:
        path.encode()
    except UnicodeEncodeError:  # undecodable bytes (surrogateescape): TOML cannot hold them
        return False
    return True


# -- the command -------------------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]*")
# systemd's unit name characters (unit_name_is_valid); "worker@.service" watches every instance
_UNIT = re.compile(r"[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]*)?\.(service|scope)")


def owner_name_for(unit: str) -> str:
    """An owner name from a unit name: php-worker.service -> php-worker, a@.service -> a."""
    stem = unit.rsplit(".", 1)[0].removesuffix("@")
    return re.sub(r"[^A-Za-z0-9_.@-]", "-", stem).lstrip(".-@") or "learned"


def user_name(uid: int) -> str | None:
    try:
        return safe_name(pwd.getpwuid(uid).pw_name)
    except KeyError:
        return None


class Request(NamedTuple):
    """What `learn` was asked: the command line, as plain values."""

    unit: str
    for_: str  # a duration
    owner: str | None
    write: bool
    policy: str | None
    quiet: bool


def learn(req: Request) -> ExitCode:
    """Watch req.unit, propose an owner table for what it used; print it or --write it."""
    unit, seconds, name = _checked(req)
    directory = _write_dir(req.policy) if req.write else None
    existing = load_policy(req.policy)
    for warning in existing.warnings:
        print(f"ipcjanitor: warning: {warning}", file=sys.stderr)
    if directory is not None:  # refuse before watching, not after a minute of it
        _refuse_existing(name, existing, directory)
    if os.geteuid() != 0:
        print(
            "ipcjanitor: warning: not root: other users' processes cannot be looked into",
            file=sys.stderr,
        )
    watch = _watch(unit, seconds, quiet=req.quiet)
    proposal = propose(watch, name, existing)
    for note in proposal.left_out:
        print(f"ipcjanitor: not claimed: {safe_name(note)}", file=sys.stderr)
    if not proposal.tables:
        raise IpcJanitorError(
            f"everything {unit} was seen using is claimed already (see above): nothing to propose"
        )
    text = render(proposal, watch, user_name)
    target = (directory or POLICY_DIR) / f"{name}.toml"
    _check(text, target, existing, name)
    print(text, end="")
    if directory is None:
        _advise(proposal, existing, target, unit)
        return ExitCode.OK
    for t in proposal.tables:
        if t.name != name:
            _refuse_existing(t.name, existing, directory)
    written = write_policy(text, directory, name)
    print(f"\nwrote {written} (mode {POLICY_MODE:04o})")
    print(f"next: ipcjanitor install-hook {unit}")
    return ExitCode.OK


def _advise(proposal: Proposal, existing: Policy, target: Path, unit: str) -> None:
    """After a proposal only printed: what it would replace, and what to do with it."""
    for t in proposal.tables:
        if (old := existing.owner(t.name)) is not None:
            print(
                f"ipcjanitor: warning: the policy has an owner {t.name!r} already "
                f"({old.source}): this table replaces it if read after that file",
                file=sys.stderr,
            )
    print(
        f"ipcjanitor: review it, then save it as {target} (or run learn with --write) "
        f"and `ipcjanitor install-hook {unit}`",
        file=sys.stderr,
    )


def _checked(req: Request) -> tuple[str, float, str]:
    """The unit, the watch's seconds and the owner's name, or a usage error (64)."""
    if not _UNIT.fullmatch(req.unit):
        raise UsageError(
            f"{req.unit!r} is not a running service or scope name (like php-fpm.service or "
            "worker@2.service): only those units have processes to watch"
        )
    try:
        seconds = parse_duration(req.for_)
    except ValueError as exc:
        raise UsageError(f"--for: {exc}") from None
    name = req.owner or owner_name_for(req.unit)
    if not _NAME.fullmatch(name):
        raise UsageError(f"--owner {name!r}: use letters, digits, '_', '-', '.', '@'")
    return req.unit, seconds, name


def _watch(unit: str, seconds: float, *, quiet: bool) -> Watch:
    """What the unit's processes used over `seconds`, with what could not be seen said."""
    progress = sys.stderr if sys.stderr.isatty() and not quiet else None
    watcher = _Watcher(unit)
    watch, ended = watcher.watch(seconds, progress)
    notes = [ended] if ended else []
    if watcher.unreadable:
        notes.append(
            f"could not read /proc/PID/maps of {len(watcher.unreadable)} process(es): "
            "permission denied; run learn as root"
        )
    if not knows(watcher.machine, SEMOP):
        notes.append(f"on {watcher.machine} tasks blocked in semop are not recognised")
    for note in notes:
        print(f"ipcjanitor: {note}", file=sys.stderr)
    if watcher.posix.unreadable:
        print(
            f"ipcjanitor: could not read the maps or fds of {watcher.posix.unreadable} "
            "process(es) outside the unit: a holder there of a /dev/shm file would be missed; "
            "run learn as root",
            file=sys.stderr,
        )
    if not watch.sightings and not watch.posix:
        raise IpcJanitorError(
            f"watched {unit} for {watch.seconds:.0f} s ({watch.samples} samples, "
            f"{len(watch.processes)} processes): they used no System V or POSIX IPC object "
            "(/dev/shm, /dev/mqueue), so there "
            "is nothing to propose (watch longer, or while it serves requests: --for 10m)"
        )
    return watch


def _write_dir(policy: str | None) -> Path:
    """Where --write writes: /etc/ipcjanitor/policy.d, or the --policy directory."""
    explicit = policy or os.environ.get("IPCJANITOR_POLICY") or None
    if explicit is None:
        return POLICY_DIR
    if Path(explicit).is_dir():
        return Path(explicit)
    raise UsageError(
        f"--write with the policy file {explicit}: learn writes a new file into a policy "
        "directory; pass a directory (or none) to --policy"
    )


def _refuse_existing(name: str, existing: Policy, directory: Path) -> None:
    owner = existing.owner(name)
    if owner is not None:
        raise IpcJanitorError(
            f"the policy already has an owner {name!r} ({owner.source}): learn never replaces "
            "one; pick another name with --owner, or edit that file"
        )
    path = directory / f"{name}.toml"
    if os.path.lexists(path):
        raise IpcJanitorError(
            f"{path} exists: learn never overwrites; run it without --write and merge by hand, "
            "or pick another name with --owner"
        )


def _check(text: str, target: Path, existing: Policy, name: str) -> None:
    """The proposal must pass `policy check`, alone and beside the existing owners; what a
    root run would skip (an ftok path another user controls) is said on stderr."""
    parsed = parse_policy_text(text, target, strict=os.geteuid() == 0)
    owners = parsed.owners
    for warning in parsed.warnings:
        print(f"ipcjanitor: warning: {warning}", file=sys.stderr)
    others = [o for o in existing.owners if o.name not in owners and o.name != name]
    clashes = check_overlaps([*others, *owners.values()])
    if clashes:  # propose() leaves claimed keys out: a clash here is a bug
        raise AssertionError(f"learn proposed a clashing table: {clashes[0]}")


# -- writing -----------------------------------------------------------------------------------


def write_policy(text: str, directory: Path, name: str) -> Path:
    """Create directory/NAME.toml with `text`, never overwriting, never following a link
    another user could have made.

    The directory is reached as the policy loader reaches it (chase.open_directory, strict
    for root: every component root's, not writable by group or others but a sticky one
    above the last; root's symlinks followed), missing directories made 0755. The file
    appears whole or not at all (chase.write_file_at: hard-linked to its name, which fails
    if it exists).
    """
    final = f"{name}.toml"
    if not directory.is_absolute():
        directory = Path.cwd() / directory
    try:
        fd, _ = chase.open_directory(
            str(directory), strict=os.geteuid() == 0, others_above=False, create_mode=0o755
        )
    except chase.Refused as exc:
        if exc.code in (errno.EACCES, errno.EPERM):
            raise NotPermittedError(f"{exc}; run learn --write as root") from None
        raise IpcJanitorError(f"{exc}; learn --write wrote nothing") from None
    try:
        chase.write_file_at(fd, final, text.encode(), POLICY_MODE, replace=False)
    except FileExistsError:
        raise IpcJanitorError(
            f"{directory / final} exists: learn never overwrites; run it without "
            "--write and merge by hand, or pick another name with --owner"
        ) from None
    except PermissionError as exc:
        raise NotPermittedError(
            f"{directory / final}: {exc.strerror}; run learn --write as root"
        ) from None
    finally:
        os.close(fd)
    return directory / final
